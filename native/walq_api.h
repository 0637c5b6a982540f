/* walq native core: the declarations Python sees.
 *
 * This file is read twice: by the C compiler (walq.c includes it) and by
 * cffi's cdef (native/ffi_build.py), so it holds only plain declarations and
 * integer #defines - no include guards, no macros with bodies.
 *
 * The byte layout these functions read and write is specified in
 * docs/format.md; the constants below are that grammar's numbers.
 */

#define WALQ_SEG_HEADER_SIZE 64
#define WALQ_REC_HEADER_SIZE 24
#define WALQ_ALIGN 8
#define WALQ_INLINE_MAX 4096

/* Return codes (negative errno values are passed through as-is). */
#define WALQ_OK 0
#define WALQ_ESTALE 1      /* the active segment changed under the caller */
#define WALQ_EFULL 2       /* the batch does not fit in the active segment */
#define WALQ_EALLOC 3      /* the batch runs past the preallocated part of the segment */
#define WALQ_EREPAIR 4     /* the control block is mid-update (a roll was cut short) */

/* walq_scan() stop reasons. */
#define WALQ_SCAN_LIMIT 0  /* max records read */
#define WALQ_SCAN_END 1    /* a zero header: the end of written data */
#define WALQ_SCAN_BAD 2    /* a frame that does not validate at next_off */
#define WALQ_SCAN_EOF 3    /* ran into the end of the buffer */

/* Shared control block: the first bytes of a log's `log.ctl`, mapped
 * MAP_SHARED by every process that has the log open.  Fields other than the
 * futex words and their waiter counts change only under the append lock (or
 * the sync lock for durable_seq / dir_synced_base); readers load them with
 * acquire semantics.  New fields come out of `reserved`, so that every offset
 * and the size stay the same (tests/test_log_groupcommit.py pins them). */
struct walq_ctl {
    uint64_t magic;
    uint64_t end_seq;          /* next sequence number to assign */
    uint64_t seg_base;         /* base sequence of the active segment */
    uint64_t end_off;          /* end of published data in the active segment */
    uint64_t reserve_off;      /* end of the write in progress (> end_off: a writer died mid-write) */
    uint64_t durable_seq;      /* every record below this is on stable storage */
    uint64_t first_seq;        /* lowest sequence still stored */
    uint64_t seg_cap;          /* byte size of the active segment */
    uint64_t salt;             /* salt of the active segment */
    uint64_t generation;       /* bumped by every recovery */
    uint64_t poisoned;         /* a sync failed: every handle must reopen */
    uint64_t dir_synced_base;  /* newest segment whose directory entry is durable */
    uint32_t notify;           /* futex word: bumped on every publish */
    uint32_t waiters;          /* processes blocked in walq_wait */
    uint64_t alloc_off;        /* bytes of the active segment preallocated so far */
    uint64_t reserve_seq;      /* end_seq once the write in progress is published */
    uint64_t busy;             /* nonzero while a roll rewrites this block */
    uint32_t synced;           /* futex word: bumped when sync waiters should look again */
    uint32_t sync_waiters;     /* processes blocked in walq_wait_durable */
    uint64_t reserved[14];
};

typedef struct {
    uint64_t next_off;   /* where scanning stopped */
    uint64_t next_seq;   /* the sequence the next frame must carry */
    uint64_t count;      /* frames validated */
    int32_t status;      /* WALQ_SCAN_* */
} walq_scan_t;

uint64_t walq_hash(const char *data, size_t len, uint64_t seed);
uint64_t walq_frame_size(uint32_t len);

/* Frame `n` records (payloads concatenated in `data`, lengths in `lens`,
 * types in `types` or all `type` when `types` is NULL) into `out`, which must
 * hold the sum of walq_frame_size(lens[i]).  Used by the I/O shim in tests
 * and by tools; the append path frames inline. */
