"""Receipt handles: which message, under which lease, in which queue.

    receipt := hex16(queue_uid) hex16(msg_seq) hex16(lease_seq) hex8(check)

``check`` is the low 32 bits of XXH3-64 of the first 48 characters, so a typo
or a truncated handle is refused as malformed instead of deleting something
else.  Hex keeps encoding and decoding to a few string operations.
"""

from __future__ import annotations

from walq.errors import InvalidReceipt
from walq.log._native import lib

_HEX = frozenset("0123456789abcdef")


def _check(body: str) -> int:
    raw = body.encode("ascii")
    return lib.walq_hash(raw, 48, 0) & 0xFFFFFFFF


def encode(queue_uid: int, msg_seq: int, lease_seq: int) -> str:
    """The receipt for one lease of one message."""
    body = f"{queue_uid:016x}{msg_seq:016x}{lease_seq:016x}"
    return f"{body}{_check(body):08x}"


def decode(receipt, queue_uid: int) -> tuple[int, int]:
    """``(msg_seq, lease_seq)``; InvalidReceipt if malformed or from another queue."""
    if not isinstance(receipt, str) or len(receipt) != 56 or not _HEX.issuperset(receipt):
        raise InvalidReceipt(f"malformed receipt handle {receipt!r}")
    if int(receipt[48:], 16) != _check(receipt[:48]):
        raise InvalidReceipt(f"malformed receipt handle {receipt!r}")
    if int(receipt[:16], 16) != queue_uid:
        raise InvalidReceipt("receipt handle belongs to another queue")
    return int(receipt[16:32], 16), int(receipt[32:48], 16)
