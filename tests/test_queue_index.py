"""The index's two ways of applying records agree: one record at a time
(apply, as a process folds in its own writes) and in runs straight from the
log's map (apply_frames, the catch-up path with inlined LEASE and DELETE)."""

from __future__ import annotations

import random

import pytest

from walq.queue import checkpoint as ckpt
from walq.queue import records as R
from walq.queue.index import Index


@pytest.fixture(autouse=True)
def python_index(monkeypatch):
    """These tests pin the Python Index (FIFO queues' and the fallback's),
    so decode builds one for standard queues too; the native index has its
    own differential tests (test_queue_native_index.py)."""
    monkeypatch.setenv("WALQ_INDEX", "python")


def random_records(rng: random.Random, n: int) -> list[tuple[int, bytes]]:
    """A plausible standard-queue history: sends, receives, deletes (some of
    messages already gone or never leased), visibility changes, rewrites."""
    out: list[tuple[int, bytes]] = []
    sends: list[int] = []
    leases: dict[int, int] = {}
    now = 1000.0
    for seq in range(n):
        now += rng.random()
        roll = rng.random()
        if roll < 0.4 or not sends:
            # Mostly plain sends (added in bulk on catch-up); some delayed,
            # some carrying receives from another queue, some sent well
            # before the last one (a moved-in message keeps its send time),
            # some a little before it (concurrent senders' clocks).
            kind = rng.random()
            delay = 5.0 if kind < 0.1 else 0.0
            prior = 2 if 0.1 <= kind < 0.15 else 0
            sent = now - 3.0 if 0.15 <= kind < 0.2 else now - 0.5 if 0.2 <= kind < 0.25 else now
            out.append((R.SEND, R.encode_send(seq.to_bytes(16, "big"), sent, sent + delay, b"body",
                                              prior_receives=prior)))
            sends.append(seq)
        elif roll < 0.65:
            picks = rng.sample(sends, min(len(sends), rng.randint(1, 10)))
            out.append((R.LEASE, R.encode_lease(now, [(m, now + rng.choice([0.5, 30.0])) for m in picks])))
            for m in picks:
                leases[m] = seq
        elif roll < 0.85:
            picks = rng.sample(sends, min(len(sends), rng.randint(1, 10)))
            out.append((R.DELETE, R.encode_seqs(picks)))
        elif roll < 0.92 and leases:
            m = rng.choice(list(leases))
            out.append((R.CHVIS, R.encode_chvis([(m, leases[m], now + 10.0)])))
        else:
            old = rng.choice(sends)
            # A rewrite: the copy's SEND, then the CARRY naming it.
            out.append((R.SEND, R.encode_send(seq.to_bytes(16, "big"), now, now, b"copy")))
            sends.append(seq)
            out.append((R.CARRY, R.encode_carry([(seq, old, leases.get(old, 0), now + 30.0, old)])))
    return out


class Reference(Index):
    """The index with LEASE and DELETE applied through the general helpers
    (_lease, remove: the FIFO path) rather than the inlined fast paths under test."""

    _apply_lease = Index._apply_lease_fifo

    def _apply_delete(self, payload):
        for m in R.decode_seqs(payload):  # apply()'s general DELETE path
            self.remove(self.resolve(m))


def apply_one_by_one(records) -> Index:
    idx = Reference(fifo=False)
    for seq, (t, p) in enumerate(records):
        idx.apply(seq, t, p)
    return idx


def apply_in_runs(records, run: int) -> Index:
    idx = Index(fifo=False)
    seq = 0
    while seq < len(records):
        chunk = records[seq : seq + run]
        buf, offs, lens, types = b"", [], [], []
        for t, p in chunk:
            offs.append(len(buf))
            lens.append(len(p))
            types.append(t)
            buf += p
        idx.apply_frames(buf, seq, offs, lens, types)
        seq += len(chunk)
    return idx


def view(idx: Index, now: float):
    idx.sweep(now, 1e6)
    live = idx.state
    retention = [(m, t) for m, t in zip(idx.ret_seq[idx.ret_head :], idx.ret_at[idx.ret_head :]) if m in live]
    return (dict(idx.state), list(idx.counts), dict(idx.leases), dict(idx.receives), dict(idx.redirect),
            dict(idx.prior), retention, sorted(e for e in idx.ret_late if e[1] in live), idx.oldest_sent(),
            idx.candidates(10_000), idx.applied)


@pytest.mark.parametrize("seed", range(12))
def test_apply_frames_agrees_with_apply(seed):
    rng = random.Random(seed)
    records = random_records(rng, 400)
    one = apply_one_by_one(records)
    runs = apply_in_runs(records, rng.randint(1, 64))
    assert runs.ops == one.ops  # checkpoint pacing counts the same work
    for now in (1000.0, 1200.0, 5000.0):  # before and after leases and delays run out
        assert view(runs, now) == view(one, now)
    assert one.state, "the history should leave some messages live"

    # And both survive a checkpoint round trip unchanged.
    again = ckpt.decode(ckpt.encode(runs), "memory")
    assert view(again, 6000.0) == view(one, 6000.0)


def test_a_delete_naming_a_rewritten_message_removes_its_copy():
    idx = Index(fifo=False)
    idx.apply(0, R.SEND, R.encode_send(b"a" * 16, 1.0, 1.0, b"x"))
    idx.apply(1, R.LEASE, R.encode_lease(1.0, [(0, 31.0)]))
    idx.apply(2, R.SEND, R.encode_send(b"a" * 16, 1.0, 1.0, b"x"))
    idx.apply(3, R.CARRY, R.encode_carry([(2, 0, 1, 31.0, 0)]))
    assert set(idx.state) == {2}
    idx.apply_frames(R.encode_seqs([0]), 4, [0], [8], [R.DELETE])  # the old receipt's sequence
    assert idx.state == {} and idx.redirect == {}


