/* The index of a standard queue, in C: the state walq/queue/index.py's
 * Index keeps for fifo=False, with the same rules (that file's docstrings
 * say why each rule is so; walq/queue/native_index.py wraps this one).
 * Included by the cffi source after queue_records.c.
 *
 * Why C: every consumer replays every other process's leases and deletes
 * under the queue's append lock, and in Python each cost about a
 * microsecond of dict and heap work per message - most of what a 4+4
 * consumer spent (bench/RESULTS-queue.md).
 *
 * Layout:
 *   live messages   open addressing, linear probing, keyed by sequence
 *                   (runs of 8 consecutive sequences share a Fibonacci-
 *                   hashed home, mapped onto any capacity; qx_slot),
 *                   deleted by backward shift, so no tombstones;
 *   visible         min-heap of original sequences, invalidated lazily
 *                   (an entry counts while its message is VISIBLE);
 *   leases, delays  min-heaps of (time, seq, lease seq), also lazy;
 *   retention       the sends in log order with their send times, plus a
 *                   heap of late arrivals (Index.ret_late);
 *   redirects       old sequence -> the copy compaction wrote (CARRY).
 *                   Python keeps chains compressed and drops a message's
 *                   aliases when it goes; here chains are followed and
 *                   stale links pruned in bulk, which answers alike: a
 *                   chain that ends at a dead message resolves to itself.
 *
 * Not thread-safe: cffi calls these without the GIL, so the caller (the
 * queue's _mu) serializes every call on one index.
 */

#include <sys/mman.h>

#define QX_EMPTY 0xFF
#define QX_LOAD_NUM 7          /* grow past 70% full */
#define QX_LOAD_DEN 10
#define QX_RET_SLACK 1.0       /* Index.RET_SLACK_S */
#define QX_RUN 8               /* consecutive sequences placed together (qx_slot) */
#define QX_LEASE 2             /* the LEASE record type (records.py) */
#define QX_DELETE 4            /* the DELETE record type */
#define QX_SEND 1              /* the SEND record type */

struct qx_msg {
    uint64_t seq;
    uint64_t lease_seq;   /* while INFLIGHT */
    double deadline;      /* while INFLIGHT */
    double first;         /* first received at, if has_recv */
    uint64_t orig;        /* its place in line: == seq unless carried */
    uint32_t count;       /* receives, if has_recv */
    uint32_t prior;       /* receives carried from another queue */
    uint8_t state;        /* WALQ_QX_VISIBLE..INFLIGHT, or QX_EMPTY */
    uint8_t has_recv;
};

struct qx_timed {
    double t;
    uint64_t m;
    uint64_t l;
};

struct qx_link {
    uint64_t from;
    uint64_t to;
    uint8_t used;
};

struct walq_qx {
    struct walq_qx_stats st;
    struct qx_msg *slots;
    uint64_t cap;                     /* any size: grown by half */
    uint64_t *vis;                    /* heap */
    size_t nvis, capvis;
    struct qx_timed *leases, *delayed, *late;   /* heaps */
    size_t nleases, capleases, ndelayed, capdelayed, nlate, caplate;
    int64_t *ret_seq;
    double *ret_at;
    size_t nret, capret, ret_head;
    struct qx_link *links;
    uint64_t lmask;
    int lshift;
    size_t nlinks, links_gc_at;
    size_t links_gc_floor;            /* dead links tolerated before a prune */
    size_t norig;                     /* live messages with orig != seq */
    size_t nprior, nrecv;
};

/* -- growable arrays ---------------------------------------------------- */

static int qx_reserve(void **p, size_t *cap, size_t want, size_t size)
{
    if (want <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < want)
        n *= 2;
    void *q = realloc(*p, n * size);
    if (!q)
        return -2;
    *p = q;
    *cap = n;
    return 0;
}

/* -- the table of live messages ---------------------------------------- */

static inline uint64_t qx_home(uint64_t seq, int shift)
{
    return (seq * 0x9E3779B97F4A7C15ULL) >> shift;
}

/* The table's capacity is any number, not a power of two (so it grows by
 * half, not double: a million messages take ~40 MB less): the hash is
 * mapped onto [0, cap) by a multiply (Lemire's "fastrange"). */
static inline uint64_t qx_slot(const struct walq_qx *x, uint64_t seq)
{
    /* Runs of QX_RUN consecutive sequences share a hashed home and sit
     * side by side: sends arrive in sequence order, and a fully random
     * slot each cost a cache and TLB miss (~3x slower inserts). */
    uint64_t h = (seq / QX_RUN) * 0x9E3779B97F4A7C15ULL;
#ifdef __SIZEOF_INT128__
    uint64_t i = (uint64_t)(((unsigned __int128)h * x->cap) >> 64) + seq % QX_RUN;
#else
    uint64_t i = (h >> 32) % x->cap + seq % QX_RUN;  /* compilers without 128-bit integers */
#endif
    return i < x->cap ? i : i - x->cap;
}

static inline uint64_t qx_next(const struct walq_qx *x, uint64_t i)
{
    return i + 1 == x->cap ? 0 : i + 1;
}

static struct qx_msg *qx_find(struct walq_qx *x, uint64_t seq)
{
    uint64_t i = qx_slot(x, seq);
    for (;;) {
        struct qx_msg *s = &x->slots[i];
        if (s->state == QX_EMPTY)
            return NULL;
        if (s->seq == seq)
            return s;
        i = qx_next(x, i);
    }
}

/* Big tables ask for transparent huge pages: a lookup lands anywhere in
 * the table, and with 4 KiB pages each one also missed the TLB (costly in
 * a VM, where a miss walks two page tables), and growing touched a fresh
 * page every 70 slots. */
#define QX_HUGE (2u << 20)

static void *qx_alloc_big(size_t bytes)
{
    if (bytes < QX_HUGE)
        return malloc(bytes);
    void *p = NULL;
    if (posix_memalign(&p, QX_HUGE, bytes) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);  /* advice only: failure changes nothing */
#endif
    return p;
}

static int qx_alloc_slots(struct walq_qx *x, uint64_t cap)
{
    struct qx_msg *s = qx_alloc_big(cap * sizeof *s);
    if (!s)
        return -2;
    for (uint64_t i = 0; i < cap; i++)
        s[i].state = QX_EMPTY;
    x->slots = s;
    x->cap = cap;
    return 0;
}

static int qx_rehash(struct walq_qx *x, uint64_t cap)
{
    struct qx_msg *old = x->slots;
    uint64_t oldcap = x->cap;
    if (qx_alloc_slots(x, cap) < 0) {
        x->slots = old;
        x->cap = oldcap;
        return -2;
    }
    for (uint64_t i = 0; i < oldcap; i++) {
        if (old[i].state == QX_EMPTY)
            continue;
        uint64_t j = qx_slot(x, old[i].seq);
        while (x->slots[j].state != QX_EMPTY)
            j = qx_next(x, j);
        x->slots[j] = old[i];
    }
    free(old);
    return 0;
}

