"""A bus's outbox: every put_events call's routed copies, copied exactly
once into the target queues (mirrors walq/topic/fanout.py, simpler: a
bus's routing is decided at put time and stored in the record).

1. ``put_events`` appends one ROUTED record to the bus's log - every copy
   it makes, ``[queue name, queue uid, copy id, body]``, and each target
   queue's log end before the call - and waits for it to be durable (group
   commit: about one fdatasync however many targets).
2. Under the bus's copy lock (``lock.outbox``, an flock), every record past
   the mark's ``done`` is copied into its queues without an fsync.
3. The durable ``cursor`` file (``{"upto": N}``, written atomically) says every
   record below ``upto`` is durable in its queues: it is written after the
   bus log and each queue those records name were synced, every
   CURSOR_EVERY records and at close; the bus log is trimmed below it.

The mark (``mark``: boot id, done, busy; read and written under the lock,
never synced) is trusted only in the boot that wrote it.  A holder that
finds ``busy > done`` (a copy killed part way), or another boot's mark,
copies that range again, skipping each copy whose id the queue's log
already holds from the record's saved position on.  So a put_events killed
at any instant ends in all of its queues or none once completion has run:
at the next put_events on the bus (any process) and when a process opens
the bus.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading

from walq.clock import _read_boot_id
from walq.errors import CorruptionError, QueueDoesNotExist, WalqError
from walq.log import RecordGone
from walq.log.access import Access
from walq.log.fileio import OsIO
from walq.queue import records as R

ROUTED = 1
CURSOR_EVERY = 1024
MARK_FILE, CURSOR_FILE, LOCK_FILE = "mark", "cursor", "lock.outbox"
_MARK = struct.Struct("<8s40sQQ")  # magic, boot id, done, busy
_MAGIC = b"WALQBUS1"


def _boot() -> bytes:
    return (_read_boot_id() or "").encode("ascii")[:40].ljust(40, b"\0")


def encode(copies: list, positions: dict) -> bytes:
    """A ROUTED record: ``copies`` [(queue name, uid, copy id hex, body)],
    ``positions`` {uid hex: queue log end before the call}."""
    return json.dumps({"c": copies, "p": positions}, separators=(",", ":")).encode()


class Outbox:
    """A bus's outbox state in this process."""

    def __init__(self, bus):
        self._bus = bus
        self._log = bus._log
        d = self._dir = bus._dir
        self._io = self._log.io or OsIO()
        access = Access.of_directory(d)
        self._lock_fh = os.fdopen(access.create(os.path.join(d, LOCK_FILE)), "a+b")
        self._mark_fd = access.create(os.path.join(d, MARK_FILE))
        self._boot = _boot()
        self._tmu = threading.Lock()
        self._since_cursor = 0

    # -- the mark and the cursor ----------------------------------------------------

    def _read_mark(self):
        raw = os.pread(self._mark_fd, _MARK.size, 0)
        if len(raw) < _MARK.size:
            return None
        magic, boot, done, busy = _MARK.unpack(raw)
        if magic != _MAGIC or boot != self._boot:
            return None
        return done, busy

    def _write_mark(self, done: int, busy: int) -> None:
        os.pwrite(self._mark_fd, _MARK.pack(_MAGIC, self._boot, done, busy), 0)

    def read_cursor(self) -> int:
        """Every record below this is durable in its queues."""
        path = os.path.join(self._dir, CURSOR_FILE)
        try:
            with open(path, "rb") as f:
                return json.loads(f.read())["upto"]
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptionError(f"bus cursor {path} is damaged: {exc}", path) from None

    def pending(self) -> bool:
        """True if some record is not known copied (cut short, another boot's
        mark, or appended by a process that died before copying)."""
        mark = self._read_mark()
        return mark is None or mark[1] > mark[0] or mark[0] < self._log.end

    # -- running --------------------------------------------------------------------

    def run(self, known: dict | None = None) -> None:
        """Returns once every record in the log so far is in its queues.
        ``known``: seq -> decoded record the caller just wrote."""
        with self._tmu:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
            try:
                self._run_locked(known or {})
            finally:
                fcntl.flock(self._lock_fh, fcntl.LOCK_UN)

    def _run_locked(self, known: dict) -> None:
        log = self._log
        end = log.end
        mark = self._read_mark()
        if mark is None:
            done, busy = max(self.read_cursor(), log.first), end  # only the cursor is known durable
        else:
            done, busy = mark
        if done >= end:
            return
        self._write_mark(done, max(busy, end))
        suspect_upto = busy if busy > done else done
        records = []
        for seq in range(done, end):
            if seq not in known:
                break
            records.append((seq, known[seq]))
        if len(records) != end - done:
            records = [(rec.seq, json.loads(rec.payload)) for rec in self._iter(done, end)]
        self._copy(records, suspect_upto)
        self._write_mark(end, max(busy, end))
        self._since_cursor += end - done
        if self._since_cursor >= CURSOR_EVERY:
            self._write_cursor(end)

    def _iter(self, start: int, end: int):
        for rec in self._log.iter_from(max(start, self._log.first)):
            if rec.seq >= end:
                return
            if rec.type == ROUTED:
                yield rec

    def _copy(self, records: list, suspect_upto: int) -> None:
        broker = self._bus._broker
        per_queue: dict = {}  # (name, uid) -> [copy]
        held_from: dict = {}  # (name, uid) -> the lowest saved position among suspect records
        for seq, rec in records:
            for name, uid, cid, body in rec["c"]:
                key = (name, uid)
                per_queue.setdefault(key, []).append((seq, bytes.fromhex(cid), body))
                if seq < suspect_upto:
                    pos = rec["p"].get(f"{uid:016x}", 0)
                    held_from[key] = min(held_from.get(key, pos), pos)
        for (name, uid), copies in per_queue.items():
            try:
                q = broker.get_queue(name)
            except QueueDoesNotExist:
                continue  # deleted: nothing to deliver to
            if q._uid != uid:
                continue  # deleted and made again: not the queue the rule named
            if (name, uid) in held_from:
                held = self._held(q, held_from[(name, uid)])
                copies = [c for c in copies if c[0] >= suspect_upto or c[1] not in held]
            if not copies:
                continue
            try:
                q._store_copies([(cid, body.encode(), b"", None, None) for _seq, cid, body in copies])
            except QueueDoesNotExist:
                continue

    @staticmethod
    def _held(q, start: int) -> set:
        """Message ids in ``q``'s log from ``start`` on."""
        log = q._log
        held: set = set()
        for _attempt in range(10):
            try:
                for rec in log.iter_from(max(start, log.first)):
                    if rec.type == R.SEND:
                        held.add(rec.payload[:16])
                return held
            except RecordGone:
                held.clear()  # compacted meanwhile: what moved kept its id; look again
        return held

    def _write_cursor(self, upto: int) -> None:
        """Syncs the bus log and every queue the records below ``upto`` name,
        records that in the cursor file, trims the bus log below it."""
        log = self._log
        log.sync_to(upto)
        start = self.read_cursor()
        queues = set()
        for rec in self._iter(start, upto):
            for name, uid, _cid, _body in json.loads(rec.payload)["c"]:
                queues.add((name, uid))
        broker = self._bus._broker
        for name, uid in queues:
            try:
                q = broker.get_queue(name)
                if q._uid == uid:
                    q._log.sync_to(q._log.end)
            except (QueueDoesNotExist, WalqError, OSError):
                continue  # deleted: its copies no longer matter
        self._io.write_file_atomic(os.path.join(self._dir, CURSOR_FILE),
                                   json.dumps({"upto": upto}).encode())
        self._since_cursor = 0
        log.delete_below(upto)

    def flush(self) -> None:
        """Writes the cursor if this process copied anything since the last one."""
        if self._since_cursor == 0:
            return
        with self._tmu:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
            try:
                mark = self._read_mark()
                if mark is not None and mark[1] <= mark[0] and mark[0] > self.read_cursor():
                    self._write_cursor(mark[0])
            finally:
                fcntl.flock(self._lock_fh, fcntl.LOCK_UN)

    def close(self) -> None:
        """Releases the lock file and the mark."""
        self._lock_fh.close()
        os.close(self._mark_fd)


def init_mark(directory: str) -> None:
    """Writes a new bus's mark: this boot's, nothing copied, nothing under way."""
    path = os.path.join(directory, MARK_FILE)
    fd = Access.of_directory(directory).create(path)
    try:
        os.pwrite(fd, _MARK.pack(_MAGIC, _boot(), 0, 0), 0)
    finally:
        os.close(fd)