uint64_t walq_frame(char *out, uint64_t salt, uint64_t seq0, size_t n,
                    const char *data, const uint32_t *lens,
                    const uint8_t *types, uint8_t type);

/* Append under the caller-held append lock: frames the batch and writes it
 * with pwritev at ctl->end_off of the active segment `fd` (whose base must
 * equal ctl->seg_base), then publishes the new end.  *seq0 receives the
 * first assigned sequence.  Returns WALQ_OK, WALQ_ESTALE, WALQ_EFULL,
 * WALQ_EALLOC, WALQ_EREPAIR or -errno. */
int walq_append_locked(struct walq_ctl *ctl, int fd, uint64_t seg_base,
                       size_t n, const char *data, const uint32_t *lens,
                       const uint8_t *types, uint8_t type, uint64_t *seq0);

/* The same, taking and releasing the append lock (flock on lockfd). */
int walq_append(struct walq_ctl *ctl, int lockfd, int fd, uint64_t seg_base,
                size_t n, const char *data, const uint32_t *lens,
                const uint8_t *types, uint8_t type, uint64_t *seq0);

/* One process's handle on the active segment, for the common append.
 * Python aims it (fd, seg_base) under its append thread lock whenever an
 * append goes the slow way; the C side re-checks seg_base under the append
 * lock, so a handle left on an old segment only sends the caller there.
 * fd < 0 (not aimed yet, or the log closed) always does. */
struct walq_writer {
    struct walq_ctl *ctl;
    int lockfd;
    int fd;
    uint64_t seg_base;
    uint64_t max_record;
};

/* walq_append of one record through a writer: its sequence, or -1 when the
 * caller must take the slow path (which also reports bad arguments): the
 * handle not aimed, a type outside 1-255, a record over max_record, a
 * poisoned log, or any walq_append result but WALQ_OK.  One call with four
 * arguments, because cffi's marshalling of ten was a third of an append. */
int64_t walq_append_one(struct walq_writer *w, const char *data, size_t len, int type);
/* walq_append_one for a caller that holds the append lock already. */
int64_t walq_append_one_locked(struct walq_writer *w, const char *data, size_t len, int type);

/* walq_append of a batch through a writer (WALQ_ESTALE when not aimed). */
int walq_writer_append(struct walq_writer *w, size_t n, const char *data,
                       const uint32_t *lens, const uint8_t *types, uint8_t type,
                       uint64_t *seq0);

/* walq_await_durable() results (besides -errno). */
#define WALQ_DURABLE 0     /* every record below `upto` is on stable storage */
#define WALQ_SYNC 1        /* the caller holds lock.sync: sync, then walq_sync_done */
#define WALQ_POISONED 5    /* an fsync failed somewhere: the log must be reopened */
#define WALQ_CLOSED 6      /* this handle was closed meanwhile */

/* One process's side of group commit on `lock.sync` (its descriptor is
 * sync_fd).  flock does not exclude threads that share a descriptor, so
 * `held` is the process-local claim a thread takes before trying the flock;
 * a thread that finds it taken raises `wanted`, and the claim's holder
 * publishes when it lets go, so that thread is not left waiting for a
 * publish that already happened. */
struct walq_syncer {
    struct walq_ctl *ctl;
    int sync_fd;
    uint32_t held;
    uint32_t wanted;
    uint32_t closed;
    int32_t sync_errno; /* walq_make_durable's failed fdatasync */
    uint64_t syncs;     /* fdatasyncs walq_make_durable ran */
};

/* Waits until every record below `upto` is durable, as PostgreSQL's
 * XLogFlush: a caller that takes lock.sync without blocking gets WALQ_SYNC
 * back and must fdatasync everything written so far, then call
 * walq_sync_done; everyone else sleeps on the `synced` futex (at most
 * timeout_ms, which covers a syncer killed mid-sync) and looks again.
 * The waiting runs here rather than in Python: with eight appenders, seven
 * of them wait each round. */
int walq_await_durable(struct walq_syncer *s, uint64_t upto, int timeout_ms);