def test_message_ids_text_and_raw_forms_agree_and_are_distinct():
    from walq.queue.ids import IdGenerator, format_id

    gen = IdGenerator()
    pairs = [gen.next() for _ in range(5000)]
    assert all(format_id(raw) == text and len(raw) == 16 for text, raw in pairs)
    assert len({text for text, _ in pairs}) == len(pairs)
    assert all(len(t) == 36 and t.count("-") == 4 for t, _ in pairs)


def test_the_native_batch_encoder_writes_the_records_and_ids_python_would():
    from walq.log._native import ffi, lib
    from walq.queue.ids import MIX, IdGenerator, format_id

    gen = IdGenerator()
    gen._batch_count = 2**64 - 2  # the counts wrap past 2**64 inside the batch
    bodies = [b"one", b"\x00" * 70, b"three"]
    n = len(bodies)
    data = b"".join(bodies)
    lens = ffi.new("uint32_t[]", [len(b) for b in bodies])
    out = ffi.new("char[]", len(data) + R.SEND_HEAD.size * n)
    out_lens = ffi.new("uint32_t[]", n)
    text = ffi.new("char[]", 37 * n - 1)
    count0 = gen.reserve(n)
    size = lib.walq_encode_sends(data, lens, n, gen.batch_prefix, count0, 10.5, 12.0, out, out_lens, text)
    texts = ffi.buffer(text)[:].decode().split(",")
    raw = ffi.buffer(out, size)[:]
    pos = 0
    for i, body in enumerate(bodies):
        rec = R.decode_send(raw[pos : pos + out_lens[i]])
        assert (rec.body, rec.sent_at, rec.visible_at, rec.attributes, rec.group) == (body, 10.5, 12.0, b"", None)
        mixed = ((count0 + i) * MIX) % 2**64
        assert rec.message_id == gen.batch_prefix + mixed.to_bytes(8, "big")
        assert format_id(rec.message_id) == texts[i]
        assert raw[pos : pos + out_lens[i]] == R.encode_send(rec.message_id, 10.5, 12.0, body)
        pos += out_lens[i]
    assert pos == size and len(set(texts)) == n
    # The next batch starts after this one (wrapped), and single ids live
    # under another prefix.
    assert gen.reserve(1) == (2**64 - 2 + n) % 2**64
    assert gen.next()[1][:8] != gen.batch_prefix


@pytest.mark.parametrize("sent, visible", [(100.0, 100.0), (100.0, 105.0), (90.0, 90.0), (99.5, 99.5)])
def test_folding_in_own_sends_equals_applying_their_records(sent, visible):
    # send_batch folds its own plain sends in directly (Index.add_sends).
    def base():
        idx = Index(fifo=False)
        idx.apply(0, R.SEND, R.encode_send(b"a" * 16, 100.0, 100.0, b"x"))
        return idx

    by_record, folded = base(), base()
    for seq in range(1, 4):
        by_record.apply(seq, R.SEND, R.encode_send(seq.to_bytes(16, "big"), sent, visible, b"x"))
    folded.add_sends(range(1, 4), sent, visible)
    assert folded.ops == by_record.ops and folded.applied == by_record.applied == 4
    for now in (100.0, 106.0):
        assert view(folded, now) == view(by_record, now)


def test_a_receives_texts_match_the_python_formats():
    from walq.queue import receipts
    from walq.queue.ids import format_id

    raw = [bytes(range(i, i + 16)) for i in (0, 100, 240 - 16)]
    seqs, uid, lease = [0, 2**40 + 7, 2**64 - 1], 0xDEADBEEF12345678, 12345
    ids, handles = receipts.receive_texts(uid, seqs, lease, b"".join(raw))
    assert ids == [format_id(r) for r in raw]
    assert handles == [receipts.encode(uid, m, lease) for m in seqs]
    assert [receipts.decode(h, uid) for h in handles] == [(m, lease) for m in seqs]


def test_receipts_decoded_in_bulk_agree_with_one_at_a_time():
    from walq.errors import InvalidReceipt
    from walq.queue import receipts

    uid = 77
    pairs = [(0, 1), (5, 16), (2**63 + 9, 2**64 - 1), (7, 7), (123456789, 42)]  # enough for the native path
    good = [receipts.encode(uid, m, lease) for m, lease in pairs]
    assert receipts.decode_many(good, uid) == pairs
    bad = [
        good[0][:-1] + ("0" if good[0][-1] != "0" else "1"),  # check digit
        good[1].upper(),
        receipts.encode(uid + 1, 5, 1),  # another queue
        good[2][:10] + "g" + good[2][11:],  # not hex
        " " * 56, "", 17, None, good[0] + "0",
    ]
    for mixed in (bad, good + bad, *([h] + good for h in bad)):
        got = receipts.decode_many(mixed, uid)
        for handle, result in zip(mixed, got):
            try:
                expected = receipts.decode(handle, uid)
            except InvalidReceipt as exc:
                assert isinstance(result, InvalidReceipt) and str(result) == str(exc)
            else:
                assert result == expected


def test_a_receive_s_lease_encoding_is_the_general_one_with_one_deadline():
    seqs = [7, 8, 12, 2**40 + 3]
    payload = R.encode_lease_all(100.25, seqs, 130.25)
    assert payload == R.encode_lease(100.25, [(m, 130.25) for m in seqs])
    assert R.decode_lease(payload) == (100.25, [(m, 130.25) for m in seqs])
