"""Message ids: UUID-shaped strings, unique across processes.

uuid4() costs a urandom call and object churn per message; instead each
generator draws 64 random bits once and counts.  Two generators collide only
if their random halves do (1 in 2**64 per pair).  A forked child must not
reuse its parent's generator - it opens its own Broker, which makes a new one.

Single ids and batches count in separate spaces, each under its own random
prefix: single ids take the next value of an ``itertools.count`` (atomic
under the GIL, no lock on the path of every ``send``), and batches reserve a
run of consecutive counts under a lock, for the native batch encoder.
"""

from __future__ import annotations

import itertools
import os
import threading

_MASK = 0xFFFFFFFFFFFFFFFF
#: An odd multiplier is a bijection mod 2**64: distinct counts stay
#: distinct, and consecutive ids do not look consecutive.
MIX = 0x9E3779B97F4A7C15


class IdGenerator:
    """Yields ``(text id, 16 raw bytes)`` pairs, or reserves runs of them."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8)
        # Random starts: counts stay distinct for 2**64 ids, and the first
        # id does not end in zeros.
        self._count = itertools.count(int.from_bytes(os.urandom(8), "big"))
        # The text form's first three groups come from the fixed prefix.
        h = self._prefix.hex()
        self._text_prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-"
        self._batch_prefix = os.urandom(8)
        while self._batch_prefix == self._prefix:
            self._batch_prefix = os.urandom(8)
        self._batch_count = int.from_bytes(os.urandom(8), "big")
        self._mu = threading.Lock()

    @property
    def batch_prefix(self) -> bytes:
        """The 8 random bytes every id from ``reserve`` starts with."""
        return self._batch_prefix

    def reserve(self, n: int) -> int:
        """Reserves ``n`` consecutive counts; returns the first.  Their ids
        are ``batch_prefix + big-endian((count * MIX) mod 2**64)``, built by
        the native batch encoder (walq_encode_sends)."""
        with self._mu:
            c = self._batch_count
            self._batch_count = (c + n) & _MASK
        return c

    def next(self) -> tuple[str, bytes]:
        """A fresh id."""
        low = ((next(self._count) * MIX) & _MASK).to_bytes(8, "big")
        t = low.hex()
        return f"{self._text_prefix}{t[:4]}-{t[4:]}", self._prefix + low


def format_id(raw: bytes) -> str:
    """The text form of 16 raw id bytes."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