/* Releases lock.sync and the claim, raises durable_seq to `target` (0: no
 * change) and wakes the waiters. */
void walq_sync_done(struct walq_syncer *s, uint64_t target);

/* walq_await_durable with the usual sync done here too, not in Python:
 * when the caller wins lock.sync and everything to sync lies in the active
 * segment `seg_base`, open on `fd` in this process, whose directory entry
 * is durable already, it fdatasyncs that descriptor itself, publishes and
 * looks again.  Otherwise it returns WALQ_SYNC with the lock held, as
 * walq_await_durable does (fd < 0 always does: the caller's I/O goes
 * through a shim the crash tests record).  WALQ_SYNCED: durable, and this
 * caller's own sync made it so.  A failed fdatasync poisons the log, lets
 * go of the lock and returns WALQ_SYNC_FAILED, its errno in s->sync_errno.
 * Saves the Python of a sync (~10 us of CPU per durable call alone). */
#define WALQ_SYNCED 2
#define WALQ_SYNC_FAILED 7
int walq_make_durable(struct walq_syncer *s, int fd, uint64_t seg_base, uint64_t upto,
                      int timeout_ms, int yields);

/* For close: marks the syncer closed and takes the claim for good,
 * blocking (on a futex) while another thread of the process holds it. */
void walq_syncer_seize(struct walq_syncer *s);

int walq_lock(int fd);      /* blocking flock(LOCK_EX); 0 or -errno */
int walq_try_lock(int fd);  /* flock(LOCK_EX|LOCK_NB); 0 got it, 1 held elsewhere, -errno */
int walq_unlock(int fd);
int walq_fdatasync(int fd); /* 0 or -errno; never retried */
int walq_zero(int fd, uint64_t off, uint64_t len);

/* Validate frames from `off` in a mapped segment.  Stops after `max`
 * frames, at a zero header, at a bad frame, or at `size`.  Each array that
 * is not NULL receives every frame's offset, payload length or type. */
int walq_scan(const char *base, uint64_t size, uint64_t off, uint64_t salt,
              uint64_t seq, uint64_t max, uint64_t *offs, uint32_t *lens,
              uint8_t *types, walq_scan_t *out);

/* walq_scan that also writes each frame's payload offset, length and type
 * to payload_offs, lens and types: a reader's run of frames not yet
 * indexed, checked once. */
int walq_scan_run(const char *base, uint64_t size, uint64_t off, uint64_t salt,
                  uint64_t seq, uint64_t max, uint64_t *offs, uint64_t *payload_offs,
                  uint32_t *lens, uint8_t *types, walq_scan_t *out);

/* First 8-aligned offset >= off holding a frame that validates with a
 * sequence >= min_seq, or UINT64_MAX: tells damage (valid data follows)
 * from a torn tail (nothing valid follows). */
uint64_t walq_find_valid(const char *base, uint64_t size, uint64_t off,
                         uint64_t salt, uint64_t min_seq);

/* Over every valid frame after `off` (sequence >= min_seq): the highest
 * durable point any of them recorded when it was written (seq - lag), and
 * in *found how many there are.  A damaged record below that point had been
 * synced: that is damage, not a torn tail. */
uint64_t walq_durable_after(const char *base, uint64_t size, uint64_t off,
                            uint64_t salt, uint64_t min_seq, uint64_t *found);

/* walq_check_run that also writes each frame's payload offset to
 * payload_offs: what a catch-up hands the index, with no Python list in
 * between. */
uint64_t walq_frames_run(const char *base, uint64_t size, uint64_t salt,
                         const uint64_t *offs, uint64_t seq0, uint64_t n,
                         uint64_t *payload_offs, uint32_t *lens, uint8_t *types);

/* Checks the frames at offs[0..n) (sequences seq0, seq0+1, ...), filling
 * their payload lengths and types; returns how many validated before the
 * first that does not (n if all do).  One call for a whole catch-up batch. */
