"""Every framing path of the native core, at every size class, checked by an
independent reader.

The reader here parses segment files straight from disk and recomputes each
checksum with the ``xxhash`` package (docs/format.md: XXH3-64 seeded with the
segment's salt over header bytes 8..24 and the payload), so a checksum the C
code computes wrongly - not just inconsistently with its own reader - fails.

Sizes cover 0 to ~70 KB: the inline/iovec split at WALQ_INLINE_MAX, every
4 KiB boundary, and XXH3's own internal boundaries (16, 128, 240 bytes, the
256-byte buffer, the 1 KiB block), each with its neighbours, in batches that
mix small and large records.  Paths: walq_frame, write_batch's inline and
iovec parts (Log.append_batch, append_packed), walq_append_one and
walq_append_one_locked, walq_append_locked (the slow path, segment rolls),
and a queue's send / send_batch / receive / delete (queue_records.c and
qindex.c: walq_qx_append_sends, walq_qx_receive_now, walq_qx_delete_now).
"""

from __future__ import annotations

import glob
import os
import random
import struct

import pytest

import walq
from walq.log import format as F
from walq.log._native import ffi, lib
from walq.log.log import Log
from walq.log.options import LogOptions

xxhash = pytest.importorskip("xxhash")

HEADER = 24
INLINE_MAX = lib.WALQ_INLINE_MAX


def _around(points, spread=(0, 1, 7, 8, 9, 16, 24, 25)):
    out = set()
    for p in points:
        for d in spread:
            out.update((p - d, p + d))
    return out


# Payload sizes; the hashed length is 16 more (the header bytes after the checksum).
SIZES = sorted(s for s in _around(
    [0, 16, 128, 240, 256, 1024, INLINE_MAX - 16, INLINE_MAX, INLINE_MAX + 8]
    + [k * 4096 for k in range(1, 18)] + [70_000]) if 0 <= s <= 70_000)


def payload(size: int, tag: int) -> bytes:
    """Distinct, non-repeating bytes, so a misplaced range never hashes alike."""
    rng = random.Random(size * 1_000_003 + tag)
    return rng.randbytes(size)


def read_segments(directory) -> list[tuple[int, int, bytes]]:
    """Every record of every segment under ``directory``, as
    ``(seq, type, payload)``, checked against docs/format.md with the
    ``xxhash`` package; fails the test on the first record that does not."""
    out = []
    for path in sorted(glob.glob(os.path.join(os.fspath(directory), "**", "*.seg"), recursive=True)):
        raw = open(path, "rb").read()
        assert raw[:8] == b"WALQSEG1", path
        (hcheck,) = struct.unpack_from("<Q", raw, 56)
        assert xxhash.xxh3_64_intdigest(raw[:56], seed=0) == hcheck, f"{path}: header checksum"
        base, salt = struct.unpack_from("<QQ", raw, 16)
        off, seq = 64, base
        while off + HEADER <= len(raw):
            head = raw[off:off + HEADER]
            if head == bytes(HEADER):
                break
            check, length, rtype = struct.unpack_from("<QIB", head)
            (rseq,) = struct.unpack_from("<Q", head, 16)
            body = raw[off + HEADER:off + HEADER + length]
            assert len(body) == length, f"{path}@{off}: record runs past the file"
            want = xxhash.xxh3_64_intdigest(head[8:24] + body, seed=salt)
            assert check == want, f"{path}@{off}: record {rseq} of {length} bytes: checksum {check:#x}, want {want:#x}"
            assert rseq == seq, f"{path}@{off}: seq {rseq}, want {seq}"
            end = off + ((HEADER + length + 7) & ~7)
            assert raw[off + HEADER + length:end] == bytes(end - off - HEADER - length), f"{path}@{off}: padding"
            out.append((rseq, rtype, body))
            off, seq = end, seq + 1
    return out


def batches(rng: random.Random, sizes: list[int], most: int = 6) -> list[list[int]]:
    """The sizes shuffled into batches of 1..most, each mixing small and large."""
    sizes = sizes[:]
    rng.shuffle(sizes)
    out = []
    while sizes:
        k = rng.randint(1, most)
        out.append(sizes[:k])
        del sizes[:k]
    return out


# -- the log's paths ---------------------------------------------------------------


@pytest.fixture(params=[256 * 1024, 64 * 1024 * 1024], ids=["small-segments", "one-segment"])
def log(tmp_path, request):
    lg = Log.open(tmp_path / "log", LogOptions(durability="os", segment_size=request.param))
    yield lg
    lg.close()


