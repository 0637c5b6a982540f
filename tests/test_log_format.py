"""The byte layout (docs/format.md): frames, segment headers, names, checksums.

Every check compares walq's native code with the independent reading of the
grammar in tests/helpers.py (plain Python and the ``xxhash`` package).
"""

from __future__ import annotations

import os
import struct
import tempfile

import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    encode_frame,
    frame_size,
    frames,
    segment_header,
    segment_paths,
)
from walq.log import Log, LogOptions
from walq.log._native import ffi, lib
from walq.log.format import (
    decode_segment_header,
    encode_segment_header,
    frame,
    hash64,
    parse_segment_name,
    segment_name,
)

payloads = st.lists(st.binary(max_size=300), min_size=1, max_size=12)
salts = st.integers(0, 2**64 - 1)
seqs = st.integers(0, 2**62)
types = st.integers(1, 255)


def scan(buf: bytes, salt: int, seq: int, off: int = SEGMENT_HEADER_SIZE, max_records: int = 1 << 30):
    """Runs the native scanner over ``buf``; returns (result, [(off, len, type)])."""
    cbuf = ffi.from_buffer(buf)
    n = 64
    offs, lens, typs = ffi.new("uint64_t[]", n), ffi.new("uint32_t[]", n), ffi.new("uint8_t[]", n)
    res = ffi.new("walq_scan_t *")
    lib.walq_scan(cbuf, len(buf), off, salt, seq, min(max_records, n), offs, lens, typs, res)
    return res, [(offs[i], lens[i], typs[i]) for i in range(res.count)]


def test_hash64_is_xxh3_64():
    for data in (b"", b"a", b"walq" * 100):
        for seed in (0, 1, 2**64 - 1):
            assert hash64(data, seed) == xxhash.xxh3_64_intdigest(data, seed=seed)