uint64_t walq_check_run(const char *base, uint64_t size, uint64_t salt,
                        const uint64_t *offs, uint64_t seq0, uint64_t n,
                        uint32_t *lens, uint8_t *types);

/* Frames of scattered records in one segment, for a reader that wants a
 * handful at once (a receive).  offs[k] is the frame of seg_base + k, for
 * k < count.  For seqs[0], seqs[1], ... while each lies in
 * [max(seg_base, lo), seg_base + count): checks its frame and writes its
 * payload offset and length.  Returns how many it resolved before the first
 * sequence outside that range, or -(i + 1) if the frame of seqs[i] does not
 * validate. */
int64_t walq_frames_at(const char *base, uint64_t size, uint64_t salt,
                       const uint64_t *offs, uint64_t seg_base, uint64_t count,
                       uint64_t lo, const uint64_t *seqs, uint64_t n,
                       uint64_t *payload_offs, uint32_t *lens);

/* Checks one frame at `off`: (type << 32) | payload length, or -1. */
int64_t walq_frame_info(const char *base, uint64_t size, uint64_t off,
                        uint64_t salt, uint64_t seq);

/* Checks one frame at `off`; returns its payload length, or -1. */
int64_t walq_check(const char *base, uint64_t size, uint64_t off,
                   uint64_t salt, uint64_t seq, uint8_t *type);

uint64_t walq_load(const uint64_t *p);
void walq_store(uint64_t *p, uint64_t v);
/* Raise *p to v if it is lower (for durable_seq). */
void walq_store_max(uint64_t *p, uint64_t v);
/* The end a syncer syncs to: end_seq, read again after each sched_yield
 * (at most `yields`) while other appenders keep moving it. */
uint64_t walq_sync_target(struct walq_ctl *ctl, int yields);
/* 1 if less than `half` preallocated bytes are left past end_off and the
 * segment can take more: time to zero ahead. */
int walq_runway_low(struct walq_ctl *ctl, uint64_t half);
/* Stores v if *p still holds `expect`; 1 if it did. */
int walq_cas(uint64_t *p, uint64_t expect, uint64_t v);
uint32_t walq_notify_word(struct walq_ctl *ctl);
void walq_publish(struct walq_ctl *ctl);
/* Block until ctl->notify differs from `seen` or timeout_ms passes
 * (futex on Linux).  Releases the GIL through cffi. */
int walq_wait(struct walq_ctl *ctl, uint32_t seen, int timeout_ms);

/* Group commit (see Log._make_durable): whoever wins the sync lock with
 * walq_try_lock fdatasyncs for everyone; the others wait on `synced`
 * instead of queueing on the flock. */
uint32_t walq_synced_word(struct walq_ctl *ctl);
/* After releasing the sync lock: raise durable_seq to `durable` (0: leave
 * it), bump `synced` and wake every walq_wait_durable. */
void walq_durable_publish(struct walq_ctl *ctl, uint64_t durable);
/* Block while durable_seq < upto and `synced` still equals `seen`, at most
 * timeout_ms.  Returns 1 if durable_seq >= upto on return, else 0 (a sync
 * lock holder released it, the timeout passed, or a signal): the caller
 * re-checks and may try the sync lock.  Releases the GIL through cffi. */
int walq_wait_durable(struct walq_ctl *ctl, uint64_t upto, uint32_t seen, int timeout_ms);

/* Queue records (queue_records.c).  Encode `n` plain standard-queue SEND
 * payloads: bodies concatenated in `bodies` (lengths in `lens`), ids
 * prefix[0..8) || big-endian((count0 + i) * 0x9E3779B97F4A7C15), no
 * attributes, group or dedup id.  Writes the payloads back to back into
 * `out` (sum(lens) + 56 * n bytes), their lengths into `out_lens` and the
 * ids' 36-character texts, separated by commas, into `ids_text` (37n - 1
 * bytes).  Returns the bytes written to `out`. */