/* A capacity that holds n messages under the load limit. */
static uint64_t qx_cap_for(uint64_t n)
{
    uint64_t cap = 64;
    while (cap * QX_LOAD_NUM < (n + 1) * QX_LOAD_DEN)
        cap += cap / 2;
    return cap;
}

static int qx_bits_for(uint64_t n)
{
    int bits = 6;
    while ((1ULL << bits) * QX_LOAD_NUM < (n + 1) * QX_LOAD_DEN)
        bits++;
    return bits;
}

/* A fresh slot for `seq` (not live); NULL when memory runs out. */
static struct qx_msg *qx_insert(struct walq_qx *x, uint64_t seq)
{
    if ((x->st.live + 1) * QX_LOAD_DEN > x->cap * QX_LOAD_NUM
            && qx_rehash(x, x->cap + x->cap / 2) < 0)
        return NULL;
    uint64_t i = qx_slot(x, seq);
    while (x->slots[i].state != QX_EMPTY)
        i = qx_next(x, i);
    struct qx_msg *s = &x->slots[i];
    memset(s, 0, sizeof *s);
    s->seq = seq;
    s->orig = seq;
    x->st.live++;
    return s;
}

/* Frees slot `s`, shifting later members of its probe run back. */
static void qx_erase(struct walq_qx *x, struct qx_msg *s)
{
    uint64_t i = (uint64_t)(s - x->slots), j = i;
    for (;;) {
        j = qx_next(x, j);
        if (x->slots[j].state == QX_EMPTY)
            break;
        uint64_t k = qx_slot(x, x->slots[j].seq);
        /* Slot j may move to i only if its home is not in (i, j]. */
        int stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            x->slots[i] = x->slots[j];
            i = j;
        }
    }
    x->slots[i].state = QX_EMPTY;
    x->st.live--;
}

/* -- heaps -------------------------------------------------------------- */

static inline int qx_before(const struct qx_timed *a, const struct qx_timed *b)
{
    if (a->t != b->t)
        return a->t < b->t;
    if (a->m != b->m)
        return a->m < b->m;
    return a->l < b->l;
}

static void qx_tsift_down(struct qx_timed *h, size_t n, size_t i)
{
    struct qx_timed v = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && qx_before(&h[c + 1], &h[c]))
            c++;
        if (!qx_before(&h[c], &v))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

static int qx_tpush(struct qx_timed **h, size_t *n, size_t *cap, double t, uint64_t m, uint64_t l)
{
    if (qx_reserve((void **)h, cap, *n + 1, sizeof **h) < 0)
        return -2;
    struct qx_timed v = {t, m, l};
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!qx_before(&v, &(*h)[p]))
            break;
        (*h)[i] = (*h)[p];
        i = p;
    }
    (*h)[i] = v;
    return 0;
}

static struct qx_timed qx_tpop(struct qx_timed *h, size_t *n)
{
    struct qx_timed top = h[0];
    if (--*n > 0) {
        h[0] = h[*n];
        qx_tsift_down(h, *n, 0);
    }
    return top;
}

static void qx_theapify(struct qx_timed *h, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        qx_tsift_down(h, n, i);
}

static void qx_vsift_down(uint64_t *h, size_t n, size_t i)
{
    uint64_t v = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h[c + 1] < h[c])
            c++;
        if (h[c] >= v)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

static int qx_vpush(struct walq_qx *x, uint64_t k)
{
    if (qx_reserve((void **)&x->vis, &x->capvis, x->nvis + 1, sizeof *x->vis) < 0)
        return -2;
    size_t i = x->nvis++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (x->vis[p] <= k)
            break;
        x->vis[i] = x->vis[p];
        i = p;
    }
    x->vis[i] = k;
    return 0;
}

static uint64_t qx_vpop(struct walq_qx *x)
{
    uint64_t top = x->vis[0];
    if (--x->nvis > 0) {
        x->vis[0] = x->vis[x->nvis];
        qx_vsift_down(x->vis, x->nvis, 0);
    }
    return top;
}

/* -- redirects ---------------------------------------------------------- */

static struct qx_link *qx_link_find(struct walq_qx *x, uint64_t from)
{
    if (!x->links)
        return NULL;
    uint64_t i = qx_home(from, x->lshift);
    for (;;) {
        struct qx_link *l = &x->links[i];
        if (!l->used)
            return NULL;
        if (l->from == from)
            return l;
        i = (i + 1) & x->lmask;
    }
}

/* Follows `m`'s redirects to a live message; `m` itself if none is. */
static uint64_t qx_resolve(struct walq_qx *x, uint64_t m)
{
    if (x->nlinks == 0 || qx_find(x, m))
        return m;
    uint64_t cur = m;
    struct qx_link *l;
    /* Links point forward (a copy is written after its original), so a
     * chain ends. */
    while ((l = qx_link_find(x, cur)) != NULL) {
        cur = l->to;
        if (qx_find(x, cur))
            return cur;
    }
    return m;
}

static int qx_links_build(struct walq_qx *x, const struct qx_link *from, size_t n, size_t cap_n);

/* Rebuilds the redirects keeping only chains that end at a live message,
 * each pointing straight at it. */
static int qx_links_gc(struct walq_qx *x)
{
    size_t cap = x->lmask + 1, k = 0;
    struct qx_link *keep = malloc((x->nlinks + 1) * sizeof *keep);
    if (!keep)
        return -2;
    for (size_t i = 0; i < cap; i++) {
        if (!x->links[i].used)
            continue;
        uint64_t to = qx_resolve(x, x->links[i].from);
        if (to != x->links[i].from) {
            keep[k].from = x->links[i].from;
            keep[k].to = to;
            keep[k].used = 1;
            k++;
        }
    }
    int rc = qx_links_build(x, keep, k, k);
    free(keep);
    return rc;
}

static int qx_link_put_raw(struct walq_qx *x, uint64_t from, uint64_t to)
{
    uint64_t i = qx_home(from, x->lshift);
    while (x->links[i].used && x->links[i].from != from)
        i = (i + 1) & x->lmask;
    if (!x->links[i].used)
        x->nlinks++;
    x->links[i].from = from;
    x->links[i].to = to;
    x->links[i].used = 1;
    return 0;
}

static int qx_links_build(struct walq_qx *x, const struct qx_link *from, size_t n, size_t cap_n)
{
    int bits = qx_bits_for(cap_n + 16);
    struct qx_link *t = calloc((size_t)1 << bits, sizeof *t);
    if (!t)
        return -2;
    free(x->links);
    x->links = t;
    x->lmask = ((uint64_t)1 << bits) - 1;
    x->lshift = 64 - bits;
    x->nlinks = 0;
    for (size_t i = 0; i < n; i++)
        qx_link_put_raw(x, from[i].from, from[i].to);
    x->links_gc_at = 2 * x->nlinks + x->links_gc_floor;
    return 0;
}

/* Adds the link from -> to, then prunes dead chains if enough piled up.
 *
 * Invariant: pruning runs only after the link is in.  A CARRY drops the
 * original before it links it to the copy, so a prune in between saw every
 * older alias's chain end at a dead message and removed it: the copy,
 * queued under its original sequence, was never offered again (the crash
 * tier found it; test_redirects_survive_their_pruning_in_the_middle_of_a_carry). */
