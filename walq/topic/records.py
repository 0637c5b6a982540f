"""The records a topic writes to its own log, and their byte encoding.

Grammar (little-endian; see docs/format.md, "Topics"):

    PUBLISH := id:16 published_at:f64 subject_len:u16 group_len:u16
               dedup_len:u16 pad:u16 attrs_len:u32
               subject group dedup attrs message
    attrs   := the queue's message-attribute encoding (walq/queue/message_attributes.py)

The record's sequence in the topic log is the publish's FIFO sequence number.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from walq.log._native import ffi, lib

PUBLISH = 1
#: An empty record where `walq repair` lost one (docs/format.md, "Repair"); readers skip it.
LOST = 2

_HEAD = struct.Struct("<16sdHHHxxI")


class Publish(NamedTuple):
    """One publish as stored."""

    seq: int
    message_id: bytes
    published_at: float
    subject: str | None
    group: str | None
    dedup_id: str | None
    attributes: bytes
    message: bytes


def encode(message_id: bytes, published_at: float, message: bytes, attributes: bytes = b"",
           subject: str | None = None, group: str | None = None, dedup_id: str | None = None) -> bytes:
    """Encodes a PUBLISH payload."""
    s = subject.encode() if subject else b""
    g = group.encode() if group else b""
    d = dedup_id.encode() if dedup_id else b""
    head = _HEAD.pack(message_id, published_at, len(s), len(g), len(d), len(attributes))
    return b"".join((head, s, g, d, attributes, message))


def decode(seq: int, p: bytes) -> Publish:
    """Inverse of encode."""
    mid, at, slen, glen, dlen, alen = _HEAD.unpack_from(p)
    pos = _HEAD.size
    subject = p[pos:pos + slen].decode() if slen else None
    pos += slen
    group = p[pos:pos + glen].decode() if glen else None
    pos += glen
    dedup = p[pos:pos + dlen].decode() if dlen else None
    pos += dlen
    attrs = p[pos:pos + alen]
    pos += alen
    return Publish(seq, mid, at, subject, group, dedup, attrs, p[pos:])


def copy_id(message_id: bytes, queue_uid: int) -> bytes:
    """The message id of a publish's copy in the queue ``queue_uid``:
    derived, so that completing an interrupted fan-out can tell which
    copies a queue already holds (docs/format.md, "Fan-out")."""
    return copy_id_of(message_id, queue_uid.to_bytes(8, "big"))


def copy_id_of(message_id: bytes, queue_uid_bytes: bytes) -> bytes:
    """copy_id with the queue's uid already as 8 big-endian bytes (a fan-out
    computes it once per subscription, not once per copy).  The native
    fan-out (walq_fanout_publish) derives the same ids itself."""
    out = ffi.new("uint8_t[16]")
    lib.walq_copy_id(message_id, queue_uid_bytes, out)
    return ffi.buffer(out)[:]