uint64_t walq_encode_sends(const char *bodies, const uint32_t *lens, size_t n,
                           const uint8_t *prefix, uint64_t count0,
                           double sent_at, double visible_at,
                           char *out, uint32_t *out_lens, char *ids_text);

/* The leading run of records that a standard queue's index adds in bulk
 * (Index.apply_frames): SENDs (type 1) visible at once (visible_at <=
 * sent_at) with no prior receives, each sent no earlier than the previous
 * one's time minus `slack` (the first compared with `last` if `has_last`).
 * Payload i is at base + offs[i], lens[i] bytes.  Fills sent[i] with each
 * one's sent_at; returns the run's length. */
size_t walq_plain_send_run(const char *base, const uint64_t *offs, const uint32_t *lens,
                           const uint8_t *types, size_t n, int has_last, double last,
                           double slack, double *sent);

/* A topic's fan-out (walq/topic/fanout.py): one publish copied into the
 * standard queues it reaches, one call for them all (per copy, Python spent
 * more than the write itself). */
struct walq_copy_target {
    struct walq_writer *writer;  /* the queue log's */
    const char *insert;          /* an envelope's UnsubscribeURL member, between head and tail */
    uint32_t insert_len;
    uint32_t raw;                /* 1: the message and its attributes as published (raw delivery) */
    double delay;                /* the queue's delivery delay, seconds */
    uint8_t uid[8];              /* the queue's uid, big-endian */
};

/* A copy's message id: the 16 canonical (big-endian) bytes of
 * XXH3-128(publish id:16 || queue uid:8 big-endian) (docs/format.md). */
void walq_copy_id(const uint8_t *message_id, const uint8_t *uid_be, uint8_t *out);

/* Writes the publish `message_id` into targets[idx[i]] (targets[i] when idx
 * is NULL) for i < n, each a SEND without group, dedup id or source (sent
 * `now`, visible now + delay): an envelope target's body is head, its
 * insert, tail; a raw target's is the message with `attrs` as its
 * attributes.  Each through walq_append_one (that log's append lock taken
 * and released); the caller holds each writer's process-local lock.  Stops
 * at the first copy that needs the slow path; returns how many were
 * written (their sequences in seqs unless NULL), or -2 out of memory. */
int64_t walq_fanout_publish(const struct walq_copy_target *targets, const uint32_t *idx, size_t n,
                            const uint8_t *message_id, double now,
                            const char *head, size_t head_len, const char *tail, size_t tail_len,
                            const char *message, size_t message_len, const char *attrs, size_t attrs_len,
                            int64_t *seqs);

/* A bus's copies into standard queues (walq/bus/outbox.py): copy i is a
 * SEND with message id ids[16 i, 16 i + 16), sent `now`, visible now +
 * delays[i], no attributes, group, dedup id or source, and the body at
 * bodies + offs[i] (lens[i] bytes), appended through writers[i]; each run
 * of copies with one writer is one walq_writer_append (that log's append
 * lock taken once).  The caller holds each writer's process-local lock.
 * Stops at the first run that needs the slow path; returns how many copies
 * were written before it, or -2 out of memory. */
int64_t walq_bus_copies(struct walq_writer *const *writers, const double *delays, size_t n,
                        const uint8_t *ids, const char *bodies, const uint64_t *offs,
                        const uint32_t *lens, double now);

/* The text forms a receive hands out, for `n` messages: each id's text
 * (from its 16 raw bytes at ids + 16 i; see walq_encode_sends) into
 * `ids_text`, and each receipt handle (walq/queue/receipts.py: hex16(uid)
 * hex16(seqs[i]) hex16(lease_seq) hex8(low 32 bits of XXH3-64 of those 48
 * characters)) into `receipts_text`; comma-separated, 37n - 1 and 57n - 1
 * bytes. */