static int qx_link_put(struct walq_qx *x, uint64_t from, uint64_t to)
{
    if (!x->links && qx_links_build(x, NULL, 0, 64) < 0)
        return -2;
    if ((x->nlinks + 1) * QX_LOAD_DEN > (x->lmask + 1) * QX_LOAD_NUM) {
        size_t cap = x->lmask + 1, k = 0;
        struct qx_link *all = malloc((x->nlinks + 1) * sizeof *all);
        if (!all)
            return -2;
        for (size_t i = 0; i < cap; i++)
            if (x->links[i].used)
                all[k++] = x->links[i];
        int rc = qx_links_build(x, all, k, 2 * k);
        free(all);
        if (rc < 0)
            return rc;
    }
    qx_link_put_raw(x, from, to);
    if (x->nlinks >= x->links_gc_at)
        return qx_links_gc(x);
    return 0;
}

/* -- state changes (Index._set, _make_visible, _lease, remove) ----------- */

static void qx_set(struct walq_qx *x, struct qx_msg *s, int st)
{
    x->st.counts[s->state]--;
    s->state = (uint8_t)st;
    x->st.counts[st]++;
}

static int qx_make_visible(struct walq_qx *x, struct qx_msg *s)
{
    qx_set(x, s, WALQ_QX_VISIBLE);
    return qx_vpush(x, s->orig);
}

static int qx_lease(struct walq_qx *x, struct qx_msg *s, uint64_t lease_seq, double deadline)
{
    qx_set(x, s, WALQ_QX_INFLIGHT);
    s->lease_seq = lease_seq;
    s->deadline = deadline;
    return qx_tpush(&x->leases, &x->nleases, &x->capleases, deadline, s->seq, lease_seq);
}

static void qx_drop(struct walq_qx *x, struct qx_msg *s)
{
    x->st.counts[s->state]--;
    if (s->orig != s->seq)
        x->norig--;
    if (s->prior)
        x->nprior--;
    if (s->has_recv)
        x->nrecv--;
    qx_erase(x, s);
}

void walq_qx_remove(struct walq_qx *x, uint64_t m)
{
    struct qx_msg *s = qx_find(x, m);
    if (s)
        qx_drop(x, s);
}

/* Room for `want` entries in the retention order (two arrays, one capacity). */
static int qx_ret_reserve(struct walq_qx *x, size_t want)
{
    if (want <= x->capret)
        return 0;
    size_t n = x->capret ? x->capret : 64;
    while (n < want)
        n *= 2;
    int64_t *seqs = realloc(x->ret_seq, n * sizeof *seqs);
    if (!seqs)
        return -2;
    x->ret_seq = seqs;
    double *at = realloc(x->ret_at, n * sizeof *at);
    if (!at)
        return -2;
    x->ret_at = at;
    x->capret = n;
    return 0;
}

/* -- applying records ----------------------------------------------------- */

/* Index._add for a standard queue. */
static int qx_add(struct walq_qx *x, uint64_t seq, double sent, double vis, uint32_t prior)
{
    if (qx_find(x, seq))
        return 0;  /* replayed twice: the first one counts (never happens in order) */
    struct qx_msg *s = qx_insert(x, seq);
    if (!s)
        return -2;
    s->prior = prior;
    if (prior)
        x->nprior++;
    /* Counted under DELAYED for a moment: qx_set moves it. */
    s->state = WALQ_QX_DELAYED;
    x->st.counts[WALQ_QX_DELAYED]++;
    if (x->nret > x->ret_head && sent < x->ret_at[x->nret - 1] - QX_RET_SLACK) {
        if (qx_tpush(&x->late, &x->nlate, &x->caplate, sent, seq, 0) < 0)
            return -2;
    } else {
        if (qx_ret_reserve(x, x->nret + 1) < 0)
            return -2;
        x->ret_seq[x->nret] = (int64_t)seq;
        x->ret_at[x->nret++] = sent;
    }
    if (vis > sent)
        return qx_tpush(&x->delayed, &x->ndelayed, &x->capdelayed, vis, seq, 0);
    return qx_make_visible(x, s);
}

static int qx_apply_lease(struct walq_qx *x, uint64_t seq, const char *p, size_t len)
{
    if (len < 8 || (len - 8) % 16)
        return -1;
    double now;
    memcpy(&now, p, 8);
    for (size_t o = 8; o < len; o += 16) {
        uint64_t m;
        double deadline;
        memcpy(&m, p + o, 8);
        memcpy(&deadline, p + o + 8, 8);
        struct qx_msg *s = qx_find(x, m);
        if (!s)
            continue;
        if (s->has_recv) {
            s->count++;
        } else {
            s->has_recv = 1;
            x->nrecv++;
            s->count = s->prior + 1;
            s->first = now;
        }
        if (qx_lease(x, s, seq, deadline) < 0)
            return -2;
    }
    return 0;
}

static int qx_apply_hide(struct walq_qx *x, uint64_t seq, const char *p, size_t len)
{
    if (len % 16)
        return -1;
    for (size_t o = 0; o < len; o += 16) {
        uint64_t m;
        double deadline;
        memcpy(&m, p + o, 8);
        memcpy(&deadline, p + o + 8, 8);
        struct qx_msg *s = qx_find(x, m);
        if (s && qx_lease(x, s, seq, deadline) < 0)
            return -2;
    }
    return 0;
}

static int qx_apply_chvis(struct walq_qx *x, const char *p, size_t len)
{
    if (len % 24)
        return -1;
    for (size_t o = 0; o < len; o += 24) {
        uint64_t m, lease_seq;
        double deadline;
        memcpy(&m, p + o, 8);
        memcpy(&lease_seq, p + o + 8, 8);
        memcpy(&deadline, p + o + 16, 8);
        struct qx_msg *s = qx_find(x, m);
        if (s && s->state == WALQ_QX_INFLIGHT && s->lease_seq == lease_seq) {
            s->deadline = deadline;
            if (qx_tpush(&x->leases, &x->nleases, &x->capleases, deadline, m, lease_seq) < 0)
                return -2;
        }
    }
    return 0;
}

static int qx_apply_gone(struct walq_qx *x, const char *p, size_t len)
{
    if (len % 8)
        return -1;
    for (size_t o = 0; o < len; o += 8) {
        uint64_t m;
        memcpy(&m, p + o, 8);
        walq_qx_remove(x, qx_resolve(x, m));
    }
    return 0;
}

