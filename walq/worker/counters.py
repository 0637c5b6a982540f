"""Per-target delivery counters: delivered, failed attempts, dead-lettered, dropped.

One small file per store, replaced whole under a lock::

    <store>/workers/counters       := magic checksum payload
        magic    := "WALQCNT1"
        checksum := uint64le   XXH3-64 of payload
        payload  := JSON {key: [delivered, failed, dead_lettered, dropped], ...}
    <store>/workers/counters.lock  := empty; flock'ed by every writer

An update takes the lock, reads the file, adds, writes ``counters.tmp`` and
renames it over the file; under ``durability="always"`` the temporary file
and then the directory are fsynced (fsync the file, rename, fsync the
directory).  A rename is atomic, so a reader never sees a torn file, and a
kill -9 at any point leaves either the old counts or the new ones.

Why a file and not a walq log: a log grows with every update and its readers
replay it all (or it needs its own checkpoints and trimming); the counts are a
few numbers per subscription, read by ``sub.stats()`` with one ``read()``.
The cost of a rewrite is paid per *batch* of increments: the worker adds up
its counts in memory (``Tally``) and writes them at most every 0.1 s under
"os" and "batch" (no fsync; a kill -9 of the worker loses at most that much
of its counts) and at most once a second under "always" (two fsyncs; a power
cut may lose the last second of counts), and when it stops.  Counts are
statistics: losing some never loses or repeats a delivery.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from typing import NamedTuple

import portalocker

from walq.errors import CorruptionError, InvalidParameter
from walq.log.format import hash64

__all__ = ["DeliveryCounts", "add", "add_many", "read", "read_all", "forget", "Tally"]

_MAGIC = b"WALQCNT1"
_HEAD = struct.Struct("<8sQ")
#: The longest a Tally holds counts before writing them: under "always" ...
ALWAYS_FLUSH_S = 1.0
#: ... and under "os" and "batch".
OS_FLUSH_S = 0.1


class DeliveryCounts(NamedTuple):
    """A target's totals: successful deliveries, failed attempts, messages
    sent to the dead-letter queue, and messages dropped (retries exhausted
    and no dead-letter queue)."""

    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    dropped: int = 0


def _dir(broker) -> str:
    return os.path.join(broker.path, "workers")


def _path(broker) -> str:
    return os.path.join(_dir(broker), "counters")


def _durable(broker) -> bool:
    return broker._log_options.durability == "always"


def _decode(data: bytes, path: str) -> dict[str, list[int]]:
    if len(data) < _HEAD.size:
        raise CorruptionError(f"{path}: counters file of {len(data)} bytes is too short", path, 0)
    magic, checksum = _HEAD.unpack_from(data)
    payload = data[_HEAD.size:]
    if magic != _MAGIC or hash64(payload) != checksum:
        raise CorruptionError(f"{path}: counters file fails its checksum (remove it to start the counts "
                              "from zero)", path, 0)
    return json.loads(payload)


def _load(path: str) -> dict[str, list[int]]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}
    return _decode(data, path)


def _check_key(key) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidParameter(f"counter key must be a non-empty str; got {key!r}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _update(broker, change) -> None:
    """Applies ``change(counts)`` to the file under its lock (module docstring)."""
    broker._check()
    d = _dir(broker)
    if not os.path.isdir(d):
        os.makedirs(d, mode=0o700, exist_ok=True)
        _fsync_dir(broker.path)
    path = _path(broker)
    with portalocker.Lock(os.path.join(d, "counters.lock"), mode="a", flags=portalocker.LOCK_EX,
                          timeout=None):
        counts = _load(path)
        if not change(counts):
            return
        payload = json.dumps(counts, sort_keys=True, separators=(",", ":")).encode()
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, _HEAD.pack(_MAGIC, hash64(payload)) + payload)
            if _durable(broker):
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        if _durable(broker):
            _fsync_dir(d)


def add_many(broker, increments: dict[str, DeliveryCounts]) -> None:
    """Adds each key's counts, all in one rewrite."""
    for key in increments:
        _check_key(key)

    def change(counts: dict) -> bool:
        changed = False
        for key, inc in increments.items():
            if not any(inc):
                continue
            cur = counts.get(key, [0, 0, 0, 0])
            cur += [0] * (4 - len(cur))
            counts[key] = [a + b for a, b in zip(cur, inc)]
            changed = True
        return changed

    _update(broker, change)


def add(broker, key: str, *, delivered: int = 0, failed: int = 0, dead_lettered: int = 0,
        dropped: int = 0) -> None:
    """Adds to ``key``'s counts (one rewrite of the counters file)."""
    add_many(broker, {key: DeliveryCounts(delivered, failed, dead_lettered, dropped)})


def read(broker, key: str) -> DeliveryCounts:
    """``key``'s totals (zeros if it never counted anything)."""
    _check_key(key)
    broker._check()
    return DeliveryCounts(*_load(_path(broker)).get(key, ()))


def read_all(broker) -> dict[str, DeliveryCounts]:
    """Every key's totals."""
    broker._check()
    return {k: DeliveryCounts(*v) for k, v in _load(_path(broker)).items()}


def forget(broker, key: str) -> None:
    """Removes ``key``'s counts (a subscription that was deleted)."""
    _check_key(key)
    _update(broker, lambda counts: counts.pop(key, None) is not None)


class Tally:
    """Counts a worker adds up in memory and writes in batches (module
    docstring: at most every 0.1 s, or once a second under "always")."""

    def __init__(self, broker):
        self._broker = broker
        self._mu = threading.Lock()
        self._pending: dict[str, list[int]] = {}
        self._last = time.monotonic()
        self._every = ALWAYS_FLUSH_S if _durable(broker) else OS_FLUSH_S

    def count(self, key: str, *, delivered: int = 0, failed: int = 0, dead_lettered: int = 0,
              dropped: int = 0) -> None:
        """Adds to the pending counts of ``key``."""
        with self._mu:
            cur = self._pending.setdefault(key, [0, 0, 0, 0])
            cur[0] += delivered
            cur[1] += failed
            cur[2] += dead_lettered
            cur[3] += dropped

    def maybe_flush(self) -> None:
        """Writes the pending counts if the interval (module docstring) has passed."""
        if time.monotonic() - self._last >= self._every:
            self.flush()

    def flush(self) -> None:
        """Writes the pending counts now."""
        with self._mu:
            pending, self._pending = self._pending, {}
            self._last = time.monotonic()
        if pending:
            try:
                add_many(self._broker, {k: DeliveryCounts(*v) for k, v in pending.items()})
            except BaseException:
                with self._mu:  # not written: keep them for the next flush
                    for k, v in pending.items():
                        cur = self._pending.setdefault(k, [0, 0, 0, 0])
                        for i, n in enumerate(v):
                            cur[i] += n
                raise
