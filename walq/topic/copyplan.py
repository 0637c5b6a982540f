"""A fan-out's standard-queue targets in native form, so that one publish
is copied into every queue it reaches by one ``walq_fanout_publish`` call.

Per copy, the Python way (``Queue._store_copies``: attribute checks, a
SEND encoded, one ``Log.append``) cost about 8 us, more than the write;
natively a copy costs its append.  A plan is built when the fan-out's
targets are resolved again, which happens whenever the broker's catalog
moves - so a queue's delay, or its deletion, is never older than the plan.

Each queue log's ``_tlock`` is held around the call, as ``Log.append``
holds it: the native writer is re-aimed and closed under that lock.  The
locks are taken in one order (the queues' uids), and nothing else holds
two of them, so fan-outs of different topics cannot wait on each other.
"""

from __future__ import annotations

from walq.errors import QueueDoesNotExist
from walq.log._native import ffi, lib


class CopyPlan:
    """The native copy targets of one resolved target list."""

    def __init__(self, targets: list):
        n = len(targets)
        self._c = ffi.new("struct walq_copy_target[]", max(1, n))
        self._keep = []  # the insert buffers the C array points into
        self.native = [False] * n
        self._lock = [None] * n
        self._rank = [0] * n
        seen = set()
        for i, t in enumerate(targets):
            log = t.queue._log
            if t.fifo or id(log) in seen:
                continue  # FIFO decides under the queue's lock; a second copy into one log goes the slow way
            try:
                delay = t.queue._attrs().delay
            except QueueDoesNotExist:
                continue
            seen.add(id(log))
            ct = self._c[i]
            ct.writer = log._writer
            insert = t.unsubscribe.encode("utf-8")
            buf = ffi.new("char[]", insert)
            self._keep.append(buf)
            ct.insert, ct.insert_len = buf, len(insert)
            ct.raw = 0 if t.envelope else 1
            ct.delay = delay
            ct.uid = list(t.uid_bytes)
            self.native[i] = True
            self._lock[i] = log._tlock
        for r, i in enumerate(sorted((i for i in range(n) if self.native[i]), key=lambda i: targets[i].uid)):
            self._rank[i] = r
        self.all_native = n > 0 and all(self.native)
        self._all_locks = [self._lock[i] for i in sorted(range(n), key=self._rank.__getitem__)] \
            if self.all_native else []

    def write(self, hit: list[int], every: bool, pub, head: bytes, tail: bytes, now: float) -> int:
        """Copies ``pub`` into the targets ``hit`` (each native; ``every``:
        all of the plan's, in order); returns how many, in ``hit``'s order,
        were written: the one after them needs the slow way."""
        n = len(hit)
        if every:
            locks, idx = self._all_locks, ffi.NULL
        else:
            locks = [self._lock[i] for i in sorted(hit, key=self._rank.__getitem__)]
            idx = ffi.new("uint32_t[]", hit)
        msg, attrs = pub.message, pub.attributes
        for lock in locks:
            lock.acquire()
        try:
            got = lib.walq_fanout_publish(self._c, idx, n, pub.message_id, now, head, len(head), tail, len(tail),
                                          msg, len(msg), attrs, len(attrs), ffi.NULL)
        finally:
            for lock in locks:
                lock.release()
        if got < 0:
            raise MemoryError("walq_fanout_publish")
        return got