static int qx_apply_carry(struct walq_qx *x, const char *p, size_t len)
{
    if (len % 40)
        return -1;
    for (size_t o = 0; o < len; o += 40) {
        uint64_t nw, old, lease_seq, orig;
        double deadline;
        memcpy(&nw, p + o, 8);
        memcpy(&old, p + o + 8, 8);
        memcpy(&lease_seq, p + o + 16, 8);
        memcpy(&deadline, p + o + 24, 8);
        memcpy(&orig, p + o + 32, 8);
        if (nw <= old)
            return -1;  /* a copy comes after its original: else a redirect loop */
        struct qx_msg *s = qx_find(x, old);
        if (!s) {
            walq_qx_remove(x, nw);  /* the original went first: so does its copy */
            continue;
        }
        int st = s->state;
        qx_drop(x, s);
        if (qx_link_put(x, old, nw) < 0)
            return -2;
        struct qx_msg *n = qx_find(x, nw);
        if (!n)
            continue;
        if (orig != nw) {
            if (n->orig == n->seq)
                x->norig++;
            n->orig = orig;
            if (n->state == WALQ_QX_VISIBLE && qx_vpush(x, orig) < 0)
                return -2;
        }
        if (st == WALQ_QX_INFLIGHT && qx_lease(x, n, lease_seq, deadline) < 0)
            return -2;
    }
    return 0;
}

static int qx_compact_heaps(struct walq_qx *x);
static void qx_trim_heaps(struct walq_qx *x);

static int qx_apply_purge(struct walq_qx *x, const char *p, size_t len)
{
    if (len != 8)
        return -1;
    uint64_t upto;
    memcpy(&upto, p, 8);
    /* A backward shift may move a later member of the run into slot i:
     * look at slot i again before moving on. */
    for (uint64_t i = 0; i < x->cap;) {
        struct qx_msg *s = &x->slots[i];
        if (s->state != QX_EMPTY && s->seq < upto)
            qx_drop(x, s);
        else
            i++;
    }
    return qx_compact_heaps(x);
}

/* What the payload's type counts for checkpoint pacing (Index.apply). */
static inline uint64_t qx_ops(int type, size_t len)
{
    return type == 1 ? 1 : 1 + len / 16;
}

int walq_qx_apply(struct walq_qx *x, uint64_t seq, int type, const char *p, size_t len)
{
    int rc = 0;
    switch (type) {
    case QX_SEND: {
        if (len < WALQ_SEND_HEAD)
            return -1;
        double sent, vis;
        uint32_t prior;
        memcpy(&sent, p + WALQ_SEND_SENT, 8);
        memcpy(&vis, p + WALQ_SEND_VISIBLE, 8);
        memcpy(&prior, p + WALQ_SEND_PRIOR, 4);
        rc = qx_add(x, seq, sent, vis, prior);
        break;
    }
    case QX_LEASE: rc = qx_apply_lease(x, seq, p, len); break;
    case 3: rc = qx_apply_hide(x, seq, p, len); break;
    case QX_DELETE: case 7: rc = qx_apply_gone(x, p, len); break;
    case 5: rc = qx_apply_chvis(x, p, len); break;
    case 6: rc = qx_apply_purge(x, p, len); break;
    case 8: rc = qx_apply_carry(x, p, len); break;
    default: break;  /* Index.apply ignores types it does not know */
    }
    if (rc == 0) {
        x->st.ops += qx_ops(type, len);
        qx_trim_heaps(x);
    }
    return rc;
}

int64_t walq_qx_apply_run(struct walq_qx *x, const char *base, const uint64_t *offs,
                          const uint32_t *lens, const uint8_t *types, size_t n, uint64_t seq0)
{
    for (size_t i = 0; i < n; i++) {
        int rc = walq_qx_apply(x, seq0 + i, types[i], base + offs[i], lens[i]);
        if (rc < 0)
            return rc == -2 ? -2 : -(int64_t)(i + 3);
    }
    return 0;
}

int walq_qx_add_sends(struct walq_qx *x, uint64_t seq0, uint64_t n, double sent, double vis)
{
    for (uint64_t i = 0; i < n; i++)
        if (qx_add(x, seq0 + i, sent, vis, 0) < 0)
            return -2;
    x->st.ops += n;
    qx_trim_heaps(x);
    return 0;
}

/* -- time --------------------------------------------------------------- */

static void qx_compact_retention(struct walq_qx *x)
{
    size_t k = 0;
    for (size_t j = x->ret_head; j < x->nret; j++) {
        if (qx_find(x, (uint64_t)x->ret_seq[j])) {
            x->ret_seq[k] = x->ret_seq[j];
            x->ret_at[k] = x->ret_at[j];
            k++;
        }
    }
    x->nret = k;
    x->ret_head = 0;
}

int walq_qx_sweep(struct walq_qx *x, double now, double retention)
{
    while (x->nleases && x->leases[0].t <= now) {
        struct qx_timed e = qx_tpop(x->leases, &x->nleases);
        struct qx_msg *s = qx_find(x, e.m);
        if (s && s->state == WALQ_QX_INFLIGHT && s->lease_seq == e.l && s->deadline == e.t
                && qx_make_visible(x, s) < 0)
            return -2;
    }
    while (x->ndelayed && x->delayed[0].t <= now) {
        struct qx_timed e = qx_tpop(x->delayed, &x->ndelayed);
        struct qx_msg *s = qx_find(x, e.m);
        if (s && s->state == WALQ_QX_DELAYED && qx_make_visible(x, s) < 0)
            return -2;
    }
    double limit = now - retention;
    size_t i = x->ret_head;
    while (i < x->nret && x->ret_at[i] <= limit)
        walq_qx_remove(x, (uint64_t)x->ret_seq[i++]);
    x->ret_head = i;
    while (x->nlate && x->late[0].t <= limit)
        walq_qx_remove(x, qx_tpop(x->late, &x->nlate).m);
    if (i > 4096 && i * 2 > x->nret) {
        memmove(x->ret_seq, x->ret_seq + i, (x->nret - i) * sizeof *x->ret_seq);
        memmove(x->ret_at, x->ret_at + i, (x->nret - i) * sizeof *x->ret_at);
        x->nret -= i;
        x->ret_head = 0;
    } else if (x->nret - i > 2 * x->st.live + 4096) {
        qx_compact_retention(x);
    }
    return 0;
}

int walq_qx_next_event(struct walq_qx *x, double *out)
{
    int any = 0;
    if (x->nleases) {
        *out = x->leases[0].t;
        any = 1;
    }
    if (x->ndelayed && (!any || x->delayed[0].t < *out)) {
        *out = x->delayed[0].t;
        any = 1;
    }
    return any;
}

/* -- choosing what to deliver ---------------------------------------------- */

int walq_qx_give_back(struct walq_qx *x, const uint64_t *seqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct qx_msg *s = qx_find(x, seqs[i]);
        if (s && s->state == WALQ_QX_VISIBLE && qx_vpush(x, s->orig) < 0)
            return -2;
    }
    return 0;
}

int64_t walq_qx_candidates(struct walq_qx *x, size_t n, int take, uint64_t *out)
{
    size_t k = 0;
    while (x->nvis && k < n) {
        uint64_t key = qx_vpop(x);
        uint64_t m = qx_resolve(x, key);
        struct qx_msg *s = qx_find(x, m);
        /* A copy's own sequence is pushed once before its CARRY names its
         * original one: only the entry under the original counts. */
        if (s && s->state == WALQ_QX_VISIBLE && s->orig == key && (k == 0 || out[k - 1] != m))
            out[k++] = m;
    }
    if (!take && walq_qx_give_back(x, out, k) < 0)
        return -2;
    return (int64_t)k;
}

