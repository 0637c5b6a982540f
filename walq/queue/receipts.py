"""Receipt handles: which message, under which lease, in which queue.

    receipt := hex16(queue_uid) hex16(msg_seq) hex16(lease_seq) hex8(check)

``check`` is the low 32 bits of XXH3-64 of the first 48 characters, so a typo
or a truncated handle is refused as malformed instead of deleting something
else.  Hex keeps encoding and decoding to a few string operations: a receive
makes one per message and a delete reads one per message.
"""

from __future__ import annotations

import struct

from walq.errors import InvalidReceipt
from walq.log._native import ffi, lib

_M32 = 0xFFFFFFFF
_JUST_STR = {str}
_JUST_56 = {56}
_FIELDS = struct.Struct(">QQQI")


def _check(body: str) -> int:
    return lib.walq_hash(body.encode("ascii"), 48, 0) & _M32


def encode(queue_uid: int, msg_seq: int, lease_seq: int) -> str:
    """The receipt for one lease of one message."""
    body = f"{queue_uid:016x}{msg_seq:016x}{lease_seq:016x}"
    return f"{body}{_check(body):08x}"


def receive_texts(queue_uid: int, msg_seqs: list[int], lease_seq: int, raw_ids: bytes) -> tuple[list[str], list[str]]:
    """For one receive: each message's id text (from its 16 raw id bytes,
    concatenated in ``raw_ids``) and its receipt, in one native call."""
    n = len(msg_seqs)
    ids = ffi.new("char[]", 37 * n - 1)
    handles = ffi.new("char[]", 57 * n - 1)
    lib.walq_receive_texts(raw_ids, msg_seqs, n, queue_uid, lease_seq, ids, handles)
    return ffi.unpack(ids, 37 * n - 1).decode("ascii").split(","), \
        ffi.unpack(handles, 57 * n - 1).decode("ascii").split(",")


def decode(receipt, queue_uid: int) -> tuple[int, int]:
    """``(msg_seq, lease_seq)``; InvalidReceipt if malformed or from another queue."""
    # fromhex also skips whitespace between byte pairs: the length of what
    # it returns catches that (28 bytes only from 56 hex digits).
    try:
        raw = bytes.fromhex(receipt) if type(receipt) is str and len(receipt) == 56 else b""
    except ValueError:
        raw = b""
    if len(raw) != 28:
        raise InvalidReceipt(f"malformed receipt handle {receipt!r}")
    uid, msg_seq, lease_seq, check = _FIELDS.unpack(raw)
    if check != _check(receipt[:48]):
        raise InvalidReceipt(f"malformed receipt handle {receipt!r}")
    if uid != queue_uid:
        raise InvalidReceipt("receipt handle belongs to another queue")
    return msg_seq, lease_seq


def decode_many(handles, queue_uid: int) -> list:
    """``decode`` of each handle: ``(msg_seq, lease_seq)``, or the
    InvalidReceipt it would raise.  Well-formed batches are parsed in one
    native call; a delete_batch decodes one per message."""
    n = len(handles)
    # Below a few handles the native call's set-up costs more than it saves.
    if n >= 4 and set(map(type, handles)) == _JUST_STR and set(map(len, handles)) == _JUST_56:
        joined = "".join(handles)
        if joined.isascii():
            msgs, leases = ffi.new("uint64_t[]", n), ffi.new("uint64_t[]", n)
            status = ffi.new("uint8_t[]", n)
            lib.walq_parse_receipts(joined.encode("ascii"), n, queue_uid, msgs, leases, status)
            if ffi.buffer(status)[:].count(0) == n:  # all well formed and ours
                return list(zip(ffi.unpack(msgs, n), ffi.unpack(leases, n)))
    return [_decode_or_error(h, queue_uid) for h in handles]


def _decode_or_error(handle, queue_uid: int):
    try:
        return decode(handle, queue_uid)
    except InvalidReceipt as exc:
        return exc