void walq_receive_texts(const char *ids, const uint64_t *seqs, size_t n, uint64_t uid,
                        uint64_t lease_seq, char *ids_text, char *receipts_text);

/* Parses `n` receipt handles of 56 characters each, concatenated in `text`
 * (receipts.py): status[i] 0 if well formed and of queue `uid` (then
 * msg_seqs[i] and lease_seqs[i] hold its fields), 1 if malformed (not hex,
 * or the check does not match), 2 if it belongs to another queue. */
void walq_parse_receipts(const char *text, size_t n, uint64_t uid,
                         uint64_t *msg_seqs, uint64_t *lease_seqs, uint8_t *status);

/* The index of a standard queue (qindex.c; walq/queue/native_index.py):
 * walq/queue/index.py's Index for fifo=False, in C.  Functions returning
 * int give 0 on success, -2 when memory runs out, and -1 (or, from
 * walq_qx_apply_run, -3 - i for record i) for a malformed record. */
#define WALQ_QX_VISIBLE 0
#define WALQ_QX_DELAYED 1
#define WALQ_QX_INFLIGHT 2

struct walq_qx;

/* Read in place by Python (native_index.py). */
struct walq_qx_stats {
    int64_t counts[3];   /* messages VISIBLE, DELAYED, INFLIGHT */
    uint64_t live;       /* live messages */
    uint64_t ops;        /* message operations applied (checkpoint pacing) */
};

struct walq_qx_view {
    int state;
    int has_recv;
    uint32_t count;
    uint32_t prior;
    double first;
    uint64_t lease_seq;
    double deadline;
    uint64_t orig;
};

/* A checkpoint's tables as columns (walq/queue/checkpoint.py names them);
 * rows[] gives each table's length, in the order: state, ret, delayed,
 * lease, recv, prior, late, redirect, orig. */
struct walq_qx_columns {
    int64_t *state_seq; uint8_t *state_val;
    int64_t *ret_seq; double *ret_at;
    double *delayed_at; int64_t *delayed_seq;
    int64_t *lease_msg; int64_t *lease_seq; double *lease_deadline;
    int64_t *recv_msg; int64_t *recv_count; double *recv_first;
    int64_t *prior_msg; int64_t *prior_count;
    double *late_at; int64_t *late_seq;
    int64_t *redirect_old; int64_t *redirect_new;
    int64_t *orig_seq; int64_t *orig_orig;
    uint64_t rows[9];
};

struct walq_qx *walq_qx_new(void);
void walq_qx_free(struct walq_qx *x);
struct walq_qx_stats *walq_qx_stats(struct walq_qx *x);
/* Index.apply: one record's payload. */
int walq_qx_apply(struct walq_qx *x, uint64_t seq, int type, const char *p, size_t len);
/* Index.apply_run: records seq0 .. seq0 + n, payload i at base + offs[i]. */
int64_t walq_qx_apply_run(struct walq_qx *x, const char *base, const uint64_t *offs,
                          const uint32_t *lens, const uint8_t *types, size_t n, uint64_t seq0);
/* Index.add_sends: plain SENDs seq0 .. seq0 + n. */
int walq_qx_add_sends(struct walq_qx *x, uint64_t seq0, uint64_t n, double sent, double vis);
int walq_qx_sweep(struct walq_qx *x, double now, double retention);
/* 1 and *out set if a lease or delay ends at some time, else 0. */
int walq_qx_next_event(struct walq_qx *x, double *out);
/* Up to n visible messages into out, lowest first; returns how many.
 * With take they leave the visible heap (see Index.candidates). */
int64_t walq_qx_candidates(struct walq_qx *x, size_t n, int take, uint64_t *out);
int walq_qx_give_back(struct walq_qx *x, const uint64_t *seqs, size_t n);
void walq_qx_remove(struct walq_qx *x, uint64_t m);
uint64_t walq_qx_resolve(struct walq_qx *x, uint64_t m);
/* For each of seqs: its receive count (the receives carried in if never
 * received here), first receive time (0.0 if none) and original sequence;
 * 0, 0.0 and itself for a message that is not live. */