/* -- queries -------------------------------------------------------------------- */

struct walq_qx_stats *walq_qx_stats(struct walq_qx *x)
{
    return &x->st;
}

int walq_qx_get(struct walq_qx *x, uint64_t m, struct walq_qx_view *out)
{
    struct qx_msg *s = qx_find(x, m);
    if (!s)
        return 0;
    out->state = s->state;
    out->has_recv = s->has_recv;
    out->count = s->count;
    out->prior = s->prior;
    out->first = s->first;
    out->lease_seq = s->lease_seq;
    out->deadline = s->deadline;
    out->orig = s->orig;
    return 1;
}

void walq_qx_describe(struct walq_qx *x, const uint64_t *seqs, size_t n,
                      uint32_t *counts, double *firsts, uint64_t *origs)
{
    for (size_t i = 0; i < n; i++) {
        struct qx_msg *s = qx_find(x, seqs[i]);
        counts[i] = !s ? 0 : s->has_recv ? s->count : s->prior;
        firsts[i] = s && s->has_recv ? s->first : 0.0;
        origs[i] = s ? s->orig : seqs[i];
    }
}

size_t walq_qx_select_live(struct walq_qx *x, const uint64_t *seqs, size_t n, uint64_t applied,
                           uint64_t *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (seqs[i] >= applied || qx_find(x, qx_resolve(x, seqs[i])))
            out[k++] = seqs[i];
    return k;
}

int64_t walq_qx_receive(struct walq_qx *x, struct walq_qx_recv *r, size_t n)
{
    if (n > WALQ_QX_RECV_MAX)
        return -1;
    int64_t k = walq_qx_candidates(x, n, 1, r->seqs);
    if (k <= 0)
        return k;
    for (int64_t i = 0; i < k; i++)
        if (r->seqs[i] >= r->seg_base + r->count) {
            int rc = walq_qx_give_back(x, r->seqs, (size_t)k);
            return rc < 0 ? -2 : WALQ_QX_RECV_UNINDEXED;
        }
    char ids[16 * WALQ_QX_RECV_MAX];
    char rec[8 + 16 * WALQ_QX_RECV_MAX];
    uint32_t counts[WALQ_QX_RECV_MAX];
    double firsts[WALQ_QX_RECV_MAX];
    uint64_t origs[WALQ_QX_RECV_MAX];
    if (r->max_receives) {
        /* This receive would move a message past the limit to the dead-letter
         * queue: that is the general path's (Queue._lease, _move_out). */
        walq_qx_describe(x, r->seqs, (size_t)k, counts, firsts, origs);
        for (int64_t i = 0; i < k; i++)
            if (counts[i] >= r->max_receives)
                goto general;
    }
    if (walq_frames_at(r->base, r->size, r->salt, r->offs, r->seg_base, r->count, r->first_seq,
                       r->seqs, (uint64_t)k, r->poffs, r->lens) != k)
        goto general;
    memcpy(rec, &r->now, 8);
    for (int64_t i = 0; i < k; i++) {
        const char *p = r->base + r->poffs[i];
        if (r->lens[i] < WALQ_SEND_HEAD)
            goto general;
        memcpy(&r->got[i].sent, p + WALQ_SEND_SENT, 8);
        if (r->got[i].sent <= r->expired)
            goto general;  /* the general path removes it */
        memcpy(ids + 16 * i, p, 16);
        memcpy(rec + 8 + 16 * i, &r->seqs[i], 8);
        memcpy(rec + 16 + 16 * i, &r->deadline, 8);
    }
    struct walq_writer *w = r->writer;
    uint32_t len = (uint32_t)(8 + 16 * k);
    uint64_t seq;
    if (w->fd < 0 || walq_load(&w->ctl->poisoned)
            || walq_append_locked(w->ctl, w->fd, w->seg_base, 1, rec, &len, NULL, QX_LEASE, &seq) != WALQ_OK)
        goto general;
    /* Written: from here on the lease stands, whatever happens. */
    r->lease_seq = seq;
    r->folded = 0;
    if (r->applied != seq)
        return k;  /* the caller catches up, which applies it */
    if (walq_qx_apply(x, seq, QX_LEASE, rec, len) < 0)
        return -2;  /* written but not applied: the caller rebuilds the index */
    r->folded = 1;
    walq_qx_describe(x, r->seqs, (size_t)k, counts, firsts, origs);
    for (int64_t i = 0; i < k; i++) {
        /* The rest a Message takes from the SEND head (the send time came above). */
        struct walq_qx_got *g = &r->got[i];
        const char *p = r->base + r->poffs[i];
        double first;
        memcpy(&first, p + WALQ_SEND_FIRST, 8);
        g->first = first != 0.0 ? first : firsts[i];
        g->count = counts[i];
        g->plain = is_zero(p + WALQ_SEND_LENS, WALQ_SEND_LENS_SIZE);
        g->off = g->plain ? r->poffs[i] + WALQ_SEND_HEAD : r->poffs[i];
        g->size = g->plain ? r->lens[i] - WALQ_SEND_HEAD : r->lens[i];
    }
    walq_receive_texts(ids, r->seqs, (size_t)k, r->uid, seq, r->ids_text, r->receipts_text);
    return k;
general:
    return walq_qx_give_back(x, r->seqs, (size_t)k) < 0 ? -2 : -1;
}

int64_t walq_qx_receive_now(struct walq_qx *x, struct walq_qx_recv *r, size_t n, double retention)
{
    struct walq_writer *w = r->writer;
    struct walq_ctl *ctl = w->ctl;
    if (!r->locked) {
        /* Read without the lock, as Python's pre-check does. */
        if (walq_load(&ctl->end_seq) != r->applied)
            return WALQ_QX_RECV_STALE;
        if (walq_qx_stats(x)->counts[WALQ_QX_VISIBLE] == 0) {
            double due;
            if (!walq_qx_next_event(x, &due) || due > r->now)
                return 0; /* nothing to do: no lock taken, and no sweep (Index.sweep) */
        }
        if (walq_lock(w->lockfd) < 0)
            return WALQ_QX_RECV_STALE; /* the general path takes it again and says why */
        if (walq_load(&ctl->end_seq) != r->applied) {
            r->locked = 1; /* someone appended while we waited: the caller catches up */
            return WALQ_QX_RECV_STALE;
        }
    } else if (walq_load(&ctl->end_seq) != r->applied) {
        walq_unlock(w->lockfd);
        r->locked = 0;
        return WALQ_QX_RECV_STALE;
    }
    int64_t k;
    if (walq_qx_sweep(x, r->now, retention) < 0) {
        k = -2;
    } else {
        r->first_seq = walq_load(&ctl->first_seq);
        k = walq_qx_receive(x, r, n);
    }
    walq_unlock(w->lockfd);
    r->locked = 0;
    return k;
}