def test_walq_frame_matches_the_format_at_every_size():
    salt = 0x1234_5678_9ABC_DEF1
    for size in SIZES:
        p = payload(size, 1)
        framed = F.frame([p, b"x", p], salt, 40)
        off = 0
        for seq, want in ((40, p), (41, b"x"), (42, p)):
            check, length = struct.unpack_from("<QI", framed, off)
            assert length == len(want)
            assert framed[off + HEADER:off + HEADER + length] == want
            assert check == xxhash.xxh3_64_intdigest(framed[off + 8:off + 24] + want, seed=salt), (size, seq)
            off += (HEADER + length + 7) & ~7


def test_every_append_path_writes_checksums_the_format_defines(log):
    rng = random.Random(7)
    written = []

    def expect(seqs, bodies):
        written.extend(zip(seqs, bodies))

    for i, size in enumerate(SIZES):
        p = payload(size, 2)
        expect([log.append(p, type=1 + i % 200)], [p])                  # walq_append_one
    for group in batches(rng, SIZES):
        ps = [payload(s, 3) for s in group]
        expect(log.append_batch(ps), ps)                                 # write_batch: inline + iovec
    for group in batches(rng, SIZES):
        ps = [payload(s, 4) for s in group]
        lens = ffi.new("uint32_t[]", [len(p) for p in ps])
        expect(log.append_packed(len(ps), b"".join(ps), lens, 9), ps)    # append_packed
    for group in batches(rng, SIZES, most=3):
        ps = [payload(s, 5) for s in group]
        with log.locked() as tx:
            seqs = [tx.append(p) for p in ps]                            # walq_append_one_locked
            seqs += list(tx.append_batch(ps))                            # walq_append_locked
        expect(seqs, ps + ps)
    on_disk = {seq: body for seq, _t, body in read_segments(log.path)}
    for seq, body in written:
        assert on_disk[seq] == body, seq
    # And the library's own reader agrees with the independent one.
    for seq, body in written[:: max(1, len(written) // 200)]:
        assert log.read(seq).payload == body


def test_a_large_record_after_other_native_calls_keeps_its_checksum(tmp_path):
    """The sequence that left an uninitialised XXH3 state holding the salt
    on the stack: a record over WALQ_INLINE_MAX, a receive and a
    delete_batch (whose native calls overwrote the derived secret but not
    the seed beside it), then another large record, which was hashed with
    stack garbage as its secret.  Every later reader then raised
    CorruptionError on a record that had been written whole."""
    broker = walq.open(tmp_path / "data", durability="os")
    try:
        q = broker.create_queue("q", visibility_timeout=60)
        big = [payload(5000 + i, 6) for i in range(4)]
        q.send(b"small")
        q.send(big[0])
        got = q.receive(max_messages=2)
        q.delete_batch([m.receipt for m in got])
        q.send(big[1])
        got = q.receive(max_messages=2)
        for m in got:
            m.change_visibility(0)
        q.send_batch([big[2], b"tiny"])
        q.send(big[3], attributes={"k": "v"})
        read_segments(tmp_path / "data")
        seen = set()
        for _ in range(10):
            for m in q.receive(max_messages=10):
                seen.add(m.body)
                m.ack()
        assert set(big[1:3]) <= seen
    finally:
        broker.close()


def test_queue_paths_at_every_size(tmp_path):
    broker = walq.open(tmp_path / "data", durability="os", segment_size=256 * 1024)
    rng = random.Random(11)
    try:
        q = broker.create_queue("q", visibility_timeout=60)
        fifo = broker.create_queue("q.fifo", content_based_dedup=True)
        sizes = [s for s in SIZES if s > 0]
        sent = set()
        for i, size in enumerate(sizes):
            body = payload(size, 8)
            step = i % 6
            if step == 0:
                q.send(body)                                              # walq_append_one
            elif step == 1:
                q.send(body, attributes={"n": i})                         # attributes: encode in Python
            elif step == 2:
                other = payload(rng.choice(sizes), 9)
                q.send_batch([body, other])                               # walq_qx_append_sends
                sent.add(other)
            elif step == 3:
                q.send_batch([{"body": body, "delay": 0}])               # the general batch
            elif step == 4:
                fifo.send(body, group=f"g{i % 3}")                         # FIFO: under the lock
            else:
                got = q.receive(max_messages=3)                           # walq_qx_receive_now
                q.delete_batch([m.receipt for m in got])                  # walq_qx_delete_now
                got = fifo.receive(max_messages=2)
                fifo.delete_batch([m.receipt for m in got])
                q.send(body)
            sent.add(body)
            read_segments(tmp_path / "data")
        records = read_segments(tmp_path / "data")
        stored = b"".join(body for _s, t, body in records if t == 1)
        for body in sent:
            assert body in stored
        # Everything left reads back through the library too.
        for queue in (q, fifo):
            for _ in range(200):
                got = queue.receive(max_messages=10)
                if not got:
                    break
                for m in got:
                    assert m.body in sent
                queue.delete_batch([m.receipt for m in got])
    finally:
        broker.close()