void walq_qx_describe(struct walq_qx *x, const uint64_t *seqs, size_t n,
                      uint32_t *counts, double *firsts, uint64_t *origs);
/* A standard queue's receive in one call (walq_qx_receive): the caller
 * holds the log's append lock and has caught the index up to the log's end
 * (`applied`) and swept it.  Inputs first; the outputs hold up to
 * WALQ_QX_RECV_MAX messages. */
#define WALQ_QX_RECV_MAX 32
/* One message a native receive leased and applied, in the layout Python's
 * struct module reads in one pass (walq/queue/queue.py, _GOT: "=ddQIII4x"). */
struct walq_qx_got {
    double sent;      /* send time */
    double first;     /* first receive time (the SEND's own, carried from another queue, if it has one) */
    uint64_t off;     /* plain: the body's offset in the segment; else the SEND payload's */
    uint32_t size;    /* and its length */
    uint32_t count;   /* receive count */
    uint32_t plain;   /* 1 if the body is all that follows the head */
};

struct walq_qx_recv {
    struct walq_writer *writer;       /* the log's, aimed at the active segment */
    const char *base;                 /* the segment to read the messages from */
    uint64_t size, salt, seg_base, count, first_seq;
    const uint64_t *offs;             /* its frame index: offs[k] for seg_base + k, k < count */
    double now, deadline;             /* the lease runs to `deadline` */
    double expired;                   /* sent at or before this: never delivered */
    uint64_t uid, applied;
    uint32_t max_receives;            /* a redrive policy's: a message past it takes the general path (0: none) */
    uint64_t lease_seq;               /* out: the LEASE record's sequence */
    int32_t folded;                   /* out: 1 if it was applied to the index here */
    int32_t locked;                   /* in/out: walq_qx_receive_now holds the append lock */
    uint64_t seqs[WALQ_QX_RECV_MAX];  /* out: the messages leased */
    uint64_t poffs[WALQ_QX_RECV_MAX]; /* out: their payloads in the segment */
    uint32_t lens[WALQ_QX_RECV_MAX];
    struct walq_qx_got got[WALQ_QX_RECV_MAX]; /* out, if folded: what a Message takes, */
    char ids_text[37 * WALQ_QX_RECV_MAX];      /* id texts, comma-separated, */
    char receipts_text[57 * WALQ_QX_RECV_MAX]; /* receipt handles (walq_receive_texts) */
};
/* Takes up to n (<= WALQ_QX_RECV_MAX) visible messages, checks their frames
 * in the given segment, writes and applies one LEASE record for all of them
 * and fills in the outputs.  Returns how many were leased (0: none visible);
 * -1 when the caller must take the general path instead, with nothing
 * changed (a message outside the segment, expired, due for the dead-letter
 * queue, or a frame that does not validate; an append that needs the slow
 * path); WALQ_QX_RECV_UNINDEXED,
 * with nothing changed, when a message lies past the frames the segment's
 * index holds (the caller's own appends, folded in without being read:
 * index them and call again); -2 out of memory. */
#define WALQ_QX_RECV_UNINDEXED -3
int64_t walq_qx_receive(struct walq_qx *x, struct walq_qx_recv *r, size_t n);
/* walq_qx_receive with everything around it, for a caller that holds only
 * its own process's locks: returns 0 at once if nothing is visible and
 * nothing falls due by r->now; else takes the append lock (r->writer's
 * lockfd), sweeps to r->now with `retention`, receives and unlocks.
 * Returns WALQ_QX_RECV_STALE, with nothing changed, if the log holds
 * records past r->applied: with r->locked = 0 if found before the lock was
 * taken (or it could not be taken), else with the lock held and
 * r->locked = 1, for the caller to catch up and call again (then only the
 * sweep and the receive remain; still stale, it unlocks and says STALE
 * again).  Otherwise as walq_qx_receive, unlocked (the sweep stands either
 * way). */