int64_t walq_qx_doomed(struct walq_qx *x, const char *text, size_t n, uint64_t uid,
                       uint64_t applied, uint64_t *out)
{
    uint64_t msgs[WALQ_QX_DOOMED_MAX], leases[WALQ_QX_DOOMED_MAX];
    uint8_t status[WALQ_QX_DOOMED_MAX];
    if (n > WALQ_QX_DOOMED_MAX)
        return -1;
    walq_parse_receipts(text, n, uid, msgs, leases, status);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (status[i])
            return -1;
        uint64_t m = msgs[i];
        if (m < applied && !qx_find(x, qx_resolve(x, m)))
            continue; /* already gone: a delete needs no record */
        size_t j = 0;
        while (j < k && out[j] != m)
            j++;
        if (j == k)
            out[k++] = m;
    }
    return (int64_t)k;
}

int walq_qx_append_sends(struct walq_qx *x, struct walq_writer *w, size_t n, const char *data,
                         const uint32_t *lens, uint64_t applied, double sent_at, double visible_at,
                         uint64_t *seq)
{
    if (walq_writer_append(w, n, data, lens, NULL, QX_SEND, seq) != WALQ_OK)
        return WALQ_QX_APPEND_SLOW;
    if (*seq != applied)
        return 0;  /* records came between: the next catch-up reads these too */
    return walq_qx_add_sends(x, *seq, n, sent_at, visible_at) < 0 ? -2 : 1;
}

int64_t walq_qx_delete_now(struct walq_qx *x, struct walq_writer *w, const char *text, size_t n,
                           uint64_t uid, uint64_t applied, uint64_t *seq)
{
    uint64_t doomed[WALQ_QX_DOOMED_MAX];
    int64_t k = walq_qx_doomed(x, text, n, uid, applied, doomed);
    if (k <= 0)
        return k;
    int64_t at = walq_append_one(w, (const char *)doomed, 8 * (size_t)k, QX_DELETE);
    if (at < 0)
        return WALQ_QX_DELETE_SLOW;  /* nothing written */
    *seq = (uint64_t)at;
    if ((uint64_t)at == applied && walq_qx_apply(x, (uint64_t)at, QX_DELETE, (const char *)doomed, 8 * (size_t)k) < 0)
        return -2;  /* written but not applied: the caller rebuilds the index */
    return k;
}

uint64_t walq_qx_resolve(struct walq_qx *x, uint64_t m)
{
    return qx_resolve(x, m);
}

int walq_qx_min_live(struct walq_qx *x, uint64_t *out)
{
    int any = 0;
    for (uint64_t i = 0; i < x->cap; i++) {
        struct qx_msg *s = &x->slots[i];
        if (s->state != QX_EMPTY && (!any || s->seq < *out)) {
            *out = s->seq;
            any = 1;
        }
    }
    return any;
}

int walq_qx_oldest_sent(struct walq_qx *x, double *out)
{
    size_t i = x->ret_head;
    /* A removed message never comes back, so skipping it is permanent. */
    while (i < x->nret && !qx_find(x, (uint64_t)x->ret_seq[i]))
        i++;
    x->ret_head = i;
    while (x->nlate && !qx_find(x, x->late[0].m))
        qx_tpop(x->late, &x->nlate);
    int any = 0;
    if (i < x->nret) {
        *out = x->ret_at[i];
        any = 1;
    }
    if (x->nlate && (!any || x->late[0].t < *out)) {
        *out = x->late[0].t;
        any = 1;
    }
    return any;
}

/* Sorts keys ascending: LSD radix, 8 bits a pass, skipping the passes in
 * which every key has the same digit (sequences share their high bytes). */
static int qx_sort_u64(uint64_t *keys, size_t n)
{
    if (n < 2)
        return 0;
    uint64_t *tmp = malloc(n * sizeof *tmp);
    if (!tmp)
        return -2;
    uint64_t *src = keys, *dst = tmp;
    for (int shift = 0; shift < 64; shift += 8) {
        size_t count[256] = {0};
        for (size_t i = 0; i < n; i++)
            count[(src[i] >> shift) & 255]++;
        if (count[(src[0] >> shift) & 255] == n)
            continue;
        size_t pos = 0;
        for (int d = 0; d < 256; d++) {
            size_t c = count[d];
            count[d] = pos;
            pos += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & 255]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != keys)
        memcpy(keys, src, n * sizeof *keys);
    free(tmp);
    return 0;
}

/* Sorts keys that are all different (sequences) ascending.  When they lie
 * close together, as live sequences do, a bitmap of their range is set and
 * read back in order: two passes, and the bitmap (a bit per possible key)
 * stays in cache, where the radix sort's four passes over the keys took
 * most of a checkpoint's export.  Keys spread too thin take the radix
 * sort; so do repeated ones, which the bitmap would merge. */
static int qx_sort_distinct(uint64_t *keys, size_t n)
{
    if (n < 2)
        return 0;
    uint64_t lo = keys[0], hi = keys[0];
    for (size_t i = 1; i < n; i++) {
        if (keys[i] < lo)
            lo = keys[i];
        if (keys[i] > hi)
            hi = keys[i];
    }
    uint64_t span = hi - lo;
    if (span / 64 > n)
        return qx_sort_u64(keys, n);
    size_t words = (size_t)(span / 64) + 1;
    uint64_t *bits = calloc(words, sizeof *bits);
    if (!bits)
        return -2;
    uint64_t repeated = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t d = keys[i] - lo, bit = (uint64_t)1 << (d % 64);
        repeated |= bits[d / 64] & bit;
        bits[d / 64] |= bit;
    }
    if (repeated) {
        free(bits);
        return qx_sort_u64(keys, n);
    }
    size_t k = 0;
    for (size_t w = 0; w < words; w++)
        for (uint64_t b = bits[w]; b; b &= b - 1)
            keys[k++] = lo + (uint64_t)w * 64 + (uint64_t)__builtin_ctzll(b);
    free(bits);
    return 0;
}

int64_t walq_qx_live_seqs(struct walq_qx *x, uint64_t below, uint64_t max, uint64_t *out)
{
    size_t k = 0;
    for (uint64_t i = 0; i < x->cap; i++)
        if (x->slots[i].state != QX_EMPTY && x->slots[i].seq < below) {
            if (k == max)
                return (int64_t)max + 1;
            out[k++] = x->slots[i].seq;
        }
    if (qx_sort_distinct(out, k) < 0)
        return -2;
    return (int64_t)k;
}

/* -- checkpoints ------------------------------------------------------------- */

void walq_qx_bounds(struct walq_qx *x, uint64_t out[9])
{
    out[0] = x->st.live;
    out[1] = x->nret - x->ret_head;
    out[2] = x->ndelayed;
    out[3] = (uint64_t)x->st.counts[WALQ_QX_INFLIGHT];
    out[4] = x->nrecv;
    out[5] = x->nprior;
    out[6] = x->nlate;
    out[7] = x->nlinks;
    out[8] = x->norig;
}