def test_frame_size_is_header_plus_payload_padded_to_8():
    for n in range(0, 40):
        assert lib.walq_frame_size(n) == frame_size(n) == -(-(RECORD_HEADER_SIZE + n) // 8) * 8


@given(payloads, salts, seqs, types)
def test_frame_matches_the_format_grammar(batch, salt, seq0, type):
    expected = b"".join(encode_frame(p, seq0 + i, salt, type) for i, p in enumerate(batch))
    assert frame(batch, salt, seq0, type) == expected


@given(payloads, salts, seqs, types)
def test_framed_records_scan_back_exactly(batch, salt, seq0, type):
    buf = bytes(SEGMENT_HEADER_SIZE) + frame(batch, salt, seq0, type) + bytes(RECORD_HEADER_SIZE)
    res, found = scan(buf, salt, seq0)
    assert res.status == lib.WALQ_SCAN_END
    assert res.count == len(batch) and res.next_seq == seq0 + len(batch)
    off = SEGMENT_HEADER_SIZE
    for i, p in enumerate(batch):
        assert found[i] == (off, len(p), type)
        t = ffi.new("uint8_t *")
        assert lib.walq_check(ffi.from_buffer(buf), len(buf), off, salt, seq0 + i, t) == len(p)
        assert buf[off + RECORD_HEADER_SIZE : off + RECORD_HEADER_SIZE + len(p)] == p
        off += frame_size(len(p))


@given(st.binary(max_size=100), salts, seqs)
def test_a_frame_does_not_validate_under_another_salt_or_sequence(payload, salt, seq):
    buf = bytes(SEGMENT_HEADER_SIZE) + frame([payload], salt, seq)
    assert scan(buf, salt ^ 1, seq)[0].status == lib.WALQ_SCAN_BAD
    assert scan(buf, salt, seq + 1)[0].status == lib.WALQ_SCAN_BAD


def test_zero_header_is_the_end_of_data_and_a_short_tail_is_eof():
    salt, seq = 99, 5
    body = frame([b"abc"], salt, seq)
    res, _ = scan(bytes(SEGMENT_HEADER_SIZE) + body + bytes(100), salt, seq)
    assert (res.status, res.count) == (lib.WALQ_SCAN_END, 1)
    res, _ = scan(bytes(SEGMENT_HEADER_SIZE) + body + bytes(RECORD_HEADER_SIZE - 8), salt, seq)
    assert (res.status, res.count) == (lib.WALQ_SCAN_EOF, 1)


def test_every_flipped_byte_of_a_frame_fails_validation():
    salt, seq = 0x1234_5678_9ABC_DEF0, 77
    for payload in (b"", b"x", b"0123456789abc"):  # padding of 0, 7 and 3 bytes
        good = bytes(SEGMENT_HEADER_SIZE) + frame([payload], salt, seq)
        assert scan(good, salt, seq)[0].count == 1
        for i in range(SEGMENT_HEADER_SIZE, len(good)):
            for mask in (0x01, 0x80):
                bad = bytearray(good)
                bad[i] ^= mask
                res, _ = scan(bytes(bad), salt, seq)
                assert res.count == 0, f"flip at frame byte {i - SEGMENT_HEADER_SIZE} (payload {payload!r}) validated"


def test_segment_header_round_trips_and_matches_the_grammar():
    raw = encode_segment_header(1234, 0xDEADBEEF, 555)
    assert len(raw) == SEGMENT_HEADER_SIZE
    assert decode_segment_header(raw) == (1234, 0xDEADBEEF)
    magic, version, size, base, salt, created = struct.unpack_from("<8sIIQQQ", raw)
    assert (magic, version, size, base, salt, created) == (b"WALQSEG1", 1, 64, 1234, 0xDEADBEEF, 555)
    assert raw[40:56] == bytes(16)
    assert struct.unpack_from("<Q", raw, 56)[0] == xxhash.xxh3_64_intdigest(raw[:56])


def test_segment_header_with_any_flipped_byte_is_rejected():
    raw = encode_segment_header(7, 42, 1)
    for i in range(SEGMENT_HEADER_SIZE):
        bad = bytearray(raw)
        bad[i] ^= 0x10
        assert decode_segment_header(bytes(bad)) is None, f"flip at header byte {i} accepted"
    assert decode_segment_header(bytes(SEGMENT_HEADER_SIZE)) is None
    assert decode_segment_header(raw[:63]) is None


def test_segment_names_are_twenty_digit_bases():
    assert segment_name(0) == "00000000000000000000.seg"
    assert segment_name(12345) == "00000000000000012345.seg"
    assert parse_segment_name(segment_name(2**63)) == 2**63
    for other in ("log.ctl", "lock.open", "0000.seg", "00000000000000000000.seg.tmp", "torn-00000000000000000000-64.bin"):
        assert parse_segment_name(other) is None


records = st.lists(st.tuples(st.binary(max_size=2000), types, st.booleans()), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records, st.sampled_from([4096, 8192, 1 << 20]))
def test_append_and_read_round_trip_through_log(recs, segment_size):
    """Appends (singly or batched with the next record), reads back, reopens,
    and reads the segment files with the independent parser."""
    with tempfile.TemporaryDirectory() as d:
        opts = LogOptions(durability="os", segment_size=segment_size)
        expected = []
        with Log.open(d, opts) as log:
            i = 0
            while i < len(recs):
                payload, type, batch = recs[i]
                if batch and i + 1 < len(recs):
                    pair = [recs[i], recs[i + 1]]
                    got = log.append_batch([p for p, _, _ in pair], [t for _, t, _ in pair])
                    assert list(got) == [len(expected), len(expected) + 1]
                    expected += [(p, t) for p, t, _ in pair]
                    i += 2
                else:
                    assert log.append(payload, type) == len(expected)
                    expected.append((payload, type))
                    i += 1
            for seq, (payload, type) in enumerate(expected):
                r = log.read(seq)
                assert (r.seq, r.type, r.payload) == (seq, type, payload)
        with Log.open(d, opts) as log:
            assert [(r.payload, r.type) for r in log.iter_from()] == expected
            assert log.end == len(expected)
        on_disk = []
        for path in segment_paths(d):
            base = segment_header(path).base
            fs = frames(path)
            assert [f.seq for f in fs] == list(range(base, base + len(fs)))
            on_disk += [(f.payload, f.type) for f in fs]
        assert on_disk == expected


def test_appended_bytes_are_exactly_the_grammar(tmp_path):
    """Byte for byte, what append writes is what docs/format.md describes."""
    with Log.open(tmp_path, LogOptions(durability="os")) as log:
        log.append(b"first", type=3)
        log.append_batch([b"", b"second!!", b"x" * 1000])
    (path,) = segment_paths(str(tmp_path))
    hdr = segment_header(path)
    assert hdr.base == 0
    with open(path, "rb") as f:
        data = f.read()
    # durability="os" never syncs, so the durable point stays at 0 (where
    # the log was opened) and each record's lag is its distance from it.
    expected = (
        encode_frame(b"first", 0, hdr.salt, 3, lag=0)
        + encode_frame(b"", 1, hdr.salt, lag=1)
        + encode_frame(b"second!!", 2, hdr.salt, lag=2)
        + encode_frame(b"x" * 1000, 3, hdr.salt, lag=3)
    )
    assert data[SEGMENT_HEADER_SIZE : SEGMENT_HEADER_SIZE + len(expected)] == expected
    assert data[SEGMENT_HEADER_SIZE + len(expected) :].count(0) == len(data) - SEGMENT_HEADER_SIZE - len(expected)
    assert os.path.getsize(path) == LogOptions().segment_size


def test_lag_records_how_far_the_durable_point_trailed_each_record(tmp_path):
    with Log.open(tmp_path / "always", LogOptions(durability="always")) as log:
        for i in range(5):
            log.append(b"a%d" % i)
    assert [f.lag for f in frames(segment_paths(str(tmp_path / "always"))[0])] == [0] * 5
    with Log.open(tmp_path / "os", LogOptions(durability="os")) as log:
        for i in range(5):
            log.append(b"o%d" % i)
        log.sync()
        log.append(b"after sync")
    assert [f.lag for f in frames(segment_paths(str(tmp_path / "os"))[0])] == [0, 1, 2, 3, 4, 0]


def test_a_scan_or_check_from_past_the_end_of_the_map_reads_nothing():
    # (Reads past the buffer here showed only under AddressSanitizer.)
    buf = ffi.new("char[]", 64)
    res = ffi.new("walq_scan_t *")
    assert lib.walq_scan(buf, 64, 72, 0, 0, 10, ffi.NULL, ffi.NULL, ffi.NULL, res) == lib.WALQ_SCAN_EOF
    assert res.count == 0 and res.next_off == 72
    assert lib.walq_frame_info(buf, 64, 72, 0, 0) == -1
