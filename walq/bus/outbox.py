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
   CURSOR_EVERY records (more when they name many queues: CURSOR_PER_DEST)
   and at close; the bus log is trimmed below it.

The mark (``mark``: boot id, done, busy; read and written under the lock,
never synced) is trusted only in the boot that wrote it.  A holder that
finds ``busy > done`` (a copy killed part way), or another boot's mark,
copies that range again, skipping each copy whose id the queue's log
already holds from the record's saved position on.  So a put_events killed
at any instant ends in all of its queues or none once completion has run:
at the next put_events on the bus (any process), when a process opens the
bus, and when a broker opens the store and finds a bus that needs it
(``any_cut_short``: the mark and the log's control block, read raw).
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
from walq.log._native import ffi, lib
from walq.log.access import Access
from walq.log.fileio import OsIO
from walq.queue import records as R
from walq.topic import records as P

ROUTED = 1
#: A lost record's filler (``walq repair``, walq/bus/repair.py): type 2, no
#: payload, in a bus's or an archive's log; every reader skips it.
LOST = 2
#: Records between two cursors ...
CURSOR_EVERY = 1024
#: ... and at least this many per destination the cursor syncs.  A queue's
#: sync after a stretch of unsynced copies costs milliseconds here (its new
#: blocks' extents are converted and journalled), ~50 times a bus log's
#: per-call sync: with 16 queues reached, cursors every 1,024 calls took
#: about a fifth of a put_events' time (bench/bench_bus.py, "os").
CURSOR_PER_DEST = 256
MARK_FILE, CURSOR_FILE, LOCK_FILE = "mark", "cursor", "lock.outbox"
_MARK = struct.Struct("<8s40sQQ")  # magic, boot id, done, busy
_MAGIC = b"WALQBUS1"


def _boot() -> bytes:
    return (_read_boot_id() or "").encode("ascii")[:40].ljust(40, b"\0")


#: A target kind's destination: a queue ("q": queue, HTTP and handler
#: targets' internal queues), a topic ("t") or another bus ("b").
KIND_OF = {"archive": "a", "sqs": "q", "http": "q", "https": "q", "handler": "q", "topic": "t", "bus": "b"}


def pos_key(kind: str, uid: int) -> str:
    """The key of a destination's saved log position in a ROUTED record."""
    return f"{uid:016x}" if kind == "q" else f"{kind}{uid:016x}"


def open_dest(broker, kind: str, name: str, uid: int):
    """The queue, topic or bus ``name`` if it is still the one with ``uid``, else None."""
    from walq.errors import BusDoesNotExist, TopicDoesNotExist

    try:
        if kind == "q":
            d = broker.get_queue(name)
        elif kind == "t":
            d = broker.get_topic(name)
        elif kind == "a":
            return broker._bus_service().archive_log(name, uid)
        else:
            d = broker.get_bus(name)
    except (QueueDoesNotExist, TopicDoesNotExist, BusDoesNotExist):
        return None
    return d if d._uid == uid else None


def encode(copies: list, positions: dict, texts: list | None = None) -> bytes:
    """A ROUTED record: ``copies`` [(queue name, uid, copy id hex, body,
    kind)], ``positions`` {uid hex: queue log end before the call};
    ``texts``: the bodies that copies name by index (an event's JSON, which
    each of its plain targets gets: once in the record, not once a copy)."""
    rec = {"c": copies, "p": positions}
    if texts:
        rec["e"] = texts
    return json.dumps(rec, separators=(",", ":")).encode()


def find_routed(log, field: str, key: str, start: int) -> dict | None:
    """The decoded ROUTED record at or past ``start`` whose ``field`` (a
    tick's "tick", a replay batch's "replay") is ``key``, once it is as
    durable as the store's mode says: a claimer killed after appending it
    may have left it unsynced, and what is decided on it must not outlive it
    in a power cut.  None if there is none."""
    for rec in log.iter_from(max(start, log.first)):
        if rec.type == ROUTED:
            body = json.loads(rec.payload)
            if body.get(field) == key:
                log.settle(rec.seq + 1)
                return body
    return None


def body_of(rec: dict, copy: list) -> str:
    """The body of ``copy``, one of the decoded ROUTED record ``rec``'s:
    inline text, or the index of one of its ``e`` texts."""
    body = copy[3]
    return rec["e"][body] if type(body) is int else body


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
        # This process copied every record in [_seen_from, _seen_upto), and
        # those name exactly the destinations in _seen_dests: the cursor can
        # sync them without reading the records back.
        self._seen_from = self._seen_upto = -1
        self._seen_dests: set = set()

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

    def run(self, known: dict | None = None, opened: dict | None = None) -> None:
        """Returns once every record in the log so far is in its queues.
        ``known``: seq -> decoded record the caller just wrote; ``opened``:
        destinations the caller already opened, (kind, name, uid) -> the
        queue, topic or bus, or None (see ``open_dest``)."""
        with self._tmu:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
            try:
                buses = self._run_locked(known or {}, opened or {})
            finally:
                fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
        # Buses this one forwarded to copy theirs outside this bus's lock: two
        # buses that target each other never wait on each other's lock.
        for bus in buses:
            bus._outbox.run()

    def _run_locked(self, known: dict, opened: dict) -> None:
        log = self._log
        end = log.end
        mark = self._read_mark()
        if mark is None:
            done, busy = max(self.read_cursor(), log.first), end  # only the cursor is known durable
        else:
            done, busy = mark
        if done >= end:
            if mark is None:
                self._write_mark(done, done)  # this boot's now: the next broker open need not look again
            return []
        self._write_mark(done, max(busy, end))
        suspect_upto = busy if busy > done else done
        records = []
        for seq in range(done, end):
            if seq not in known:
                break
            records.append((seq, known[seq]))
        if len(records) != end - done:
            records = [(rec.seq, json.loads(rec.payload)) for rec in self._iter(done, end)]
        buses, dests = self._copy(records, suspect_upto, opened)
        if self._seen_upto != done:
            self._seen_from, self._seen_dests = done, set()
        self._seen_upto = end
        self._seen_dests |= dests
        self._write_mark(end, max(busy, end))
        self._since_cursor += end - done
        if self._since_cursor >= CURSOR_EVERY:
            # The destinations this process copied into lately: only a
            # guide for the interval (the cursor finds its own).
            if self._since_cursor >= CURSOR_PER_DEST * len(self._seen_dests):
                self._write_cursor(end)
        return buses

    def _iter(self, start: int, end: int):
        for rec in self._log.iter_from(max(start, self._log.first)):
            if rec.seq >= end:
                return
            if rec.type == ROUTED:
                yield rec

    def _copy(self, records: list, suspect_upto: int, opened: dict) -> tuple[list, set]:
        """Copies the records' copies into their destinations (for records
        below ``suspect_upto``, only those not there yet); returns the buses
        that got forwarded events, and every destination the records name
        ((kind, name, uid)).  ``opened``: as for ``run``."""
        broker = self._bus._broker
        per_dest: dict = {}  # (kind, name, uid) -> [(seq, copy id, body)]
        held_from: dict = {}  # (kind, name, uid) -> the lowest saved position among suspect records
        for seq, rec in records:
            texts = rec.get("e")
            suspect = seq < suspect_upto
            for c in rec["c"]:
                kind = c[4] if len(c) > 4 else "q"
                key = (kind, c[0], c[1])
                body = c[3]
                if type(body) is int:
                    body = texts[body]
                got = per_dest.get(key)
                if got is None:
                    got = per_dest[key] = []
                got.append((seq, c[2], body))
                if suspect:
                    pos = rec["p"].get(pos_key(kind, c[1]), 0)
                    held_from[key] = min(held_from.get(key, pos), pos)
        buses, queues = [], []
        for (kind, name, uid), copies in per_dest.items():
            dest = opened.get((kind, name, uid), opened)
            if dest is opened:
                dest = open_dest(broker, kind, name, uid)
            if dest is None:
                continue  # deleted (or deleted and made again): nothing to deliver to
            if (kind, name, uid) in held_from:
                held = self._held(kind, dest, held_from[(kind, name, uid)])
                copies = [c for c in copies if c[0] >= suspect_upto or c[1] not in held]
            if not copies:
                continue
            if kind == "q":
                queues.append((dest, copies))
                continue
            try:
                if kind == "a":
                    dest.store([(cid, body) for _seq, cid, body in copies])
                elif kind == "t":
                    now = self._bus._clock()
                    for _seq, cid, body in copies:
                        dest._log.append(P.encode(bytes.fromhex(cid), now, body.encode()), P.PUBLISH, settle=False)
                    dest._fan.run(dest._log.end)
                else:
                    dest._forward([(cid, body) for _seq, cid, body in copies])
                    buses.append(dest)
            except (QueueDoesNotExist, WalqError) as exc:
                if isinstance(exc, CorruptionError):
                    raise
                continue  # deleted meanwhile
        if queues:
            self._copy_into_queues(queues)
        return buses, set(per_dest)

    def _copy_into_queues(self, queues: list) -> None:
        """Writes copies into queues, ``[(queue, [(seq, copy id, body)])]``:
        into two or more, all by one ``walq_bus_copies`` call (the Python way,
        ``Queue._store_copies``, cost ~8 us a queue, more than the writes), holding each
        queue log's ``_tlock`` as ``Log.append`` does, taken in the queues'
        uid order as a topic's fan-out takes them (nothing holds two
        otherwise, so neither can wait on the other).  A copy the native
        append refuses (a roll, a closed log) goes the Python way, which
        says what is wrong; the ones after it natively again."""
        ready = []
        for dest, copies in queues:
            try:
                attrs = dest._attrs()
            except WalqError as exc:
                if isinstance(exc, CorruptionError):
                    raise
                continue  # deleted meanwhile
            if attrs.fifo:  # never a bus target (put_targets refuses it); here for safety
                self._store_slow(dest, copies)
                continue
            ready.append((dest._uid, dest, copies, attrs.delay))
        if len(ready) < 2:
            for _uid, dest, copies, _delay in ready:
                self._store_slow(dest, copies)  # one queue: one native append that way too, with less to set up
            return
        ready.sort(key=lambda r: r[0])
        writers, delays, cids, offs, lens, owners = [], [], [], [], [], []
        placed: dict = {}  # body text -> (offset, length) in the joined bodies
        chunks, size = [], 0
        for _uid, dest, copies, delay in ready:
            writer = dest._log._writer
            for _seq, cid, body in copies:
                at = placed.get(body)
                if at is None:
                    raw = body.encode()
                    at = placed[body] = (size, len(raw))
                    chunks.append(raw)
                    size += len(raw)
                writers.append(writer)
                delays.append(delay)
                cids.append(cid)
                offs.append(at[0])
                lens.append(at[1])
                owners.append(dest)
        n = len(writers)
        c_writers = ffi.new("struct walq_writer *[]", writers)
        c_delays = ffi.new("double[]", delays)
        c_ids = ffi.new("uint8_t[]", bytes.fromhex("".join(cids)))
        c_offs = ffi.new("uint64_t[]", offs)
        c_lens = ffi.new("uint32_t[]", lens)
        bodies = b"".join(chunks)
        locks = [dest._log._tlock for _uid, dest, _c, _d in ready]
        now = self._bus._clock()
        start = 0
        while start < n:
            for lock in locks:
                lock.acquire()
            try:
                got = lib.walq_bus_copies(c_writers + start, c_delays + start, n - start, c_ids + 16 * start,
                                          bodies, c_offs + start, c_lens + start, now)
            finally:
                for lock in reversed(locks):
                    lock.release()
            if got < 0:
                raise MemoryError("walq_bus_copies")
            counted: dict = {}
            for dest in owners[start:start + got]:
                counted[dest] = counted.get(dest, 0) + 1
            for dest, k in counted.items():
                dest._count_blind(k)
            start += got
            if start < n:
                i = start
                self._store_slow(owners[i], [(None, cids[i], bodies[offs[i]:offs[i] + lens[i]].decode())])
                start += 1

    @staticmethod
    def _store_slow(dest, copies: list) -> None:
        try:
            dest._store_copies([(bytes.fromhex(cid), body.encode(), b"", None, None) for _seq, cid, body in copies])
        except WalqError as exc:  # QueueDoesNotExist among them
            if isinstance(exc, CorruptionError):
                raise
            # deleted meanwhile

    @staticmethod
    def _held(kind: str, dest, start: int) -> set:
        """Copy ids already in ``dest``'s log from ``start`` on (hex)."""
        log = dest._log
        held: set = set()
        for _attempt in range(10):
            try:
                for rec in log.iter_from(max(start, log.first)):
                    if kind == "q" and rec.type == R.SEND:
                        held.add(rec.payload[:16].hex())
                    elif kind == "a":
                        held.add(rec.payload[:16].hex())
                    elif kind == "t" and rec.type == P.PUBLISH:
                        held.add(rec.payload[:16].hex())
                    elif kind == "b" and rec.type == ROUTED:
                        src = json.loads(rec.payload).get("src")
                        if src is not None:
                            held.add(src)
                return held
            except RecordGone:
                held.clear()  # compacted meanwhile: what moved kept its id; look again
        return held

    def _write_cursor(self, upto: int) -> None:
        """Syncs the bus log and every queue the records below ``upto`` name,
        records that in the cursor file, trims the bus log below it.  Under
        "os" nothing is synced (that mode promises nothing of a power cut)."""
        log = self._log
        durable = self._bus._broker._log_options.durability != "os"
        if durable:
            log.sync_to(upto)
        start = self.read_cursor()
        if 0 <= self._seen_from <= start and upto <= self._seen_upto:
            dests = self._seen_dests  # a superset when upto < _seen_upto: syncing more is harmless
        else:
            dests = set()
            for rec in self._iter(start, upto):
                for c in json.loads(rec.payload)["c"]:
                    dests.add((c[4] if len(c) > 4 else "q", c[0], c[1]))
        broker = self._bus._broker
        for kind, name, uid in dests if durable else ():
            try:
                d = open_dest(broker, kind, name, uid)
                if d is not None:
                    d._log.sync_to(d._log.end)
            except (WalqError, OSError):
                continue  # deleted meanwhile: its copies no longer matter
        self._io.write_file_atomic(os.path.join(self._dir, CURSOR_FILE),
                                   json.dumps({"upto": upto}).encode(), sync=durable)
        self._since_cursor = 0
        if upto == self._seen_upto:
            self._seen_from, self._seen_dests = upto, set()
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


def _in_use(path: str) -> bool:
    """Whether a live process holds an flock on ``path`` (tried without
    waiting, and released at once)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # drops the lock


def needs_completion(directory: str) -> bool:
    """Whether the bus in ``directory`` may hold records whose copies a
    crash cut short: its mark is missing, not one, or of another boot; or it
    says a copy is under way (``busy > done``) and no process holds the copy
    lock; or the log's control block says records were appended past
    ``done`` and no process has the log open (an appender killed before its
    copy; a live one copies its own).  Reads two small files, opens no log;
    a bus whose log was never opened has nothing to copy."""
    from walq.log.format import CTL_MAGIC

    try:
        with open(os.path.join(directory, "log.ctl"), "rb") as f:
            ctl = f.read(16)
    except FileNotFoundError:
        return False  # no log yet: nothing was ever appended
    try:
        with open(os.path.join(directory, MARK_FILE), "rb") as f:
            raw = f.read(_MARK.size)
    except FileNotFoundError:
        return True
    if len(raw) < _MARK.size:
        return True
    magic, boot, done, busy = _MARK.unpack(raw)
    if magic != _MAGIC or boot != _boot():
        return True
    if busy > done:
        return not _in_use(os.path.join(directory, LOCK_FILE))
    if len(ctl) == 16:
        # The block is trusted in this boot only, as the mark is.
        cmagic, end = struct.unpack("<QQ", ctl)
        return cmagic == CTL_MAGIC and end > done and not _in_use(os.path.join(directory, "lock.users"))
    return False


def any_cut_short(store: str) -> bool:
    """True if some bus of the store at ``store`` needs completing (see
    ``needs_completion``): at most two small file reads per bus, so a
    process that never uses buses pays almost nothing at open."""
    root = os.path.join(store, "buses")
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return False
    return any(len(n) == 16 and needs_completion(os.path.join(root, n)) for n in names)


def init_mark(directory: str) -> None:
    """Writes a new bus's mark: this boot's, nothing copied, nothing under way."""
    path = os.path.join(directory, MARK_FILE)
    fd = Access.of_directory(directory).create(path)
    try:
        os.pwrite(fd, _MARK.pack(_MAGIC, _boot(), 0, 0), 0)
    finally:
        os.close(fd)
