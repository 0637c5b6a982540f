/* walq native core: framing, checksums, batched writes, fdatasync and the
 * recovery scan.  Policy (when to roll, sync, recover) lives in Python
 * (walq/log/); this file only moves and checks bytes.  Layout: docs/format.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#define XXH_INLINE_ALL
#include "vendor/xxhash.h"

#include "walq_api.h"

/* Record header: checksum u64 | length u32 | type u8 | lag u24 | seq u64,
 * little-endian; payload; zero padding to 8.  `lag` is how many records the
 * log's durable point trailed this one when it was written (saturating):
 * recovery uses it to tell damage to synced data from an unsynced tail. */

#define WALQ_LAG_MAX 0xFFFFFFu

static inline void put32(char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(char *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint32_t get32(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get64(const char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "walq's on-disk format is little-endian; add byte swaps for this target"
#endif

uint64_t walq_hash(const char *data, size_t len, uint64_t seed)
{
    return XXH3_64bits_withSeed(data, len, seed);
}

uint64_t walq_frame_size(uint32_t len)
{
    return ((uint64_t)WALQ_REC_HEADER_SIZE + len + WALQ_ALIGN - 1) & ~(uint64_t)(WALQ_ALIGN - 1);
}

static void put_header(char *h, uint32_t len, uint8_t type, uint64_t seq, uint64_t durable)
{
    uint64_t lag = seq > durable ? seq - durable : 0;
    if (lag > WALQ_LAG_MAX)
        lag = WALQ_LAG_MAX;
    put32(h + 8, len);
    h[12] = (char)type;
    h[13] = (char)(lag & 0xFF);
    h[14] = (char)((lag >> 8) & 0xFF);
    h[15] = (char)((lag >> 16) & 0xFF);
    put64(h + 16, seq);
}

static uint64_t header_lag(const char *h)
{
    return (uint64_t)(uint8_t)h[13] | (uint64_t)(uint8_t)h[14] << 8 | (uint64_t)(uint8_t)h[15] << 16;
}

/* The checksum covers header bytes 8..24 and the payload, seeded with the
 * segment salt, so bytes from another segment or a recycled file never
 * validate here. */
static uint64_t frame_checksum(const char *h, const char *payload, uint32_t len, uint64_t salt)
{
    if (payload == h + WALQ_REC_HEADER_SIZE)
        return XXH3_64bits_withSeed(h + 8, (size_t)16 + len, salt);
    /* A large payload is written from the caller's buffer, away from its
     * header, so the hash streams over the two pieces.  The state lives on
     * the stack: XXH3_INITSTATE first, or a reset whose seed equals stale
     * stack bytes skips deriving the secret and hashes with garbage (only
     * for records over WALQ_INLINE_MAX; the cost, 192 bytes of secret, is
     * nothing beside the payload). */
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset_withSeed(&st, salt);
    XXH3_64bits_update(&st, h + 8, 16);
    XXH3_64bits_update(&st, payload, len);
    return XXH3_64bits_digest(&st);
}

uint64_t walq_frame(char *out, uint64_t salt, uint64_t seq0, size_t n,
                    const char *data, const uint32_t *lens,
                    const uint8_t *types, uint8_t type)
{
    char *p = out;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = lens[i];
        uint64_t fs = walq_frame_size(len);
        put_header(p, len, types ? types[i] : type, seq0 + i, seq0 + i);
        memcpy(p + WALQ_REC_HEADER_SIZE, data, len);
        memset(p + WALQ_REC_HEADER_SIZE + len, 0, fs - WALQ_REC_HEADER_SIZE - len);
        put64(p, frame_checksum(p, p + WALQ_REC_HEADER_SIZE, len, salt));
        data += len;
        p += fs;
    }
    return (uint64_t)(p - out);
}

static int pwrite_all(int fd, struct iovec *iov, int cnt, uint64_t off)
{
    while (cnt > 0) {
        int batch = cnt > IOV_MAX ? IOV_MAX : cnt;
        ssize_t w = pwritev(fd, iov, batch, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (uint64_t)w;
        /* A short write: advance through the iovecs already written. */
        while (cnt > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0 && w > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

int walq_zero(int fd, uint64_t off, uint64_t len)
{
    static const char zeros[65536];
    while (len > 0) {
        size_t chunk = len > sizeof zeros ? sizeof zeros : (size_t)len;
        ssize_t w = pwrite(fd, zeros, chunk, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (uint64_t)w;
        len -= (uint64_t)w;
    }
    return 0;
}

/* Frames small payloads into one scratch buffer (a copy is cheaper than an
 * iovec for them) and points iovecs at large payloads in place. */
static int write_batch(int fd, uint64_t off, uint64_t salt, uint64_t seq0, uint64_t durable,
                       size_t n, const char *data, const uint32_t *lens,
                       const uint8_t *types, uint8_t type)
{
    uint64_t scratch_size = 0;
    size_t niov = 1;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] <= WALQ_INLINE_MAX) {
            scratch_size += walq_frame_size(lens[i]);
        } else {
            scratch_size += 2 * WALQ_REC_HEADER_SIZE;
            niov += 3;
        }
    }
    char stack_buf[8192];
    struct iovec stack_iov[64];
    char *scratch = scratch_size <= sizeof stack_buf ? stack_buf : malloc(scratch_size);
    struct iovec *iov = niov <= 64 ? stack_iov : malloc(niov * sizeof *iov);
    int rc = 0;
    if (!scratch || !iov) {
        rc = -ENOMEM;
        goto out;
    }
    char *p = scratch, *run = scratch;
    int cnt = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = lens[i];
        uint64_t fs = walq_frame_size(len);
        uint8_t t = types ? types[i] : type;
        put_header(p, len, t, seq0 + i, durable);
        if (len <= WALQ_INLINE_MAX) {
            memcpy(p + WALQ_REC_HEADER_SIZE, data, len);
            memset(p + WALQ_REC_HEADER_SIZE + len, 0, fs - WALQ_REC_HEADER_SIZE - len);
            put64(p, frame_checksum(p, p + WALQ_REC_HEADER_SIZE, len, salt));
            p += fs;
        } else {
            size_t pad = (size_t)(fs - WALQ_REC_HEADER_SIZE - len);
            put64(p, frame_checksum(p, data, len, salt));
            p += WALQ_REC_HEADER_SIZE;
            iov[cnt].iov_base = run;
            iov[cnt].iov_len = (size_t)(p - run);
            cnt++;
            iov[cnt].iov_base = (void *)data;
            iov[cnt].iov_len = len;
            cnt++;
            memset(p, 0, pad);
            run = p;
            p += pad;
        }
        data += len;
    }
    if (p > run) {
        iov[cnt].iov_base = run;
        iov[cnt].iov_len = (size_t)(p - run);
        cnt++;
    }
    rc = pwrite_all(fd, iov, cnt, off);
out:
    if (scratch && scratch != stack_buf)
        free(scratch);
    if (iov && iov != stack_iov)
        free(iov);
    return rc;
}

uint64_t walq_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void walq_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

void walq_store_max(uint64_t *p, uint64_t v)
{
    uint64_t cur = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        ;
}

uint64_t walq_sync_target(struct walq_ctl *ctl, int yields)
{
    uint64_t target = walq_load(&ctl->end_seq);
    for (int i = 0; i < yields; i++) {
        sched_yield();
        uint64_t moved = walq_load(&ctl->end_seq);
        if (moved == target)
            break;
        target = moved;
    }
    return target;
}

int walq_runway_low(struct walq_ctl *ctl, uint64_t half)
{
    uint64_t alloc = walq_load(&ctl->alloc_off);
    return alloc - walq_load(&ctl->end_off) < half && alloc < walq_load(&ctl->seg_cap);
}

int walq_cas(uint64_t *p, uint64_t expect, uint64_t v)
{
    return __atomic_compare_exchange_n(p, &expect, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

uint32_t walq_notify_word(struct walq_ctl *ctl) { return __atomic_load_n(&ctl->notify, __ATOMIC_ACQUIRE); }

void walq_publish(struct walq_ctl *ctl)
{
    __atomic_add_fetch(&ctl->notify, 1, __ATOMIC_ACQ_REL);
#ifdef __linux__
    if (__atomic_load_n(&ctl->waiters, __ATOMIC_ACQUIRE))
        syscall(SYS_futex, &ctl->notify, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
}

int walq_wait(struct walq_ctl *ctl, uint32_t seen, int timeout_ms)
{
#ifdef __linux__
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    __atomic_add_fetch(&ctl->waiters, 1, __ATOMIC_ACQ_REL);
    int rc = 0;
    if (__atomic_load_n(&ctl->notify, __ATOMIC_ACQUIRE) == seen)
        rc = (int)syscall(SYS_futex, &ctl->notify, FUTEX_WAIT, seen, &ts, NULL, 0);
    __atomic_sub_fetch(&ctl->waiters, 1, __ATOMIC_ACQ_REL);
    return rc < 0 ? -errno : 0;
#else
    /* Without futexes a short sleep bounds the wake-up latency. */
    struct timespec ts = {0, 1000000L};
    int waited = 0;
    while (__atomic_load_n(&ctl->notify, __ATOMIC_ACQUIRE) == seen && waited < timeout_ms) {
        nanosleep(&ts, NULL);
        waited++;
    }
    return 0;
#endif
}

uint32_t walq_synced_word(struct walq_ctl *ctl) { return __atomic_load_n(&ctl->synced, __ATOMIC_SEQ_CST); }

/* Called after the sync lock is released, never before: a waiter woken by
 * the bump must be able to win walq_try_lock at once, or it would wait on
 * the new value of `synced` with nobody left to bump it.
 * Sequentially consistent with walq_wait_durable (the increment of `synced`
 * here against its load there, the load of `sync_waiters` here against its
 * increment there): one side always sees the other, so a waiter either skips
 * the futex or is woken. */
void walq_durable_publish(struct walq_ctl *ctl, uint64_t durable)
{
    if (durable)
        walq_store_max(&ctl->durable_seq, durable);
    __atomic_add_fetch(&ctl->synced, 1, __ATOMIC_SEQ_CST);
#ifdef __linux__
    if (__atomic_load_n(&ctl->sync_waiters, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, &ctl->synced, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
}

int walq_wait_durable(struct walq_ctl *ctl, uint64_t upto, uint32_t seen, int timeout_ms)
{
#ifdef __linux__
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    __atomic_add_fetch(&ctl->sync_waiters, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ctl->durable_seq, __ATOMIC_SEQ_CST) < upto
        && __atomic_load_n(&ctl->synced, __ATOMIC_SEQ_CST) == seen)
        syscall(SYS_futex, &ctl->synced, FUTEX_WAIT, seen, &ts, NULL, 0);
    __atomic_sub_fetch(&ctl->sync_waiters, 1, __ATOMIC_SEQ_CST);
#else
    struct timespec ts = {0, 1000000L};
    for (int waited = 0; waited < timeout_ms; waited++) {
        if (walq_load(&ctl->durable_seq) >= upto || __atomic_load_n(&ctl->synced, __ATOMIC_ACQUIRE) != seen)
            break;
        nanosleep(&ts, NULL);
    }
#endif
    return walq_load(&ctl->durable_seq) >= upto;
}

static int claim_sync(struct walq_syncer *s)
{
    uint32_t free_ = 0;
    return __atomic_compare_exchange_n(&s->held, &free_, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* After `held` drops to 0: a closing thread may be blocked in
 * walq_syncer_seize.  (Sequentially consistent with it: either it sees
 * held == 0, or this sees closed and wakes it.) */
static void wake_seizer(struct walq_syncer *s)
{
#ifdef __linux__
    if (__atomic_load_n(&s->closed, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, &s->held, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)s;
#endif
}

static void release_claim(struct walq_syncer *s)
{
    __atomic_store_n(&s->held, 0, __ATOMIC_SEQ_CST);
    wake_seizer(s);
    if (__atomic_exchange_n(&s->wanted, 0, __ATOMIC_SEQ_CST))
        walq_durable_publish(s->ctl, 0);
}

int walq_await_durable(struct walq_syncer *s, uint64_t upto, int timeout_ms)
{
    struct walq_ctl *ctl = s->ctl;
    for (;;) {
        /* `synced` is read before anything is tried: whatever happens after
         * this point bumps it, so the wait below cannot miss it. */
        uint32_t seen = walq_synced_word(ctl);
        if (walq_load(&ctl->durable_seq) >= upto)
            return WALQ_DURABLE;
        if (walq_load(&ctl->poisoned))
            return WALQ_POISONED;
        if (__atomic_load_n(&s->closed, __ATOMIC_SEQ_CST))
            return WALQ_CLOSED;
        int claimed = claim_sync(s);
        if (!claimed) {
            __atomic_store_n(&s->wanted, 1, __ATOMIC_SEQ_CST);
            claimed = claim_sync(s);
        }
        if (claimed) {
            /* close() takes the claim before it closes sync_fd. */
            if (__atomic_load_n(&s->closed, __ATOMIC_SEQ_CST)) {
                release_claim(s);
                return WALQ_CLOSED;
            }
            int rc = walq_try_lock(s->sync_fd);
            if (rc == 0)
                return WALQ_SYNC;
            release_claim(s);
            if (rc < 0)
                return rc;
            /* rc == 1: another process syncs, and publishes when done. */
        }
        walq_wait_durable(ctl, upto, seen, timeout_ms);
    }
}

void walq_sync_done(struct walq_syncer *s, uint64_t target)
{
    /* Release first, then publish: a woken waiter must be able to win the
     * lock at once (see walq_durable_publish).  The publish also serves any
     * thread that raised `wanted`. */
    walq_unlock(s->sync_fd);
    __atomic_store_n(&s->wanted, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&s->held, 0, __ATOMIC_SEQ_CST);
    wake_seizer(s);
    walq_durable_publish(s->ctl, target);
}

int walq_make_durable(struct walq_syncer *s, int fd, uint64_t seg_base, uint64_t upto,
                      int timeout_ms, int yields)
{
    struct walq_ctl *ctl = s->ctl;
    int synced = 0;
    for (;;) {
        int rc = walq_await_durable(s, upto, timeout_ms);
        if (rc == WALQ_DURABLE)
            return synced ? WALQ_SYNCED : WALQ_DURABLE;
        if (rc != WALQ_SYNC || fd < 0)
            return rc;
        /* lock.sync held.  The checks of Log._sync_locked, in its order:
         * the end to sync to is read before the segment it lies in. */
        uint64_t done = walq_load(&ctl->durable_seq);
        if (walq_load(&ctl->poisoned) || done >= upto)
            return WALQ_SYNC; /* Python raises, or finds nothing to do */
        uint64_t target = walq_sync_target(ctl, yields);
        uint64_t active = walq_load(&ctl->seg_base);
        if (active != seg_base || done < active || active > walq_load(&ctl->dir_synced_base))
            return WALQ_SYNC; /* several segments, or a new one's directory entry */
        rc = walq_fdatasync(fd);
        if (rc < 0) {
            /* Poisoned before the lock goes: the next holder must not
             * fdatasync again and believe what it is told. */
            walq_store(&ctl->poisoned, 1);
            s->sync_errno = -rc;
            walq_sync_done(s, 0);
            return WALQ_SYNC_FAILED;
        }
        s->syncs++;
        walq_sync_done(s, target);
        synced = 1;
        if (target >= upto)
            return WALQ_SYNCED;
    }
}

void walq_syncer_seize(struct walq_syncer *s)
{
    __atomic_store_n(&s->closed, 1, __ATOMIC_SEQ_CST);
    while (!claim_sync(s)) {
#ifdef __linux__
        /* Returns at once if `held` already changed from 1. */
        syscall(SYS_futex, &s->held, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
#else
        struct timespec ts = {0, 100000L};
        nanosleep(&ts, NULL);
#endif
    }
}

int walq_append_locked(struct walq_ctl *ctl, int fd, uint64_t seg_base,
                       size_t n, const char *data, const uint32_t *lens,
                       const uint8_t *types, uint8_t type, uint64_t *seq0)
{
    /* A process killed in the middle of a segment roll left the block half
     * updated: Python re-derives it from the segment files. */
    if (walq_load(&ctl->busy))
        return WALQ_EREPAIR;
    if (walq_load(&ctl->seg_base) != seg_base)
        return WALQ_ESTALE;
    uint64_t end = walq_load(&ctl->end_off);
    uint64_t seq = walq_load(&ctl->end_seq);
    uint64_t reserved = walq_load(&ctl->reserve_off);
    if (reserved != end || walq_load(&ctl->reserve_seq) != seq) {
        if (walq_load(&ctl->reserve_seq) == seq) {
            /* Killed between publishing end_seq and end_off: the batch was
             * whole and readers may have seen it; finish the publish. */
            end = reserved;
            walq_store(&ctl->end_off, end);
        } else {
            /* Killed before publishing: clear the partial write so that no
             * stale frame can follow what we write now. */
            int rc = walq_zero(fd, end, reserved > end ? reserved - end : 0);
            if (rc)
                return rc;
            walq_store(&ctl->reserve_off, end);
            walq_store(&ctl->reserve_seq, seq);
        }
    }
    uint64_t size = 0;
    for (size_t i = 0; i < n; i++)
        size += walq_frame_size(lens[i]);
    if (end + size > walq_load(&ctl->seg_cap))
        return WALQ_EFULL;
    /* Writes land only in preallocated blocks: an fdatasync then has no
     * block allocation to journal (see docs/format.md, "Preallocation"). */
    if (end + size > walq_load(&ctl->alloc_off))
        return WALQ_EALLOC;
    walq_store(&ctl->reserve_seq, seq + n);
    walq_store(&ctl->reserve_off, end + size);
    int rc = write_batch(fd, end, walq_load(&ctl->salt), seq, walq_load(&ctl->durable_seq),
                         n, data, lens, types, type);
    if (rc)
        return rc;
    /* Invariant: end_seq moves only after the bytes are in the OS, so a
     * reader (which parses by count up to end_seq) never reads past written
     * data; end_off follows, and a writer that finds the two out of step
     * repairs them above. */
    walq_store(&ctl->end_seq, seq + n);
    walq_store(&ctl->end_off, end + size);
    walq_publish(ctl);
    *seq0 = seq;
    return WALQ_OK;
}

int walq_lock(int fd)
{
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

int walq_try_lock(int fd)
{
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            return 1;
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

int walq_unlock(int fd)
{
    return flock(fd, LOCK_UN) < 0 ? -errno : 0;
}

int walq_append(struct walq_ctl *ctl, int lockfd, int fd, uint64_t seg_base,
                size_t n, const char *data, const uint32_t *lens,
                const uint8_t *types, uint8_t type, uint64_t *seq0)
{
    int rc = walq_lock(lockfd);
    if (rc)
        return rc;
    rc = walq_append_locked(ctl, fd, seg_base, n, data, lens, types, type, seq0);
    walq_unlock(lockfd);
    return rc;
}

static int64_t append_one(struct walq_writer *w, const char *data, size_t len, int type,
                          int locked)
{
    if (w->fd < 0 || type < 1 || type > 255 || len > w->max_record)
        return -1;
    if (walq_load(&w->ctl->poisoned))
        return -1;
    uint32_t len32 = (uint32_t)len;
    uint64_t seq;
    int rc = locked
        ? walq_append_locked(w->ctl, w->fd, w->seg_base, 1, data, &len32, NULL, (uint8_t)type, &seq)
        : walq_append(w->ctl, w->lockfd, w->fd, w->seg_base, 1, data, &len32, NULL, (uint8_t)type, &seq);
    return rc == WALQ_OK ? (int64_t)seq : -1;
}

int64_t walq_append_one(struct walq_writer *w, const char *data, size_t len, int type)
{
    return append_one(w, data, len, type, 0);
}

int64_t walq_append_one_locked(struct walq_writer *w, const char *data, size_t len, int type)
{
    return append_one(w, data, len, type, 1);
}

int walq_writer_append(struct walq_writer *w, size_t n, const char *data,
                       const uint32_t *lens, const uint8_t *types, uint8_t type,
                       uint64_t *seq0)
{
    if (w->fd < 0)
        return WALQ_ESTALE;
    return walq_append(w->ctl, w->lockfd, w->fd, w->seg_base, n, data, lens, types, type, seq0);
}

int walq_fdatasync(int fd)
{
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int frame_ok(const char *base, uint64_t size, uint64_t off, uint64_t salt,
                    uint64_t seq, uint32_t *len_out, uint8_t *type_out)
{
    if (off > size || size - off < WALQ_REC_HEADER_SIZE)
        return 0;
    const char *h = base + off;
    uint32_t len = get32(h + 8);
    uint8_t type = (uint8_t)h[12];
    if (type == 0 || get64(h + 16) != seq)
        return 0;
    if (walq_frame_size(len) > size - off)
        return 0;
    if (frame_checksum(h, h + WALQ_REC_HEADER_SIZE, len, salt) != get64(h))
        return 0;
    /* The checksum does not cover the padding, and the grammar says it is
     * zeros: check it, or a flipped padding byte would pass unnoticed. */
    for (const char *p = h + WALQ_REC_HEADER_SIZE + len; p < h + walq_frame_size(len); p++)
        if (*p)
            return 0;
    *len_out = len;
    *type_out = type;
    return 1;
}

static int is_zero(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int walq_scan(const char *base, uint64_t size, uint64_t off, uint64_t salt,
              uint64_t seq, uint64_t max, uint64_t *offs, uint32_t *lens,
              uint8_t *types, walq_scan_t *out)
{
    uint64_t count = 0;
    int status = WALQ_SCAN_LIMIT;
    while (count < max) {
        if (off > size || size - off < WALQ_REC_HEADER_SIZE) {
            status = WALQ_SCAN_EOF;
            break;
        }
        if (is_zero(base + off, WALQ_REC_HEADER_SIZE)) {
            status = WALQ_SCAN_END;
            break;
        }
        uint32_t len;
        uint8_t type;
        if (!frame_ok(base, size, off, salt, seq, &len, &type)) {
            status = WALQ_SCAN_BAD;
            break;
        }
        if (offs)
            offs[count] = off;
        if (lens)
            lens[count] = len;
        if (types)
            types[count] = type;
        off += walq_frame_size(len);
        seq++;
        count++;
    }
    out->next_off = off;
    out->next_seq = seq;
    out->count = count;
    out->status = status;
    return status;
}

int walq_scan_run(const char *base, uint64_t size, uint64_t off, uint64_t salt,
                  uint64_t seq, uint64_t max, uint64_t *offs, uint64_t *payload_offs,
                  uint32_t *lens, uint8_t *types, walq_scan_t *out)
{
    int status = walq_scan(base, size, off, salt, seq, max, offs, lens, types, out);
    for (uint64_t i = 0; i < out->count; i++)
        payload_offs[i] = offs[i] + WALQ_REC_HEADER_SIZE;
    return status;
}

uint64_t walq_find_valid(const char *base, uint64_t size, uint64_t off,
                         uint64_t salt, uint64_t min_seq)
{
    off = (off + WALQ_ALIGN - 1) & ~(uint64_t)(WALQ_ALIGN - 1);
    for (; size - off >= WALQ_REC_HEADER_SIZE && off < size; off += WALQ_ALIGN) {
        const char *h = base + off;
        uint64_t seq = get64(h + 16);
        /* Cheap filters first: most positions are zeros or payload bytes. */
        if (seq < min_seq || seq - min_seq > ((uint64_t)1 << 40) || h[12] == 0)
            continue;
        uint32_t len;
        uint8_t type;
        if (frame_ok(base, size, off, salt, seq, &len, &type))
            return off;
    }
    return UINT64_MAX;
}

int64_t walq_check(const char *base, uint64_t size, uint64_t off,
                   uint64_t salt, uint64_t seq, uint8_t *type)
{
    uint32_t len;
    if (!frame_ok(base, size, off, salt, seq, &len, type))
        return -1;
    return (int64_t)len;
}

uint64_t walq_durable_after(const char *base, uint64_t size, uint64_t off,
                            uint64_t salt, uint64_t min_seq, uint64_t *found)
{
    uint64_t best = 0, n = 0;
    for (;;) {
        uint64_t at = walq_find_valid(base, size, off, salt, min_seq);
        if (at == UINT64_MAX)
            break;
        const char *h = base + at;
        uint64_t seq = get64(h + 16), lag = header_lag(h);
        uint64_t durable = seq > lag ? seq - lag : 0;
        if (lag == WALQ_LAG_MAX)
            durable = 0; /* saturated: only "at least this far behind" is known */
        if (durable > best)
            best = durable;
        n++;
        off = at + walq_frame_size(get32(h + 8));
    }
    *found = n;
    return best;
}

uint64_t walq_check_run(const char *base, uint64_t size, uint64_t salt,
                        const uint64_t *offs, uint64_t seq0, uint64_t n,
                        uint32_t *lens, uint8_t *types)
{
    for (uint64_t i = 0; i < n; i++) {
        if (!frame_ok(base, size, offs[i], salt, seq0 + i, &lens[i], &types[i]))
            return i;
    }
    return n;
}

uint64_t walq_frames_run(const char *base, uint64_t size, uint64_t salt,
                         const uint64_t *offs, uint64_t seq0, uint64_t n,
                         uint64_t *payload_offs, uint32_t *lens, uint8_t *types)
{
    uint64_t ok = walq_check_run(base, size, salt, offs, seq0, n, lens, types);
    for (uint64_t i = 0; i < ok; i++)
        payload_offs[i] = offs[i] + WALQ_REC_HEADER_SIZE;
    return ok;
}

int64_t walq_frames_at(const char *base, uint64_t size, uint64_t salt,
                       const uint64_t *offs, uint64_t seg_base, uint64_t count,
                       uint64_t lo, const uint64_t *seqs, uint64_t n,
                       uint64_t *payload_offs, uint32_t *lens)
{
    if (lo < seg_base)
        lo = seg_base;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t seq = seqs[i];
        if (seq < lo || seq - seg_base >= count)
            return (int64_t)i;
        uint64_t off = offs[seq - seg_base];
        uint8_t type;
        if (!frame_ok(base, size, off, salt, seq, &lens[i], &type))
            return -(int64_t)i - 1;
        payload_offs[i] = off + WALQ_REC_HEADER_SIZE;
    }
    return (int64_t)n;
}

int64_t walq_frame_info(const char *base, uint64_t size, uint64_t off,
                        uint64_t salt, uint64_t seq)
{
    uint32_t len;
    uint8_t type;
    if (!frame_ok(base, size, off, salt, seq, &len, &type))
        return -1;
    return (int64_t)type << 32 | len;
}