#define WALQ_QX_RECV_STALE -4
int64_t walq_qx_receive_now(struct walq_qx *x, struct walq_qx_recv *r, size_t n, double retention);

/* A standard queue's delete_batch in one call, for n <= WALQ_QX_DOOMED_MAX
 * well-formed handles of 56 characters concatenated in `text`: parses them
 * (walq_parse_receipts) and writes to `out` each message still live
 * (through redirects) or not yet applied (seq >= applied), once, in the
 * order given: the DELETE record's payload.  Returns how many, or -1 if any
 * handle is malformed or of another queue, or n is too large (the caller
 * then takes the slow way, which says which). */
#define WALQ_QX_DOOMED_MAX 64
int64_t walq_qx_doomed(struct walq_qx *x, const char *text, size_t n, uint64_t uid,
                       uint64_t applied, uint64_t *out);
/* walq_qx_doomed, then the DELETE record written (walq_append_one: it
 * takes the append lock) and, if it landed at `applied`, applied: the
 * caller holds its own process's locks and applied = the index's position.
 * Returns how many messages the record names (0: none, nothing written)
 * and its sequence in *seq; -1 as walq_qx_doomed; WALQ_QX_DELETE_SLOW
 * with nothing written when the append needs the slow path; -2 out of
 * memory after the write. */
#define WALQ_QX_DELETE_SLOW -5
int64_t walq_qx_delete_now(struct walq_qx *x, struct walq_writer *w, const char *text, size_t n,
                           uint64_t uid, uint64_t applied, uint64_t *seq);

/* `n` plain SENDs, encoded by walq_encode_sends, written through the log's
 * writer (walq_writer_append: it takes the append lock) and, if they landed
 * at `applied`, added to the index (walq_qx_add_sends): the caller holds
 * its own process's locks.  Returns 1 if added, 0 if written only (the
 * first sequence in *seq either way), WALQ_QX_APPEND_SLOW if the append
 * needs the slow path (as walq_writer_append's failure), -2 out of memory
 * after the write. */
#define WALQ_QX_APPEND_SLOW -6
int walq_qx_append_sends(struct walq_qx *x, struct walq_writer *w, size_t n, const char *data,
                         const uint32_t *lens, uint64_t applied, double sent_at, double visible_at,
                         uint64_t *seq);

/* Those of seqs that name a live message (through redirects) or lie at or
 * above `applied` (not yet seen), in order, into out; returns how many. */
size_t walq_qx_select_live(struct walq_qx *x, const uint64_t *seqs, size_t n, uint64_t applied,
                           uint64_t *out);
/* 1 and *out filled if m is live, else 0. */
int walq_qx_get(struct walq_qx *x, uint64_t m, struct walq_qx_view *out);
int walq_qx_min_live(struct walq_qx *x, uint64_t *out);
int walq_qx_oldest_sent(struct walq_qx *x, double *out);
/* The live sequences below `below`, ascending, into out (room for max);
 * returns how many, or max + 1 as soon as there are more than max (then
 * out holds nothing useful): a compaction that rewrites only a few pinning
 * messages need not list a million. */
int64_t walq_qx_live_seqs(struct walq_qx *x, uint64_t below, uint64_t max, uint64_t *out);
/* Upper bounds of each table's rows (for the caller's arrays). */
void walq_qx_bounds(struct walq_qx *x, uint64_t out[9]);
int walq_qx_export(struct walq_qx *x, struct walq_qx_columns *c);
/* Into a new, empty index; -1 if the columns contradict each other. */
int walq_qx_import(struct walq_qx *x, const struct walq_qx_columns *c);
/* Redirect chains are pruned once 2 x live links + `floor` pile up (1024);
 * tests set a tiny floor so that pruning runs at every step. */
void walq_qx_set_prune_floor(struct walq_qx *x, size_t floor);
