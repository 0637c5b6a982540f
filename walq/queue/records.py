"""The records a queue writes to its log, and their byte encodings.

Grammar (little-endian; see docs/format.md, "Queue records"):

    SEND    := id:16 sent_at:f64 visible_at:f64 first_received_at:f64
               prior_receives:u32 attrs_len:u32 group_len:u16 dedup_len:u16
               source_len:u16 pad:u16 group dedup source attrs body
    LEASE   := now:f64 (msg_seq:u64 deadline:f64)*      a receive; lease id = record seq
    HIDE    := (msg_seq:u64 deadline:f64)*               invisible without a receive (DLQ moves)
    DELETE  := (msg_seq:u64)*
    CHVIS   := (msg_seq:u64 lease_seq:u64 deadline:f64)*
    PURGE   := upto:u64                                   every message below upto is gone
    MOVED   := (msg_seq:u64)*                             gone: moved to another queue
    CARRY   := (new_seq:u64 old_seq:u64 lease_seq:u64 deadline:f64 orig_seq:u64)*
               the SEND at new_seq replaces old_seq (compaction), keeping its
               lease (lease_seq 0: none) and its original sequence number
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

SEND, LEASE, HIDE, DELETE, CHVIS, PURGE, MOVED, CARRY = 1, 2, 3, 4, 5, 6, 7, 8
NAMES = {SEND: "send", LEASE: "lease", HIDE: "hide", DELETE: "delete", CHVIS: "change_visibility",
         PURGE: "purge", MOVED: "moved", CARRY: "carry"}

SEND_HEAD = struct.Struct("<16sdddIIHHHxx")
#: Where a SEND payload keeps sent_at (after the 16-byte id).
SENT_AT_OFFSET = 16
F64 = struct.Struct("<d")
SEQ = struct.Struct("<Q")
SEQ_DL = struct.Struct("<Qd")
_CHVIS = struct.Struct("<QQd")
_CARRY = struct.Struct("<QQQdQ")

#: Bytes of a SEND payload that the index needs: the head and the short
#: variable fields (group and dedup id are at most 128 bytes each).
SEND_INDEX_PREFIX = SEND_HEAD.size + 128 + 128


class SendRecord(NamedTuple):
    """A message as stored.  (A tuple: a receive decodes one per message.)"""

    message_id: bytes
    sent_at: float
    visible_at: float
    first_received_at: float
    prior_receives: int
    group: str | None
    dedup_id: str | None
    source: str | None
    attributes: bytes
    body: bytes


def encode_send(message_id: bytes, sent_at: float, visible_at: float, body: bytes, attrs: bytes = b"",
                group: str | None = None, dedup_id: str | None = None, source: str | None = None,
                prior_receives: int = 0, first_received_at: float = 0.0) -> bytes:
    """Encodes a SEND payload."""
    g = group.encode() if group else b""
    d = dedup_id.encode() if dedup_id else b""
    s = source.encode() if source else b""
    head = SEND_HEAD.pack(message_id, sent_at, visible_at, first_received_at, prior_receives,
                          len(attrs), len(g), len(d), len(s))
    return b"".join((head, g, d, s, attrs, body))


def decode_send_head(p: bytes) -> tuple[float, float, int, str | None, str | None, bytes]:
    """``(sent_at, visible_at, prior_receives, group, dedup_id, message_id)`` from a prefix."""
    mid, sent, vis, _first, prior, _alen, glen, dlen, _slen = SEND_HEAD.unpack_from(p)
    pos = SEND_HEAD.size
    group = p[pos : pos + glen].decode() if glen else None
    dedup = p[pos + glen : pos + glen + dlen].decode() if dlen else None
    return sent, vis, prior, group, dedup, mid


def decode_send(p: bytes) -> SendRecord:
    """Decodes a whole SEND payload."""
    mid, sent, vis, first, prior, alen, glen, dlen, slen = SEND_HEAD.unpack_from(p)
    pos = SEND_HEAD.size
    group = p[pos : pos + glen].decode() if glen else None
    pos += glen
    dedup = p[pos : pos + dlen].decode() if dlen else None
    pos += dlen
    source = p[pos : pos + slen].decode() if slen else None
    pos += slen
    attrs = p[pos : pos + alen]
    pos += alen
    return SendRecord(mid, sent, vis, first, prior, group, dedup, source, attrs, p[pos:])


def encode_lease(now: float, entries: list[tuple[int, float]]) -> bytes:
    """A receive: each entry is ``(msg_seq, deadline)``."""
    flat = [now]
    for s, d in entries:
        flat += (s, d)
    return _lease_struct(len(entries)).pack(*flat)


def encode_lease_all(now: float, seqs: list[int], deadline: float) -> bytes:
    """encode_lease of messages that share one deadline (a receive's)."""
    flat = [deadline] * (2 * len(seqs) + 1)
    flat[0] = now
    flat[1::2] = seqs
    return _lease_struct(len(seqs)).pack(*flat)


@functools.lru_cache(maxsize=64)
def _lease_struct(n: int) -> struct.Struct:
    return struct.Struct("<d" + "Qd" * n)


def decode_lease(p: bytes) -> tuple[float, list[tuple[int, float]]]:
    """Inverse of encode_lease."""
    return F64.unpack_from(p)[0], list(SEQ_DL.iter_unpack(p[8:]))


def encode_hide(entries: list[tuple[int, float]]) -> bytes:
    """Invisible until ``deadline`` without counting a receive."""
    return b"".join(SEQ_DL.pack(s, d) for s, d in entries)


def decode_hide(p: bytes) -> list[tuple[int, float]]:
    """Inverse of encode_hide."""
    return list(SEQ_DL.iter_unpack(p))


def encode_seqs(seqs: list[int]) -> bytes:
    """DELETE and MOVED payloads."""
    return b"".join(SEQ.pack(s) for s in seqs)


def decode_seqs(p: bytes) -> list[int]:
    """Inverse of encode_seqs."""
    return [s for (s,) in SEQ.iter_unpack(p)]


def encode_chvis(entries: list[tuple[int, int, float]]) -> bytes:
    """Each entry is ``(msg_seq, lease_seq, new_deadline)``."""
    return b"".join(_CHVIS.pack(*e) for e in entries)


def decode_chvis(p: bytes) -> list[tuple[int, int, float]]:
    """Inverse of encode_chvis."""
    return list(_CHVIS.iter_unpack(p))


def encode_purge(upto: int) -> bytes:
    """Every message with a sequence below ``upto`` is gone."""
    return SEQ.pack(upto)


def decode_purge(p: bytes) -> int:
    """Inverse of encode_purge."""
    return SEQ.unpack_from(p)[0]


def encode_carry(entries: list[tuple[int, int, int, float, int]]) -> bytes:
    """Each entry is ``(new_seq, old_seq, lease_seq, deadline, orig_seq)``."""
    return b"".join(_CARRY.pack(*e) for e in entries)


def decode_carry(p: bytes) -> list[tuple[int, int, int, float, int]]:
    """Inverse of encode_carry."""
    return list(_CARRY.iter_unpack(p))