int walq_qx_export(struct walq_qx *x, struct walq_qx_columns *c)
{
    size_t n = 0, nl = 0, nr = 0, np = 0, no = 0;
    /* Sequences are below 2**62, so the state rides in the low two bits
     * and one sort orders both. */
    uint64_t *packed = (uint64_t *)c->state_seq;
    for (uint64_t i = 0; i < x->cap; i++) {
        struct qx_msg *s = &x->slots[i];
        if (s->state == QX_EMPTY)
            continue;
        packed[n++] = (s->seq << 2) | s->state;
        if (s->state == WALQ_QX_INFLIGHT) {
            c->lease_msg[nl] = (int64_t)s->seq;
            c->lease_seq[nl] = (int64_t)s->lease_seq;
            c->lease_deadline[nl++] = s->deadline;
        }
        if (s->has_recv) {
            c->recv_msg[nr] = (int64_t)s->seq;
            c->recv_count[nr] = s->count;
            c->recv_first[nr++] = s->first;
        }
        if (s->prior) {
            c->prior_msg[np] = (int64_t)s->seq;
            c->prior_count[np++] = s->prior;
        }
        if (s->orig != s->seq) {
            c->orig_seq[no] = (int64_t)s->seq;
            c->orig_orig[no++] = (int64_t)s->orig;
        }
    }
    if (qx_sort_distinct(packed, n) < 0)
        return -2;
    for (size_t i = 0; i < n; i++) {
        c->state_val[i] = (uint8_t)(packed[i] & 3);
        packed[i] >>= 2;
    }
    /* The retention order ascends (records are applied in log order), as
     * do the live sequences now: a merge finds the live ones without a
     * lookup each; an entry out of order is looked up. */
    size_t nret = 0, j = 0;
    uint64_t last = 0;
    for (size_t i = x->ret_head; i < x->nret; i++) {
        uint64_t r = (uint64_t)x->ret_seq[i];
        int live;
        if (r >= last) {
            while (j < n && packed[j] < r)
                j++;
            live = j < n && packed[j] == r;
            last = r;
        } else {
            live = qx_find(x, r) != NULL;
        }
        if (live) {
            c->ret_seq[nret] = (int64_t)r;
            c->ret_at[nret++] = x->ret_at[i];
        }
    }
    size_t nd = 0;
    for (size_t i = 0; i < x->ndelayed; i++) {
        struct qx_msg *s = qx_find(x, x->delayed[i].m);
        if (s && s->state == WALQ_QX_DELAYED) {
            c->delayed_at[nd] = x->delayed[i].t;
            c->delayed_seq[nd++] = (int64_t)x->delayed[i].m;
        }
    }
    size_t nlate = 0;
    for (size_t i = 0; i < x->nlate; i++) {
        if (qx_find(x, x->late[i].m)) {
            c->late_at[nlate] = x->late[i].t;
            c->late_seq[nlate++] = (int64_t)x->late[i].m;
        }
    }
    size_t nlinks = 0;
    for (uint64_t i = 0; x->links && i <= x->lmask; i++) {
        struct qx_link *l = &x->links[i];
        if (!l->used)
            continue;
        uint64_t to = qx_resolve(x, l->from);
        if (to != l->from) {
            c->redirect_old[nlinks] = (int64_t)l->from;
            c->redirect_new[nlinks++] = (int64_t)to;
        }
    }
    uint64_t rows[9] = {n, nret, nd, nl, nr, np, nlate, nlinks, no};
    memcpy(c->rows, rows, sizeof rows);
    return 0;
}

int walq_qx_import(struct walq_qx *x, const struct walq_qx_columns *c)
{
    const uint64_t *r = c->rows;
    if (x->st.live)
        return -1;
    struct qx_msg *empty = x->slots;
    if (qx_alloc_slots(x, qx_cap_for(r[0])) < 0)
        return -2;  /* x keeps its empty table */
    free(empty);
    for (size_t i = 0; i < r[0]; i++) {
        uint8_t st = c->state_val[i];
        uint64_t seq = (uint64_t)c->state_seq[i];
        if (st > WALQ_QX_INFLIGHT || qx_find(x, seq))
            return -1;
        struct qx_msg *s = qx_insert(x, seq);
        if (!s)
            return -2;
        s->state = st;
        x->st.counts[st]++;
    }
    for (size_t i = 0; i < r[3]; i++) {
        struct qx_msg *s = qx_find(x, (uint64_t)c->lease_msg[i]);
        if (!s)
            continue;  /* see below */
        if (s->state != WALQ_QX_INFLIGHT)
            return -1;
        s->lease_seq = (uint64_t)c->lease_seq[i];
        s->deadline = c->lease_deadline[i];
    }
    for (size_t i = 0; i < r[4]; i++) {
        struct qx_msg *s = qx_find(x, (uint64_t)c->recv_msg[i]);
        /* The Python index may keep a row for a message already gone (its
         * CARRY records an original for a copy deleted first): such a row
         * means nothing, and refusing it would refuse that index's files. */
        if (!s)
            continue;
        x->nrecv += !s->has_recv;  /* a row given twice counts once */
        s->has_recv = 1;
        s->count = (uint32_t)c->recv_count[i];
        s->first = c->recv_first[i];
    }
    for (size_t i = 0; i < r[5]; i++) {
        struct qx_msg *s = qx_find(x, (uint64_t)c->prior_msg[i]);
        if (!s)
            continue;
        x->nprior -= s->prior != 0;
        s->prior = (uint32_t)c->prior_count[i];
        x->nprior += s->prior != 0;
    }
    for (size_t i = 0; i < r[8]; i++) {
        struct qx_msg *s = qx_find(x, (uint64_t)c->orig_seq[i]);
        if (!s)
            continue;
        x->norig -= s->orig != s->seq;
        s->orig = (uint64_t)c->orig_orig[i];
        x->norig += s->orig != s->seq;
    }
    if (qx_ret_reserve(x, r[1] + 1) < 0)
        return -2;
    memcpy(x->ret_seq, c->ret_seq, r[1] * sizeof *x->ret_seq);
    memcpy(x->ret_at, c->ret_at, r[1] * sizeof *x->ret_at);
    x->nret = r[1];
    x->ret_head = 0;
    for (size_t i = 0; i < r[2]; i++)
        if (qx_tpush(&x->delayed, &x->ndelayed, &x->capdelayed, c->delayed_at[i],
                     (uint64_t)c->delayed_seq[i], 0) < 0)
            return -2;
    for (size_t i = 0; i < r[6]; i++)
        if (qx_tpush(&x->late, &x->nlate, &x->caplate, c->late_at[i], (uint64_t)c->late_seq[i], 0) < 0)
            return -2;
    if (r[7]) {
        struct qx_link *l = malloc(r[7] * sizeof *l);
        if (!l)
            return -2;
        for (size_t i = 0; i < r[7]; i++) {
            l[i].from = (uint64_t)c->redirect_old[i];
            l[i].to = (uint64_t)c->redirect_new[i];
            l[i].used = 1;
            if (l[i].to <= l[i].from) {  /* see qx_apply_carry */
                free(l);
                return -1;
            }
        }
        int rc = qx_links_build(x, l, r[7], r[7]);
        free(l);
        if (rc < 0)
            return rc;
    }
    /* Heaps in bulk: O(n) rather than a push each. */
    size_t nv = (size_t)x->st.counts[WALQ_QX_VISIBLE], nl = (size_t)x->st.counts[WALQ_QX_INFLIGHT];
    if (qx_reserve((void **)&x->vis, &x->capvis, nv + 1, sizeof *x->vis) < 0
            || qx_reserve((void **)&x->leases, &x->capleases, nl + 1, sizeof *x->leases) < 0)
        return -2;
    x->nvis = x->nleases = 0;
    for (uint64_t i = 0; i < x->cap; i++) {
        struct qx_msg *s = &x->slots[i];
        if (s->state == WALQ_QX_VISIBLE)
            x->vis[x->nvis++] = s->orig;
        else if (s->state == WALQ_QX_INFLIGHT)
            x->leases[x->nleases++] = (struct qx_timed){s->deadline, s->seq, s->lease_seq};
    }
    for (size_t i = x->nvis / 2; i-- > 0;)
        qx_vsift_down(x->vis, x->nvis, i);
    qx_theapify(x->leases, x->nleases);
    return 0;
}

