"""Byte layout of segment headers and file names (docs/format.md).

Record frames are built and checked in C (native/walq.c); this module owns
the segment header, which Python writes once per segment and checks on open.
"""

from __future__ import annotations

import re
import struct

from walq.log._native import ffi, lib

SEGMENT_MAGIC = b"WALQSEG1"
FORMAT_VERSION = 1
SEGMENT_HEADER_SIZE = lib.WALQ_SEG_HEADER_SIZE
RECORD_HEADER_SIZE = lib.WALQ_REC_HEADER_SIZE
CTL_MAGIC = 0x57414C51_43544C31  # "WALQCTL1"
CTL_FILE_SIZE = 4096

# magic | version u32 | header size u32 | base seq u64 | salt u64 |
# created ns u64 | reserved 16 | checksum u64 (XXH3-64 of bytes 0..56, seed 0)
_HEADER = struct.Struct("<8sIIQQQ16x")
assert _HEADER.size + 8 == SEGMENT_HEADER_SIZE

_SEGMENT_NAME = re.compile(r"(\d{20})\.seg")


def segment_name(base: int) -> str:
    """File name of the segment whose first record has sequence ``base``."""
    return f"{base:020d}.seg"


def parse_segment_name(name: str) -> int | None:
    """The base sequence in a segment file name, or None for other files."""
    m = _SEGMENT_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def hash64(data: bytes, seed: int = 0) -> int:
    """XXH3-64 of ``data`` with ``seed``, from the native core."""
    return lib.walq_hash(data, len(data), seed)


def encode_segment_header(base: int, salt: int, created_ns: int) -> bytes:
    """The 64-byte header that opens every segment file."""
    body = _HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, SEGMENT_HEADER_SIZE, base, salt, created_ns)
    return body + struct.pack("<Q", hash64(body))


def decode_segment_header(raw: bytes) -> tuple[int, int] | None:
    """``(base, salt)`` from a header, or None if it does not validate."""
    if len(raw) < SEGMENT_HEADER_SIZE:
        return None
    body, (checksum,) = raw[:56], struct.unpack_from("<Q", raw, 56)
    if hash64(body) != checksum:
        return None
    magic, version, size, base, salt, _created = _HEADER.unpack(body)
    if magic != SEGMENT_MAGIC or version != FORMAT_VERSION or size != SEGMENT_HEADER_SIZE:
        return None
    return base, salt


def frame(payloads: list[bytes], salt: int, seq0: int, type: int = 1) -> bytes:
    """Frames records exactly as the append path writes them (tests, tools)."""
    data = b"".join(payloads)
    lens = ffi.new("uint32_t[]", [len(p) for p in payloads])
    size = sum(lib.walq_frame_size(len(p)) for p in payloads)
    out = ffi.new("char[]", max(size, 1))
    n = lib.walq_frame(out, salt, seq0, len(payloads), data, lens, ffi.NULL, type)
    return ffi.buffer(out, n)[:]
