"""Named helpers for log tests: corrupt files, parse segments, make payloads.

Corruption goes through these functions (as in LevelDB's ``log_test.cc``) so
that a test reads as the damage it does: ``flip_byte(seg, off)``,
``truncate_by(seg, 3)``, ``zero_range(seg, off, n)``.

The parsers here re-implement the on-disk format (docs/format.md) in plain
Python with the ``xxhash`` package, independently of native/walq.c, so the
tests check the C code against a second reading of the format rather than
against itself.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import NamedTuple

import xxhash

SEGMENT_HEADER_SIZE = 64
RECORD_HEADER_SIZE = 24
ALIGN = 8
SEGMENT_MAGIC = b"WALQSEG1"

_SEGMENT_HEADER = struct.Struct("<8sIIQQQ16xQ")  # ... | checksum u64
_RECORD_HEADER = struct.Struct("<QIB3sQ")  # checksum | len | type | lag u24 | seq


# -- corruption ----------------------------------------------------------------


def flip_byte(path: str, offset: int, mask: int = 0xFF) -> int:
    """XORs the byte at ``offset`` with ``mask``; returns its old value."""
    assert mask & 0xFF, "a zero mask changes nothing"
    with open(path, "r+b") as f:
        f.seek(offset)
        (old,) = f.read(1)
        f.seek(offset)
        f.write(bytes([old ^ mask]))
    return old


def truncate_by(path: str, n: int) -> int:
    """Cuts the last ``n`` bytes off a file; returns the new size."""
    size = os.path.getsize(path) - n
    assert size >= 0
    os.truncate(path, size)
    return size


def truncate_to(path: str, size: int) -> None:
    """Sets a file's size (shorter drops bytes, longer adds zeros)."""
    os.truncate(path, size)


def zero_range(path: str, offset: int, length: int) -> None:
    """Overwrites ``length`` bytes at ``offset`` with zeros."""
    write_at(path, offset, bytes(length))


def write_at(path: str, offset: int, data: bytes) -> None:
    """Overwrites bytes in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_at(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


# -- reading the format independently ----------------------------------------


def segment_paths(directory: str) -> list[str]:
    """The segment files of a log directory, oldest first."""
    names = sorted(n for n in os.listdir(directory) if len(n) == 24 and n.endswith(".seg") and n[:20].isdigit())
    return [os.path.join(directory, n) for n in names]


def last_segment(directory: str) -> str:
    return segment_paths(directory)[-1]


def torn_files(directory: str) -> list[str]:
    """The files recovery set aside (``torn-*.bin``), sorted."""
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.startswith("torn-") and n.endswith(".bin"))


class SegmentHeader(NamedTuple):
    base: int
    salt: int
    created_ns: int


def segment_header(path: str) -> SegmentHeader:
    """Decodes and checks a segment header (AssertionError if it is bad)."""
    raw = read_at(path, 0, SEGMENT_HEADER_SIZE)
    magic, version, size, base, salt, created, checksum = _SEGMENT_HEADER.unpack(raw)
    assert magic == SEGMENT_MAGIC and version == 1 and size == SEGMENT_HEADER_SIZE, raw
    assert xxhash.xxh3_64_intdigest(raw[:56]) == checksum, "segment header checksum"
    return SegmentHeader(base, salt, created)


def frame_size(payload_len: int) -> int:
    return (RECORD_HEADER_SIZE + payload_len + ALIGN - 1) // ALIGN * ALIGN


def encode_frame(payload: bytes, seq: int, salt: int, type: int = 1, lag: int = 0) -> bytes:
    """One record frame, built from the format grammar alone (the oracle)."""
    body = struct.pack("<IB3sQ", len(payload), type, lag.to_bytes(3, "little"), seq) + payload
    checksum = xxhash.xxh3_64_intdigest(body, seed=salt)
    frame = struct.pack("<Q", checksum) + body
    return frame + bytes(frame_size(len(payload)) - len(frame))


class Frame(NamedTuple):
    offset: int  # of the frame in its segment file
    seq: int
    type: int
    payload: bytes
    lag: int  # how far the durable point trailed this record when written

    @property
    def size(self) -> int:
        return frame_size(len(self.payload))

    @property
    def end(self) -> int:
        return self.offset + self.size


def frames(path: str) -> list[Frame]:
    """The valid frames of a segment, in file order, up to the first frame
    that is zero (end of data) or does not validate."""
    hdr = segment_header(path)
    with open(path, "rb") as f:
        data = f.read()
    out, off, seq = [], SEGMENT_HEADER_SIZE, hdr.base
    while len(data) - off >= RECORD_HEADER_SIZE:
        checksum, length, type, lag, fseq = _RECORD_HEADER.unpack_from(data, off)
        if data[off : off + RECORD_HEADER_SIZE] == bytes(RECORD_HEADER_SIZE):
            break
        end = off + frame_size(length)
        if end > len(data) or type == 0 or fseq != seq:
            break
        if xxhash.xxh3_64_intdigest(data[off + 8 : off + RECORD_HEADER_SIZE + length], seed=hdr.salt) != checksum:
            break
        if data[off + RECORD_HEADER_SIZE + length : end] != bytes(end - off - RECORD_HEADER_SIZE - length):
            break  # padding must be zeros
        payload = data[off + RECORD_HEADER_SIZE : off + RECORD_HEADER_SIZE + length]
        out.append(Frame(off, fseq, type, payload, int.from_bytes(lag, "little")))
        off, seq = end, seq + 1
    return out


def data_end(path: str) -> int:
    """Offset just past the last valid frame of a segment."""
    fs = frames(path)
    return fs[-1].end if fs else SEGMENT_HEADER_SIZE


# -- self-checking payloads ------------------------------------------------------


def payload_for(writer: int, i: int, size: int | None = None) -> bytes:
    """A payload that names its writer and index and checks itself.

    ``parse_payload`` recovers ``(writer, i)`` and raises if any byte is
    wrong, so a test can tell an intact record from garbage without keeping
    every payload it wrote.
    """
    head = b"w%d:i%d:" % (writer, i)
    if size is None:
        size = 16 + (writer * 7919 + i * 104729) % 300
    size = max(size, len(head) + 8)
    digest = hashlib.blake2b(head, digest_size=8).digest()
    body = (digest * (size // 8 + 1))[: size - len(head) - 8]
    return head + digest + body


def parse_payload(payload: bytes) -> tuple[int, int]:
    """``(writer, i)`` of a ``payload_for`` payload; ValueError if damaged."""
    try:
        w, i, _ = payload.split(b":", 2)
        writer, index = int(w[1:]), int(i[1:])
    except ValueError:
        raise ValueError(f"not a test payload: {payload[:40]!r}") from None
    if payload != payload_for(writer, index, len(payload)):
        raise ValueError(f"damaged payload for writer {writer} index {index}")
    return writer, index


def all_records(log) -> list:
    """Every record of an open log, through ``iter_from`` (checksums verified)."""
    return list(log.iter_from())
