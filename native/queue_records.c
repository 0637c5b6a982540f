/* Queue records in bulk: encoding a standard queue's send_batch of plain
 * bodies, and finding the runs of plain sends a catch-up adds in bulk (the
 * layout is walq/queue/records.py's SEND; docs/format.md, "Queue records").
 * Also the id and receipt texts a receive hands out.  Included by the cffi
 * source after walq.c.
 *
 * In Python each took about a microsecond a message: building payloads and
 * id strings one at a time capped send_batch(100) well below the disk's
 * limit, and every process replays every send. */

#define WALQ_SEND_HEAD 56      /* id:16 sent:f64 visible:f64 first:f64 u32 u32 u16 u16 u16 pad:u16 */
/* Field offsets in that head. */
#define WALQ_SEND_SENT 16
#define WALQ_SEND_VISIBLE 24
#define WALQ_SEND_FIRST 32     /* first received at, carried from another queue (0: none) */
#define WALQ_SEND_PRIOR 40
#define WALQ_SEND_LENS 44      /* u32 attributes, u16 group, dedup id, source: all 0 for a plain body */
#define WALQ_SEND_LENS_SIZE 10
#define WALQ_ID_MIX 0x9E3779B97F4A7C15ULL

static const char HEXDIGITS[] = "0123456789abcdef";

static void put_hex(char *out, const uint8_t *raw, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEXDIGITS[raw[i] >> 4];
        out[2 * i + 1] = HEXDIGITS[raw[i] & 15];
    }
}

/* A plain SEND's head: no attributes, group, dedup id or source; `id`
 * (16 bytes) unless NULL, when the caller writes it. */
static void put_send_head(char *p, const uint8_t *id, double sent, double visible)
{
    memset(p, 0, WALQ_SEND_HEAD);
    if (id)
        memcpy(p, id, 16);
    memcpy(p + WALQ_SEND_SENT, &sent, 8);
    memcpy(p + WALQ_SEND_VISIBLE, &visible, 8);
}

/* The text form "8-4-4-4-12" of a 16-byte id (ids.format_id). */
static void put_id_text(char *out, const uint8_t raw[16])
{
    put_hex(out, raw, 4);
    out[8] = '-';
    put_hex(out + 9, raw + 4, 2);
    out[13] = '-';
    put_hex(out + 14, raw + 6, 2);
    out[18] = '-';
    put_hex(out + 19, raw + 8, 2);
    out[23] = '-';
    put_hex(out + 24, raw + 10, 6);
}

uint64_t walq_encode_sends(const char *bodies, const uint32_t *lens, size_t n,
                           const uint8_t *prefix, uint64_t count0,
                           double sent_at, double visible_at,
                           char *out, uint32_t *out_lens, char *ids_text)
{
    char *p = out;
    for (size_t i = 0; i < n; i++) {
        uint8_t id[16];
        /* Same mixing as ids.IdGenerator.next: an odd multiplier is a
         * bijection mod 2**64, so distinct counts give distinct ids. */
        uint64_t mixed = (count0 + i) * WALQ_ID_MIX;
        memcpy(id, prefix, 8);
        for (int b = 0; b < 8; b++)
            id[8 + b] = (uint8_t)(mixed >> (56 - 8 * b));  /* big-endian */
        put_send_head(p, id, sent_at, visible_at);
        memcpy(p + WALQ_SEND_HEAD, bodies, lens[i]);
        bodies += lens[i];
        out_lens[i] = WALQ_SEND_HEAD + lens[i];
        p += WALQ_SEND_HEAD + lens[i];
        put_id_text(ids_text + 37 * i, id);
        if (i + 1 < n)
            ids_text[37 * i + 36] = ',';  /* str.split(",") makes the list */
    }
    return (uint64_t)(p - out);
}

void walq_copy_id(const uint8_t *message_id, const uint8_t *uid_be, uint8_t *out)
{
    uint8_t in[24];
    memcpy(in, message_id, 16);
    memcpy(in + 16, uid_be, 8);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(in, sizeof in));
    memcpy(out, c.digest, 16);
}

int64_t walq_fanout_publish(const struct walq_copy_target *targets, const uint32_t *idx, size_t n,
                            const uint8_t *message_id, double now,
                            const char *head, size_t head_len, const char *tail, size_t tail_len,
                            const char *message, size_t message_len, const char *attrs, size_t attrs_len,
                            int64_t *seqs)
{
    /* An envelope is well under 4 KiB unless the message is large: then
     * one allocation serves the rest of the call. */
    char small[4096];
    char *buf = small;
    size_t cap = sizeof small;
    size_t i;
    for (i = 0; i < n; i++) {
        const struct walq_copy_target *t = &targets[idx ? idx[i] : i];
        size_t alen = t->raw ? attrs_len : 0;
        size_t blen = t->raw ? message_len : head_len + t->insert_len + tail_len;
        size_t len = WALQ_SEND_HEAD + alen + blen;
        if (len > cap) {
            char *bigger = malloc(len);
            if (!bigger) {
                i = (size_t)-1;
                break;
            }
            if (buf != small)
                free(buf);
            buf = bigger;
            cap = len;
        }
        put_send_head(buf, NULL, now, now + t->delay);
        walq_copy_id(message_id, t->uid, (uint8_t *)buf);
        put32(buf + WALQ_SEND_LENS, (uint32_t)alen);
        char *p = buf + WALQ_SEND_HEAD;
        if (t->raw) {
            memcpy(p, attrs, alen);
            memcpy(p + alen, message, message_len);
        } else {
            memcpy(p, head, head_len);
            memcpy(p + head_len, t->insert, t->insert_len);
            memcpy(p + head_len + t->insert_len, tail, tail_len);
        }
        int64_t seq = walq_append_one(t->writer, buf, len, 1 /* SEND */);
        if (seq < 0)
            break;  /* the caller writes this one the slow way */
        if (seqs)
            seqs[i] = seq;
    }
    if (buf != small)
        free(buf);
    return i == (size_t)-1 ? -2 : (int64_t)i;
}

