"""Receipt handles: which message, under which lease, in which queue.

    receipt := base64url( queue_uid:u64 msg_seq:u64 lease_seq:u64 check:u32 )

``check`` is the low 32 bits of XXH3-64 of the first 24 bytes, so a typo or a
truncated handle is refused as malformed instead of deleting something else.
"""

from __future__ import annotations

import base64
import binascii
import struct

from walq.errors import InvalidReceipt
from walq.log.format import hash64

_BODY = struct.Struct("<QQQ")


def encode(queue_uid: int, msg_seq: int, lease_seq: int) -> str:
    """The receipt for one lease of one message."""
    body = _BODY.pack(queue_uid, msg_seq, lease_seq)
    raw = body + struct.pack("<I", hash64(body) & 0xFFFFFFFF)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode(receipt, queue_uid: int) -> tuple[int, int]:
    """``(msg_seq, lease_seq)``; InvalidReceipt if malformed or from another queue."""
    if not isinstance(receipt, str) or len(receipt) != 38:
        raise InvalidReceipt(f"malformed receipt handle {receipt!r}")
    try:
        raw = base64.urlsafe_b64decode(receipt + "==")
    except (binascii.Error, ValueError):
        raise InvalidReceipt(f"malformed receipt handle {receipt!r}") from None
    if len(raw) != 28 or struct.unpack_from("<I", raw, 24)[0] != hash64(raw[:24]) & 0xFFFFFFFF:
        raise InvalidReceipt(f"malformed receipt handle {receipt!r}")
    uid, msg_seq, lease_seq = _BODY.unpack_from(raw)
    if uid != queue_uid:
        raise InvalidReceipt("receipt handle belongs to another queue")
    return msg_seq, lease_seq
