"""Message ids: UUID-shaped strings, unique across processes.

uuid4() costs a urandom call and object churn per message; instead each
generator draws 64 random bits once and counts.  Two generators collide only
if their random halves do (1 in 2**64 per pair).  A forked child must not
reuse its parent's generator - it opens its own Broker, which makes a new one.
"""

from __future__ import annotations

import os
import threading


class IdGenerator:
    """Yields ``(text id, 16 raw bytes)`` pairs."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8)
        # A random start: counts stay distinct for 2**64 ids, and the first
        # id does not end in zeros.
        self._count = int.from_bytes(os.urandom(8), "big")
        self._mu = threading.Lock()
        # The text form's first three groups come from the fixed prefix.
        h = self._prefix.hex()
        self._text_prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-"

    @property
    def prefix(self) -> bytes:
        """The 8 random bytes every id of this generator starts with."""
        return self._prefix

    def reserve(self, n: int) -> int:
        """Reserves ``n`` consecutive counts; returns the first.  The ids
        are ``prefix + big-endian(mix(count))`` (see ``next``); the native
        batch encoder (walq_encode_sends) builds them from the count."""
        with self._mu:
            c = self._count
            self._count = c + n
        return c & 0xFFFFFFFFFFFFFFFF

    def next(self) -> tuple[str, bytes]:
        """A fresh id."""
        # An odd multiplier is a bijection mod 2**64: distinct counts stay
        # distinct, and consecutive ids do not look consecutive.
        mixed = (self.reserve(1) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        t = f"{mixed:016x}"
        return f"{self._text_prefix}{t[:4]}-{t[4:]}", self._prefix + mixed.to_bytes(8, "big")


def format_id(raw: bytes) -> str:
    """The text form of 16 raw id bytes."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