int64_t walq_bus_copies(struct walq_writer *const *writers, const double *delays, size_t n,
                        const uint8_t *ids, const char *bodies, const uint64_t *offs,
                        const uint32_t *lens, double now)
{
    /* A run of copies into one queue is one walq_writer_append (its append
     * lock taken once, not once a copy).  A few events' worth fit on the
     * stack; more take one allocation that serves the rest of the call. */
    char small[8192];
    uint32_t small_lens[64];
    char *buf = small;
    uint32_t *run_lens = small_lens;
    size_t cap = sizeof small, lens_cap = 64;
    size_t i = 0;
    int oom = 0;
    while (i < n) {
        size_t j = i, total = 0;
        while (j < n && writers[j] == writers[i]) {
            total += WALQ_SEND_HEAD + (size_t)lens[j];
            j++;
        }
        if (total > cap) {
            char *bigger = malloc(total);
            if (!bigger) {
                oom = 1;
                break;
            }
            if (buf != small)
                free(buf);
            buf = bigger;
            cap = total;
        }
        if (j - i > lens_cap) {
            uint32_t *more = malloc((j - i) * sizeof *more);
            if (!more) {
                oom = 1;
                break;
            }
            if (run_lens != small_lens)
                free(run_lens);
            run_lens = more;
            lens_cap = j - i;
        }
        char *p = buf;
        for (size_t m = i; m < j; m++) {
            put_send_head(p, ids + 16 * m, now, now + delays[m]);
            memcpy(p + WALQ_SEND_HEAD, bodies + offs[m], lens[m]);
            run_lens[m - i] = WALQ_SEND_HEAD + lens[m];
            p += WALQ_SEND_HEAD + lens[m];
        }
        uint64_t seq0;
        if (walq_writer_append(writers[i], j - i, buf, run_lens, NULL, 1 /* SEND */, &seq0) != WALQ_OK)
            break;  /* the caller writes copy i the slow way */
        i = j;
    }
    if (buf != small)
        free(buf);
    if (run_lens != small_lens)
        free(run_lens);
    return oom ? -2 : (int64_t)i;
}

size_t walq_plain_send_run(const char *base, const uint64_t *offs, const uint32_t *lens,
                           const uint8_t *types, size_t n, int has_last, double last,
                           double slack, double *sent)
{
    size_t i;
    for (i = 0; i < n; i++) {
        const char *p = base + offs[i];
        double s, v;
        uint32_t prior;
        if (types[i] != 1 || lens[i] < WALQ_SEND_HEAD)
            break;
        memcpy(&s, p + WALQ_SEND_SENT, 8);
        memcpy(&v, p + WALQ_SEND_VISIBLE, 8);
        memcpy(&prior, p + WALQ_SEND_PRIOR, 4);
        /* Written as negations so that a NaN time stops the run, as the
         * Python comparisons it replaces would. */
        if (!(v <= s) || prior != 0 || (has_last && !(s >= last - slack)))
            break;
        sent[i] = s;
        last = s;
        has_last = 1;
    }
    return i;
}

static void put_hex64(char *out, uint64_t v)
{
    for (int i = 15; i >= 0; i--) {
        out[i] = HEXDIGITS[v & 15];
        v >>= 4;
    }
}

static void put_hex32(char *out, uint32_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = HEXDIGITS[v & 15];
        v >>= 4;
    }
}

void walq_receive_texts(const char *ids, const uint64_t *seqs, size_t n, uint64_t uid,
                        uint64_t lease_seq, char *ids_text, char *receipts_text)
{
    for (size_t i = 0; i < n; i++) {
        char *r = receipts_text + 57 * i;
        put_id_text(ids_text + 37 * i, (const uint8_t *)ids + 16 * i);
        put_hex64(r, uid);
        put_hex64(r + 16, seqs[i]);
        put_hex64(r + 32, lease_seq);
        put_hex32(r + 48, (uint32_t)walq_hash(r, 48, 0));
        if (i + 1 < n) {
            ids_text[37 * i + 36] = ',';
            r[56] = ',';
        }
    }
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The big-endian value of `digits` hex characters, or -1 in *bad. */
static uint64_t parse_hex(const char *p, int digits, int *bad)
{
    uint64_t v = 0;
    for (int i = 0; i < digits; i++) {
        int d = hex_value(p[i]);
        if (d < 0) {
            *bad = 1;
            return 0;
        }
        v = (v << 4) | (uint64_t)d;
    }
    return v;
}

void walq_parse_receipts(const char *text, size_t n, uint64_t uid,
                         uint64_t *msg_seqs, uint64_t *lease_seqs, uint8_t *status)
{
    for (size_t i = 0; i < n; i++) {
        const char *r = text + 56 * i;
        int bad = 0;
        uint64_t owner = parse_hex(r, 16, &bad);
        uint64_t msg = parse_hex(r + 16, 16, &bad);
        uint64_t lease = parse_hex(r + 32, 16, &bad);
        uint64_t check = parse_hex(r + 48, 8, &bad);
        if (bad || check != (walq_hash(r, 48, 0) & 0xFFFFFFFFu))
            status[i] = 1;
        else if (owner != uid)
            status[i] = 2;
        else
            status[i] = 0;
        msg_seqs[i] = msg;
        lease_seqs[i] = lease;
    }
}