/* Index._compact_heaps: drops the stale entries of every heap. */
static int qx_compact_heaps(struct walq_qx *x)
{
    x->nvis = 0;
    for (uint64_t i = 0; i < x->cap; i++)
        if (x->slots[i].state == WALQ_QX_VISIBLE && qx_vpush(x, x->slots[i].orig) < 0)
            return -2;
    size_t k = 0;
    for (size_t i = 0; i < x->ndelayed; i++) {
        struct qx_msg *s = qx_find(x, x->delayed[i].m);
        if (s && s->state == WALQ_QX_DELAYED)
            x->delayed[k++] = x->delayed[i];
    }
    x->ndelayed = k;
    qx_theapify(x->delayed, k);
    k = 0;
    for (size_t i = 0; i < x->nleases; i++) {
        struct qx_timed e = x->leases[i];
        struct qx_msg *s = qx_find(x, e.m);
        if (s && s->state == WALQ_QX_INFLIGHT && s->lease_seq == e.l && s->deadline == e.t)
            x->leases[k++] = e;
    }
    x->nleases = k;
    qx_theapify(x->leases, k);
    return 0;
}

/* Stale heap entries - a lease whose message was deleted, leased again or
 * given a new deadline; a visible message since received or deleted - wait
 * in their heap until they reach its top.  For leases that is their
 * deadline: a queue receiving R messages a second kept R x visibility
 * timeout of them (at 30 s and 20,000 a second, 600,000 entries, 14 MB,
 * never returned), and with a 12-hour timeout memory grew with every
 * receive.  Each heap is filtered once its stale entries outnumber its live
 * ones by QX_HEAP_SLACK (amortized O(1) a push: at least that many pushes
 * come between two filterings of a heap of twice as many), and its
 * capacity is given back when it is four times what is left. */
#define QX_HEAP_SLACK 4096

static void qx_shrink(void **p, size_t *cap, size_t n, size_t size)
{
    size_t want = 2 * n + QX_HEAP_SLACK;
    if (*cap <= 4 * (n + QX_HEAP_SLACK))
        return;
    void *q = realloc(*p, want * size);
    if (q) {  /* failing to shrink is harmless */
        *p = q;
        *cap = want;
    }
}

static int qx_lease_live(struct walq_qx *x, const struct qx_timed *e)
{
    struct qx_msg *s = qx_find(x, e->m);
    return s && s->state == WALQ_QX_INFLIGHT && s->lease_seq == e->l && s->deadline == e->t;
}

static int qx_vis_live(struct walq_qx *x, uint64_t key)
{
    struct qx_msg *s = qx_find(x, qx_resolve(x, key));
    return s && s->state == WALQ_QX_VISIBLE && s->orig == key;
}

static void qx_compact_retention(struct walq_qx *x);

static void qx_trim_heaps(struct walq_qx *x)
{
    size_t k;
    /* The retention order too: a process that applies records but never
     * sweeps (walq_qx_sweep compacts it as well) kept every send's entry. */
    if (x->nret - x->ret_head > 2 * x->st.live + QX_HEAP_SLACK) {
        qx_compact_retention(x);
        size_t want = 2 * x->nret + QX_HEAP_SLACK;
        if (x->capret > 4 * (x->nret + QX_HEAP_SLACK)) {
            int64_t *seqs = realloc(x->ret_seq, want * sizeof *seqs);
            if (seqs) {
                x->ret_seq = seqs;
                double *at = realloc(x->ret_at, want * sizeof *at);
                if (at)
                    x->ret_at = at;
                x->capret = want;  /* ret_at holds at least as much */
            }
        }
    }
    if (x->nleases > 2 * (size_t)x->st.counts[WALQ_QX_INFLIGHT] + QX_HEAP_SLACK) {
        k = 0;
        for (size_t i = 0; i < x->nleases; i++)
            if (qx_lease_live(x, &x->leases[i]))
                x->leases[k++] = x->leases[i];
        x->nleases = k;
        qx_theapify(x->leases, k);
        qx_shrink((void **)&x->leases, &x->capleases, k, sizeof *x->leases);
    }
    if (x->nvis > 2 * (size_t)x->st.counts[WALQ_QX_VISIBLE] + QX_HEAP_SLACK) {
        k = 0;
        for (size_t i = 0; i < x->nvis; i++)
            if (qx_vis_live(x, x->vis[i]))
                x->vis[k++] = x->vis[i];
        x->nvis = k;
        for (size_t i = k / 2; i-- > 0;)
            qx_vsift_down(x->vis, k, i);
        qx_shrink((void **)&x->vis, &x->capvis, k, sizeof *x->vis);
    }
    if (x->ndelayed > 2 * (size_t)x->st.counts[WALQ_QX_DELAYED] + QX_HEAP_SLACK) {
        k = 0;
        for (size_t i = 0; i < x->ndelayed; i++) {
            struct qx_msg *s = qx_find(x, x->delayed[i].m);
            if (s && s->state == WALQ_QX_DELAYED)
                x->delayed[k++] = x->delayed[i];
        }
        x->ndelayed = k;
        qx_theapify(x->delayed, k);
        qx_shrink((void **)&x->delayed, &x->capdelayed, k, sizeof *x->delayed);
    }
}

/* -- life ------------------------------------------------------------------------ */

struct walq_qx *walq_qx_new(void)
{
    struct walq_qx *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->links_gc_floor = 1024;
    if (qx_alloc_slots(x, 64) < 0) {
        free(x);
        return NULL;
    }
    return x;
}

void walq_qx_free(struct walq_qx *x)
{
    if (!x)
        return;
    free(x->slots);
    free(x->vis);
    free(x->leases);
    free(x->delayed);
    free(x->late);
    free(x->ret_seq);
    free(x->ret_at);
    free(x->links);
    free(x);
}

void walq_qx_set_prune_floor(struct walq_qx *x, size_t floor)
{
    x->links_gc_floor = floor;
    x->links_gc_at = 2 * x->nlinks + floor;
}
