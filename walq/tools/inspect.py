"""Reading a store's files without opening it: ``walq verify`` and ``walq dump``.

Nothing here runs recovery or writes a byte, so both commands are safe on a
damaged store that ``walq.open`` would refuse.  Verify is safe on a store
other processes are using: it reads each log as of one moment, holding that
log's ``lock.open`` and ``lock.append`` (read-only descriptors, never
created) while it maps the segments and reads ``log.ctl`` and the
checkpoints, and judges the active segment only up to the end published
then (docs/format.md, "Verify on a live store").  The bytes are read as
docs/format.md specifies them; frames are checked by the same native code
the log uses (``walq_scan``, ``walq_find_valid``, ``walq_durable_after``).

What verify calls damage (exit 1) and what it only notes, following the
recovery rules of docs/format.md ("Recovery"):

* A segment that is not the newest of its log must have a valid header, hold
  exactly the records from its base up to the next segment's base, and have
  nothing valid after its end of data.  Anything else is damage.
* In the newest (active) segment, a record that does not validate is damage
  when a later valid record shows it had been synced (its ``seq - lag`` is
  above the bad record); otherwise it is a torn tail - writes a crash cut
  short, which the next open sets aside in ``torn-*.bin`` - and is noted.
  Valid records after the bad one are damage even so: they were written
  whole, so the bad one was not a write cut short (recovery would cut them
  aside as a torn tail; ``walq repair`` keeps them), and a ``torn-*.bin``
  file holding records that still validate is damage for the same reason.
  With ``strict=True`` (for use when the machine has not lost power since
  the last writer ran, as after kill -9), a torn tail below the end that
  ``log.ctl`` says was published is damage too: a process crash alone never
  tears a published record.
* Every checkpoint's checksum must match, and the newest checkpoint must
  cover the records the log no longer holds and no records it does not hold.
* Every queue record must decode (docs/format.md, "Queue records"), and
  every catalog record must be a JSON catalog entry.
* Every queue directory must be listed in the catalog (checked again
  holding the catalog's append lock); one whose uid a delete record names is
  a deleted queue not yet removed (a note), and names that are not 16 hex
  digits (``<uid>.deleted``, ``.trash``) are not queues.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import mmap
import os
import stat
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

from walq.catalog import DEFINITION, queue_label, queue_uid
from walq.errors import CorruptionError, InvalidParameter, QueueDoesNotExist
from walq.log._native import ffi, lib
from walq.log.format import (
    CTL_MAGIC,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    decode_segment_header,
    hash64,
    parse_segment_name,
)
from walq.queue import checkpoint as ckpt
from walq.queue import message_attributes as mattrs
from walq.queue import records as R
from walq.queue.ids import format_id

__all__ = [
    "Problem",
    "VerifyReport",
    "verify_store",
    "store_logs",
    "queue_dirs",
    "dump_log",
    "dump_segment",
    "body_json",
    "attributes_json",
]

_NOT_FOUND = 0xFFFFFFFFFFFFFFFF
_SCAN_CHUNK = 8192
_EXCERPT = 32

DAMAGE, TORN, NOTE = "damage", "torn", "note"


class Problem(NamedTuple):
    """Something verify found: ``kind`` is "damage", "torn" or "note"."""

    kind: str
    path: str
    offset: int | None
    length: int | None  # bytes affected, when known
    message: str
    excerpt: bytes = b""  # the first bytes at ``offset``

    def describe(self) -> str:
        """One line: what, where, how many bytes, and the bytes themselves."""
        where = self.path if self.offset is None else f"{self.path} offset {self.offset}"
        size = "" if self.length is None else f" ({self.length} bytes)"
        dump = f" [{self.excerpt.hex(' ')}{' ...' if self.length and self.length > len(self.excerpt) else ''}]" \
            if self.excerpt else ""
        return f"{self.kind.upper()} {where}{size}: {self.message}{dump}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "path": self.path, "offset": self.offset, "length": self.length,
                "message": self.message, "bytes": self.excerpt.hex()}


@dataclass
class VerifyReport:
    """What ``verify_store`` read and found."""

    store: str
    logs: int = 0
    segments: int = 0
    records: int = 0
    checkpoints: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def damage(self) -> list[Problem]:
        """The problems that make verify fail."""
        return [p for p in self.problems if p.kind == DAMAGE]

    @property
    def ok(self) -> bool:
        return not self.damage

    def to_json(self) -> dict:
        return {"store": self.store, "ok": self.ok, "logs": self.logs, "segments": self.segments,
                "records": self.records, "checkpoints": self.checkpoints,
                "bytes_checked": self.bytes_checked, "problems": [p.to_json() for p in self.problems]}


# -- finding the logs of a store ---------------------------------------------------


def is_store(path: str) -> bool:
    """Whether ``path`` looks like a walq store (it has a catalog log)."""
    return os.path.isdir(os.path.join(path, "catalog"))


def queue_dirs(store: str) -> list[str]:
    """The queue directories (``queues/<uid>``) present, sorted."""
    root = os.path.join(store, "queues")
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))]


def catalog_names(store: str) -> dict[int, str]:
    """uid -> queue name for every queue the catalog says exists (read raw).

    Stops quietly at the first record that does not validate; verify is the
    place that reports it.
    """
    queues: dict[str, int] = {}
    try:
        for rec in iter_log(os.path.join(store, "catalog")):
            _apply_catalog(queues, rec.payload)
    except (CorruptionError, ValueError, KeyError):
        pass
    return {uid: name for name, uid in queues.items()}


def _apply_catalog(queues: dict[str, int], payload: bytes) -> None:
    r = json.loads(payload)
    op, name, uid = r["op"], r["name"], r["uid"]
    if op in ("create", "set"):
        queues[name] = uid
    elif op == "delete":
        if queues.get(name) == uid:
            del queues[name]
    else:
        raise ValueError(f"unknown catalog op {op!r}")


def store_logs(store: str) -> list[tuple[str, str]]:
    """``(label, directory)`` of every log in the store: the catalog, then each queue."""
    names = catalog_names(store)
    out = [("catalog", os.path.join(store, "catalog"))]
    for d in queue_dirs(store):
        try:
            uid = int(os.path.basename(d), 16)
        except ValueError:
            uid = None
        out.append((f"queue {names[uid]}" if uid in names else f"queue dir {os.path.basename(d)}", d))
    return out


def segment_files(directory: str) -> list[tuple[int, str]]:
    """``(base, path)`` of a log's segment files, oldest first."""
    out = []
    for name in os.listdir(directory):
        base = parse_segment_name(name)
        if base is not None:
            out.append((base, os.path.join(directory, name)))
    return sorted(out)


def queue_dir(store: str, name: str) -> str:
    """The directory of the queue called ``name``; QueueDoesNotExist if none."""
    for uid, n in catalog_names(store).items():
        if n == name:
            return os.path.join(store, "queues", f"{uid:016x}")
    raise QueueDoesNotExist(f"queue {name!r} does not exist")


# -- reading segments raw ----------------------------------------------------------


class RawRecord(NamedTuple):
    seq: int
    type: int
    payload: bytes
    path: str
    offset: int


class _Mapped:
    """A file mapped read-only, with the stretches of it that hold data."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.size = os.fstat(self.fd).st_size
            self.mm = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ) if self.size else b""
        except BaseException:
            os.close(self.fd)
            raise
        self.ptr = ffi.from_buffer(self.mm)

    def close(self) -> None:
        self.ptr = None
        if isinstance(self.mm, mmap.mmap):
            try:
                self.mm.close()
            except BufferError:
                pass
        os.close(self.fd)

    def __enter__(self) -> "_Mapped":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def excerpt(self, off: int, n: int = _EXCERPT) -> bytes:
        return bytes(self.mm[off : min(self.size, off + n)])

    def regions(self, start: int):
        """``(start, end)`` of each stretch from ``start`` that may hold data:
        a segment is sparse, and its holes read as zeros (SEEK_DATA/SEEK_HOLE,
        as recovery does; the whole rest of the file where unsupported)."""
        if not hasattr(os, "SEEK_DATA"):
            if start < self.size:
                yield start, self.size
            return
        off = start
        while off < self.size:
            try:
                data = os.lseek(self.fd, off, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole from here on
                return
            if data >= self.size:
                return
            hole = min(os.lseek(self.fd, data, os.SEEK_HOLE), self.size)
            yield max(data, start), hole
            off = hole

    def any_data(self, start: int) -> bool:
        """Whether any byte from ``start`` on is non-zero."""
        for a, b in self.regions(start):
            if self.mm[a:b].count(0) != b - a:
                return True
        return False

    def last_nonzero(self, off: int) -> int:
        """One past the last non-zero byte at or after ``off`` (``off`` if none)."""
        last = off
        for a, b in self.regions(off):
            tail = len(self.mm[a:b].rstrip(b"\0"))
            if tail:
                last = a + tail
        return last

    def find_valid(self, start: int, salt: int, min_seq: int) -> int | None:
        """Offset of the first valid frame at or after ``start`` (8-aligned)
        with a sequence >= ``min_seq``, or None."""
        for a, b in self.regions(start):
            at = lib.walq_find_valid(self.ptr, b, a, salt, min_seq)
            if at != _NOT_FOUND:
                return at
        return None

    def durable_after(self, start: int, salt: int, min_seq: int) -> tuple[int, int]:
        """``(valid frames after start, highest durable point they recorded)``."""
        found, durable = 0, 0
        one = ffi.new("uint64_t *")
        for a, b in self.regions(start):
            durable = max(durable, lib.walq_durable_after(self.ptr, b, a, salt, min_seq, one))
            found += one[0]
        return found, durable


def _scan(m: _Mapped, off: int, salt: int, seq: int, want_records: bool, limit: int | None = None):
    """Scans frames from ``off``; yields ``(seq, offset, length, type)`` and
    finally returns the ``walq_scan_t`` where the scan stopped (status
    WALQ_SCAN_LIMIT at sequence ``limit``, if given)."""
    res = ffi.new("walq_scan_t *")
    if want_records:
        offs = ffi.new("uint64_t[]", _SCAN_CHUNK)
        lens = ffi.new("uint32_t[]", _SCAN_CHUNK)
        types = ffi.new("uint8_t[]", _SCAN_CHUNK)
    else:
        offs = lens = types = ffi.NULL
    while True:
        most = _SCAN_CHUNK if want_records else 1 << 62
        if limit is not None:
            most = min(most, limit - seq)
            if most <= 0:
                res.status, res.count, res.next_off, res.next_seq = lib.WALQ_SCAN_LIMIT, 0, off, seq
                return res
        lib.walq_scan(m.ptr, m.size, off, salt, seq, most, offs, lens, types, res)
        if want_records:
            for i in range(res.count):
                yield seq + i, offs[i], lens[i], types[i]
        off, seq = res.next_off, res.next_seq
        if res.status != lib.WALQ_SCAN_LIMIT:
            return res


class _SegmentResult(NamedTuple):
    end_seq: int  # sequence after the last valid record
    records: int
    end_off: int  # where the valid data ends


def _check_segment(m: _Mapped, base: int, salt: int, *, active: bool, next_base: int | None,
                   ctl_end: int | None, problems: list[Problem], on_record=None,
                   live_end: int | None = None) -> _SegmentResult:
    """Validates every frame of one mapped segment; appends what it finds to
    ``problems`` and hands valid records to ``on_record(seq, type, off, len)``.

    ``live_end``: the log is open in another process and had published
    records below this when the snapshot was taken; what lies past it is
    being written and is not judged."""
    path = m.path
    off, seq, count = SEGMENT_HEADER_SIZE, base, 0
    while True:
        gen = _scan(m, off, salt, seq, on_record is not None, live_end if active else None)
        while True:
            try:
                s, o, n, t = next(gen)
            except StopIteration as stop:
                res = stop.value
                break
            count += 1
            on_record(s, t, o, n)
        if on_record is None:
            count += res.count
        off, seq = res.next_off, res.next_seq
        if active and live_end is not None and seq >= live_end:
            return _SegmentResult(seq, count, off)
        if res.status == lib.WALQ_SCAN_BAD:
            nxt = m.find_valid(off + 8, salt, seq)
            if active:
                found, durable = m.durable_after(off + 8, salt, seq)
                synced = bool(found) and durable > seq
                if not synced and nxt is not None and live_end is None:
                    # Records that validate after the bad one were written
                    # whole, so it was not a write cut short: within one
                    # synced batch every record has the same lag, and a
                    # flipped byte in its first record looks like a tear.
                    (resume,) = struct.unpack_from("<Q", m.mm, nxt + 16)
                    problems.append(Problem(
                        DAMAGE, path, off, nxt - off,
                        f"record {seq} does not validate ({_why_bad(m, off, salt, seq)}), but {found} valid "
                        f"records follow it from record {resume}: written whole, so this is damage, not a "
                        "torn tail (the next open would cut them all aside; `walq repair` keeps them)",
                        m.excerpt(off)))
                    off, seq = nxt, resume
                    continue
                if not synced:
                    tail = m.last_nonzero(off) - off
                    if ctl_end is not None and ctl_end > seq:
                        problems.append(Problem(
                            DAMAGE, path, off, tail,
                            f"record {seq} does not validate, but log.ctl says records up to {ctl_end - 1} "
                            "were published (no power was lost, so a published record cannot be torn)",
                            m.excerpt(off)))
                    else:
                        problems.append(Problem(
                            TORN, path, off, tail,
                            f"torn tail: record {seq} does not validate and nothing after it had been "
                            "synced (a write cut short by a crash; the next open sets it aside)",
                            m.excerpt(off)))
                    return _SegmentResult(seq, count, off)
            length = (nxt - off) if nxt is not None else m.last_nonzero(off) - off
            why = _why_bad(m, off, salt, seq)
            if nxt is None:
                problems.append(Problem(DAMAGE, path, off, length,
                                        f"record {seq} does not validate ({why}); nothing valid follows",
                                        m.excerpt(off)))
                return _SegmentResult(seq, count, off)
            (resume,) = struct.unpack_from("<Q", m.mm, nxt + 16)
            lost = f"records {seq}-{resume - 1}" if resume - 1 > seq else f"record {seq}"
            problems.append(Problem(
                DAMAGE, path, off, length,
                f"record {seq} does not validate ({why}); {lost} unreadable, valid data resumes at "
                f"offset {nxt}" + (" (later records show it had been synced)" if active else ""),
                m.excerpt(off)))
            off, seq = nxt, resume
            continue
        break
    # End of data (a zero header) or end of file.  Nothing valid may follow.
    if active and live_end is not None:
        if seq < live_end:
            problems.append(Problem(
                DAMAGE, path, off, None,
                f"end of data after record {seq - 1}, but log.ctl says records up to {live_end - 1} were "
                "published (the log is open in another process)", m.excerpt(off)))
        return _SegmentResult(seq, count, off)
    if res.status == lib.WALQ_SCAN_END:
        if active:
            found, durable = m.durable_after(off + 8, salt, seq)
            if ctl_end is not None and ctl_end > seq:
                problems.append(Problem(
                    DAMAGE, path, off, None,
                    f"end of data after record {seq - 1}, but log.ctl says records up to {ctl_end - 1} were "
                    "published (no power was lost, so they cannot be missing)", m.excerpt(off)))
            elif found and durable > seq:
                problems.append(Problem(
                    DAMAGE, path, off, None,
                    f"end of data after record {seq - 1}, but {found} valid records follow that show "
                    f"records up to {durable - 1} had been synced: a zeroed range", m.excerpt(off)))
            elif found:
                problems.append(Problem(
                    TORN, path, off, m.last_nonzero(off) - off,
                    f"{found} unsynced records follow a zero gap after record {seq - 1} "
                    "(a torn tail; the next open sets it aside)", b""))
        else:
            nxt = m.find_valid(off + 8, salt, seq)
            if nxt is not None:
                problems.append(Problem(
                    DAMAGE, path, off, nxt - off,
                    f"end of data after record {seq - 1}, but a valid record follows at offset {nxt}: "
                    "a zeroed range", m.excerpt(off)))
    if not active and next_base is not None and seq != next_base:
        if seq < next_base:
            problems.append(Problem(
                DAMAGE, path, off, None,
                f"segment ends after record {seq - 1} but the next segment starts at {next_base}: "
                f"{_span(seq, next_base)} missing", m.excerpt(off)))
        else:
            problems.append(Problem(
                DAMAGE, path, off, None,
                f"segment holds records up to {seq - 1}, overlapping the next segment (base {next_base})",
                b""))
    return _SegmentResult(seq, count, off)


def _header_state(m: "_Mapped | OSError", base: int) -> str:
    """``"ok"``, ``"unwritten"`` (a bad header with nothing after it: a
    creation cut short), ``"zeroed"`` (an all-zero header with data after
    it) or ``"damaged"``."""
    if isinstance(m, OSError):
        return "damaged"
    header = m.excerpt(0, SEGMENT_HEADER_SIZE)
    decoded = decode_segment_header(header)
    if decoded is not None and decoded[0] == base:
        return "ok"
    if not m.any_data(SEGMENT_HEADER_SIZE):
        return "unwritten"
    return "zeroed" if not any(header) else "damaged"


def _why_bad(m: _Mapped, off: int, salt: int, seq: int) -> str:
    """A short reason a frame does not validate, from its header fields."""
    if m.size - off < RECORD_HEADER_SIZE:
        return "cut off by the end of the file"
    _checksum, length, type_ = struct.unpack_from("<QIB", m.mm, off)
    (fseq,) = struct.unpack_from("<Q", m.mm, off + 16)
    if type_ == 0:
        return "type 0"
    if fseq != seq:
        return f"it carries sequence {fseq}"
    if lib.walq_frame_size(length) > m.size - off:
        return f"length {length} runs past the end of the file"
    if hash64(bytes(m.mm[off + 8 : off + RECORD_HEADER_SIZE + length]), salt) == _checksum:
        return "non-zero padding"
    return "checksum mismatch"


def _read_ctl(directory: str) -> dict | None:
    """The control block's fields if it looks current, else None."""
    try:
        with open(os.path.join(directory, "log.ctl"), "rb") as f:
            raw = f.read(ffi.sizeof("struct walq_ctl"))
    except FileNotFoundError:
        return None
    if len(raw) < ffi.sizeof("struct walq_ctl"):
        return None
    ctl = ffi.cast("struct walq_ctl *", ffi.from_buffer(raw))
    if ctl.magic != CTL_MAGIC:
        return None
    return {"end_seq": ctl.end_seq, "seg_base": ctl.seg_base, "first_seq": ctl.first_seq,
            "durable_seq": ctl.durable_seq}


class LogSummary(NamedTuple):
    first: int  # base of the oldest segment
    end: int  # sequence after the last valid record


class _Snapshot:
    """One log's files as of one moment: taken while holding ``lock.open``
    (no recovery runs) and ``lock.append`` (no append, roll or trim), so a
    live store is seen consistent.  Segments are mapped and checkpoints read
    under the locks; a segment trimmed afterwards stays readable through its
    map, so only damage that was there at that moment is reported."""

    def __init__(self, directory: str, with_checkpoints: bool):
        self.directory = directory
        self.segs: list[tuple[int, str, _Mapped | OSError]] = []
        self.ckpts: list[tuple[int, str, bytes | OSError]] = []
        self.names: list[str] = []
        self.ctl: dict | None = None
        self.live = False
        self.consistent = True
        with _log_locks(directory) as (held, live):
            self.consistent, self.live = held, live
            self.names = sorted(os.listdir(directory))
            for base, path in segment_files(directory):
                try:
                    self.segs.append((base, path, _Mapped(path)))
                except OSError as exc:
                    self.segs.append((base, path, exc))
            self.ctl = _read_ctl(directory)
            if with_checkpoints:
                for pos in ckpt.list_checkpoints(directory):
                    path = os.path.join(directory, ckpt.checkpoint_name(pos))
                    try:
                        with open(path, "rb") as f:
                            self.ckpts.append((pos, path, f.read()))
                    except FileNotFoundError:
                        continue  # replaced by a newer one since the listing
                    except OSError as exc:
                        self.ckpts.append((pos, path, exc))

    def close(self) -> None:
        for _b, _p, m in self.segs:
            if isinstance(m, _Mapped):
                m.close()


#: How long verify waits for a log's locks before reading it without them.
LOCK_WAIT = 30.0


@contextlib.contextmanager
def _flocked(path: str, deadline: float):
    """``flock(LOCK_EX)`` on ``path`` (opened read-only, never created),
    waiting until ``deadline``; yields whether it is held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True  # no process ever opened the log: nothing to exclude
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.002)
        yield True
    finally:
        os.close(fd)  # drops the lock


@contextlib.contextmanager
def _log_locks(directory: str):
    """Holds ``lock.open`` then ``lock.append`` of one log; yields
    ``(held, live)``: whether both are held, and whether another process has
    the log open (its ``lock.users`` is held)."""
    deadline = time.monotonic() + LOCK_WAIT
    with _flocked(os.path.join(directory, "lock.open"), deadline) as a, \
            _flocked(os.path.join(directory, "lock.append"), deadline) as b:
        live = False
        try:
            fd = os.open(os.path.join(directory, "lock.users"), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live = True
            finally:
                os.close(fd)
        yield a and b, live


def verify_log(directory: str, *, kind: str, strict: bool = False, report: VerifyReport,
               progress: Callable[[str], None] | None = None,
               check: Callable[[int, bytes], None] | None = None) -> LogSummary | None:
    """Checks every segment of one log; returns its extent (None if it has none).
    ``check(type, payload)`` raises ValueError (KeyError, TypeError) for a
    record that does not decode as a ``kind`` record; by default the queue
    or catalog decoder, by ``kind``."""
    summary, _snap = _verify_log(directory, kind=kind, strict=strict, report=report, progress=progress,
                                 check=check)
    return summary


def _verify_log(directory: str, *, kind: str, strict: bool, report: VerifyReport,
                progress: Callable[[str], None] | None,
                check=None) -> tuple[LogSummary | None, _Snapshot | None]:
    try:
        snap = _Snapshot(directory, with_checkpoints=kind == "queue")
    except FileNotFoundError:
        return None, None  # the directory went away (a queue deleted meanwhile)
    try:
        return _verify_snapshot(snap, kind=kind, strict=strict, report=report, progress=progress,
                                check=check), snap
    finally:
        snap.close()


def _verify_snapshot(snap: _Snapshot, *, kind: str, strict: bool, report: VerifyReport,
                     progress: Callable[[str], None] | None, check=None) -> LogSummary | None:
    directory = snap.directory
    problems = report.problems
    if not snap.consistent:
        problems.append(Problem(NOTE, directory, None, None,
                                f"could not take this log's locks within {LOCK_WAIT:.0f} s: read without a "
                                "consistent view"))
    segs = [(b, p) for b, p, _m in snap.segs]
    maps = {b: m for b, _p, m in snap.segs}
    salts = {}
    for base, _p, m in snap.segs:
        if isinstance(m, _Mapped):
            header = decode_segment_header(m.excerpt(0, SEGMENT_HEADER_SIZE))
            if header is not None and header[0] == base:
                salts[base] = header[1]
    for name in snap.names:
        p = os.path.join(directory, name)
        if name.startswith("torn-") and name.endswith(".bin"):
            problems.append(_check_torn_file(p, name, salts))
        elif name.endswith(".seg.tmp"):
            problems.append(Problem(NOTE, p, None, None,
                                    "a segment creation cut short (removed on the next open)"))
    if not segs:
        return None
    report.logs += 1
    live_end = None
    if snap.live and snap.consistent and snap.ctl is not None and snap.ctl["seg_base"] == segs[-1][0]:
        live_end = snap.ctl["end_seq"]
    ctl = snap.ctl if strict else None
    check_record = check or (_check_queue_record if kind == "queue" else _check_catalog_record)
    # Newest segments whose creation never reached the disk (an all-zero
    # header, or a torn one with nothing after it) are what a crash leaves;
    # the next open sets them aside.  The newest other one is the active one.
    while segs and live_end is None:
        base, path = segs[-1]
        state = _header_state(maps[base], base)
        if state == "ok":
            break
        if state == "damaged" or (state == "zeroed" and strict):
            break  # reported below, as damage
        if state == "zeroed":
            problems.append(Problem(TORN, path, 0, SEGMENT_HEADER_SIZE,
                                    "newest segment's header is all zeros but data follows: a power cut "
                                    "wrote later pages and not the header (nothing here had been synced); "
                                    "without a power cut this is damage. The next open sets it aside"))
        else:
            problems.append(Problem(TORN, path, 0, SEGMENT_HEADER_SIZE,
                                    "newest segment's header never reached the disk (its creation was cut "
                                    "short; the next open sets it aside)"))
        report.segments += 1
        segs.pop()
    if not segs:
        return None
    end = segs[0][0]
    for i, (base, path) in enumerate(segs):
        active = i == len(segs) - 1
        next_base = None if active else segs[i + 1][0]
        report.segments += 1
        m = maps[base]
        if isinstance(m, OSError):
            problems.append(Problem(DAMAGE, path, None, None, f"cannot read: {m.strerror or m}"))
            continue
        header = decode_segment_header(m.excerpt(0, SEGMENT_HEADER_SIZE))
        if header is None or header[0] != base:
            why = "does not validate" if header is None else f"says base {header[0]}, its name says {base}"
            problems.append(Problem(DAMAGE, path, 0, SEGMENT_HEADER_SIZE, f"segment header {why}",
                                    m.excerpt(0)))
            continue
        salt = header[1]
        ctl_end = None
        if ctl is not None and active and ctl["seg_base"] == base:
            ctl_end = ctl["end_seq"]

        def on_record(seq, type_, off, n, _m=m):
            try:
                check_record(type_, bytes(_m.mm[off + RECORD_HEADER_SIZE : off + RECORD_HEADER_SIZE + n]))
            except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
                problems.append(Problem(DAMAGE, _m.path, off, lib.walq_frame_size(n),
                                        f"record {seq} (type {type_}) has a valid checksum but does not "
                                        f"decode as a {kind} record: {exc}", _m.excerpt(off)))

        res = _check_segment(m, base, salt, active=active, next_base=next_base, ctl_end=ctl_end,
                             problems=problems, on_record=on_record, live_end=live_end)
        report.records += res.records
        report.bytes_checked += res.end_off
        end = res.end_seq
        if progress:
            progress(path)
    return LogSummary(segs[0][0], end)


def _check_torn_file(path: str, name: str, salts: dict[int, int]) -> Problem:
    """A ``torn-*.bin`` file: NOTE, or DAMAGE when records in it still
    validate with their segment's salt (synced data cut aside)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        return Problem(NOTE, path, None, None, f"bytes recovery set aside (cannot read: {exc})")
    parts = name[len("torn-"):-len(".bin")].split("-")
    try:
        salt = salts.get(int(parts[0])) if parts[1] != "header" else struct.unpack_from("<Q", raw.ljust(64, b"\0"), 24)[0]
    except (ValueError, IndexError):
        salt = None
    found = []
    if salt is not None and raw:
        padded = raw + bytes(-len(raw) % 8 + RECORD_HEADER_SIZE)
        ptr = ffi.from_buffer(padded)
        off = SEGMENT_HEADER_SIZE if parts[1:2] == ["header"] else 0
        while True:
            at = lib.walq_find_valid(ptr, len(padded), off, salt, found[-1] + 1 if found else 0)
            if at == _NOT_FOUND:
                break
            n, (seq,) = struct.unpack_from("<I", padded, at + 8)[0], struct.unpack_from("<Q", padded, at + 16)
            if found and seq != found[-1] + 1:
                break
            found.append(seq)
            off = at + lib.walq_frame_size(n)
    if found:
        return Problem(DAMAGE, path, None, len(raw),
                       f"{_span(found[0], found[-1] + 1)} whole and valid in bytes recovery cut aside as a "
                       "torn tail: they were written whole after a damaged record (synced data, not a torn "
                       "write); `walq repair` brings them back", raw[:_EXCERPT])
    return Problem(NOTE, path, None, len(raw), "bytes recovery set aside after a crash (never returned)")


def _span(lo: int, hi: int) -> str:
    """"record N is" or "records N-M are" for the half-open range [lo, hi)."""
    return f"record {lo} is" if hi - lo == 1 else f"records {lo}-{hi - 1} are"


def _check_catalog_record(type_: int, payload: bytes) -> None:
    if type_ != 1:
        raise ValueError(f"catalog records have type 1, not {type_}")
    r = json.loads(payload)
    if r.get("op") not in ("create", "set", "delete") or not isinstance(r.get("name"), str) \
            or not isinstance(r.get("uid"), int):
        raise ValueError(f"not a catalog entry: {payload[:80]!r}")


def _check_queue_record(type_: int, p: bytes) -> None:
    """Raises if ``p`` does not decode as a queue record of ``type_``
    (with walq/queue/records.py's own decoders)."""
    if type_ == R.SEND:
        if len(p) < R.SEND_HEAD.size:
            raise ValueError(f"SEND of {len(p)} bytes is shorter than its {R.SEND_HEAD.size}-byte head")
        _mid, _s, _v, _f, _p, alen, glen, dlen, slen = R.SEND_HEAD.unpack_from(p)
        if R.SEND_HEAD.size + glen + dlen + slen + alen >= len(p):
            raise ValueError("SEND field lengths leave no body")
        mattrs.decode(R.decode_send(p).attributes)
        return
    if type_ == R.PURGE and len(p) != 8:
        raise ValueError(f"PURGE of {len(p)} bytes, not 8")
    if type_ == R.LEASE and len(p) < 8:
        raise ValueError(f"LEASE of {len(p)} bytes has no time")
    name = R.NAMES.get(type_)
    if name is None:
        raise ValueError(f"unknown queue record type {type_}")
    decode = _DECODERS.get(type_) or getattr(R, f"decode_{name}", None)
    if decode is not None:
        decode(p)  # struct.error if the length is not a whole number of entries


_DECODERS = {R.LEASE: R.decode_lease, R.HIDE: R.decode_hide, R.DELETE: R.decode_seqs, R.MOVED: R.decode_seqs,
             R.CHVIS: R.decode_chvis, R.PURGE: R.decode_purge}


def _verify_checkpoints(snap: _Snapshot, extent: LogSummary | None, report: VerifyReport,
                        progress: Callable[[str], None] | None) -> None:
    directory = snap.directory
    problems = report.problems
    for name in snap.names:
        if name.startswith("checkpoint-") and name.endswith(".tmp") and not snap.live:
            p = os.path.join(directory, name)
            problems.append(Problem(NOTE, p, None, None, "a checkpoint write cut short (ignored)"))
    positions = [pos for pos, _p, _r in snap.ckpts]
    newest_ok = None
    for pos, path, raw in snap.ckpts:
        report.checkpoints += 1
        if isinstance(raw, OSError):
            problems.append(Problem(DAMAGE, path, None, None, f"cannot read: {raw.strerror or raw}"))
            continue
        report.bytes_checked += len(raw)
        try:
            ckpt.decode(raw, path)
        except CorruptionError as exc:
            if "does not validate" in str(exc):
                why = (f"checkpoint does not validate (magic or XXH3-64 checksum over bytes "
                       f"0..{max(0, len(raw) - 8)} does not match)")
            else:  # the checksum matched, and the tables contradict each other
                why = f"checkpoint checksum matches but its contents do not decode: {exc}"
            problems.append(Problem(DAMAGE, path, 0, len(raw), why, raw[:_EXCERPT]))
            continue
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            problems.append(Problem(DAMAGE, path, 0, len(raw),
                                    f"checkpoint checksum matches but its contents do not decode: {exc}",
                                    raw[:_EXCERPT]))
            continue
        (applied,) = struct.unpack_from("<Q", raw, 8)
        if applied != pos:
            problems.append(Problem(DAMAGE, path, 8, 8, f"checkpoint says it covers records below {applied}, "
                                    f"its name says {pos}", raw[8:16]))
            continue
        newest_ok = pos
        if progress:
            progress(path)
    if positions and newest_ok != positions[-1]:
        return  # the newest is damaged: already reported
    if extent is None:
        return
    if newest_ok is None:
        if extent.first > 0:
            problems.append(Problem(DAMAGE, directory, None, None,
                                    f"the log starts at record {extent.first} but no checkpoint covers "
                                    "the records below it"))
        return
    if newest_ok < extent.first:
        problems.append(Problem(DAMAGE, os.path.join(directory, ckpt.checkpoint_name(newest_ok)), None, None,
                                f"the newest checkpoint covers records below {newest_ok}, but the log starts "
                                f"at {extent.first}: {_span(newest_ok, extent.first)} gone"))
    elif newest_ok > extent.end:
        problems.append(Problem(DAMAGE, os.path.join(directory, ckpt.checkpoint_name(newest_ok)), None, None,
                                f"the checkpoint covers records below {newest_ok}, but the log holds valid "
                                f"records only below {extent.end}: records the checkpoint applied are gone"))


def verify_store(store: str, *, strict: bool = False,
                 progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Reads every segment and checkpoint of every log in ``store``.

    Safe beside live processes: each log is read as of one moment (see
    ``_Snapshot``).  ``progress`` is called with each file's path once it is
    checked.
    """
    if not is_store(store):
        raise InvalidParameter(f"no walq store at {store} (no catalog/ directory)")
    report = VerifyReport(store)
    report.problems.extend(unsafe_files(store))
    verify_log(os.path.join(store, "catalog"), kind="catalog", strict=strict, report=report, progress=progress)
    listed, known = catalog_history(store)
    for d in queue_dirs(store):
        uid = queue_uid(os.path.basename(d))
        if uid is None:
            continue  # <uid>.deleted, .trash, ...: not a queue
        if uid not in listed:
            problem = _unlisted_queue_dir(store, d, uid)
            if problem is None:
                continue
            report.problems.append(problem)
        extent, snap = _verify_log(d, kind="queue", strict=strict, report=report, progress=progress)
        if snap is not None:
            _verify_checkpoints(snap, extent, report, progress)
    from walq.topic import inspect as topic_inspect  # topics: catalog, logs, cursors, leftovers
    report.problems += topic_inspect.verify(store, report, progress)
    from walq.bus import inspect as bus_inspect  # buses: catalog, logs, marks, cursors, archives, targets
    report.problems += bus_inspect.verify(store, report, strict=strict, progress=progress)
    return report


def catalog_history(store: str) -> tuple[dict[int, str], set[int]]:
    """``(uid -> name of every queue the catalog lists, every uid any of its
    records names)``, read raw; stops quietly at damage (verify reports it)."""
    queues: dict[str, int] = {}
    known: set[int] = set()
    try:
        for rec in iter_log(os.path.join(store, "catalog")):
            r = json.loads(rec.payload)
            known.add(r["uid"])
            _apply_catalog(queues, rec.payload)
    except (CorruptionError, ValueError, KeyError, TypeError, OSError):
        pass
    return {uid: name for name, uid in queues.items()}, known


def _unlisted_queue_dir(store: str, d: str, uid: int) -> Problem | None:
    """What a queue directory the catalog does not list is: looked at again
    holding the catalog's append lock (a create holds it from making the
    directory to appending its record).  None if it is listed after all, or
    gone."""
    cat = os.path.join(store, "catalog")
    with _flocked(os.path.join(cat, "lock.append"), time.monotonic() + LOCK_WAIT):
        listed, known = catalog_history(store)
        if uid in listed:
            return None
        if not os.path.isdir(d):
            return None  # removed by a delete meanwhile
        has_def = os.path.exists(os.path.join(d, DEFINITION))
        try:
            has_log = bool(segment_files(d))
        except FileNotFoundError:
            return None
    if uid in known:
        return Problem(NOTE, d, None, None, "directory of a deleted queue (its files not yet removed)")
    if not has_def and not has_log:
        return Problem(NOTE, d, None, None, "a queue directory with no definition and no log (a creation "
                                            "cut short)")
    label = queue_label(d)
    return Problem(DAMAGE, d, None, None,
                   f"{label} is not listed in the catalog, and no catalog record ever named it: catalog "
                   f"records were lost (its messages are unreachable); run `walq repair --data {store}`")


def unsafe_files(store: str) -> list[Problem]:
    """Entries of ``store`` that walq refuses to open (walq/log/access.py):
    symbolic links, anything but regular files and directories, and files
    owned by a user other than the store's owner, this user or root (in a
    shared store: outside its group).  Each is damage: a planted link can
    make one queue serve another's messages, or a write land elsewhere."""
    problems = []
    root = os.path.realpath(store)
    st = os.stat(root)
    shared_gid = st.st_gid if st.st_mode & stat.S_ISGID and st.st_mode & 0o070 else None
    trusted = {st.st_uid, os.geteuid(), 0}
    for directory, dirs, files in os.walk(root):  # never descends through links
        if directory == root and "quarantine" in dirs:
            dirs.remove("quarantine")  # what repair set aside: walq never opens it again
        for name in dirs + files:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                why = f"a symbolic link (to {os.readlink(path)}); walq refuses links in a store"
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                why = "neither a regular file nor a directory; walq refuses it"
            elif st.st_uid not in trusted and (shared_gid is None or st.st_gid != shared_gid):
                why = f"owned by uid {st.st_uid}, not by the store's user or root; walq refuses it"
            else:
                continue
            problems.append(Problem(DAMAGE, path, None, None, why))
    return problems


def count_files(store: str) -> int:
    """Segments and checkpoints verify will read (for a progress bar)."""
    n = len(segment_files(os.path.join(store, "catalog"))) if is_store(store) else 0
    for d in queue_dirs(store):
        if queue_uid(os.path.basename(d)) is None:
            continue
        try:
            n += len(segment_files(d)) + len(ckpt.list_checkpoints(d))
        except FileNotFoundError:
            continue  # deleted meanwhile
    from walq.bus.repair import log_dirs as bus_logs
    from walq.topic.repair import log_dirs as topic_logs

    for _label, d in topic_logs(store) + bus_logs(store):
        try:
            n += len(segment_files(d))
        except FileNotFoundError:
            continue
    return n


# -- dumping -------------------------------------------------------------------------


class Damage(NamedTuple):
    """Bytes of a segment that do not validate, found while reading past damage."""

    path: str
    offset: int
    length: int
    seq: int  # the first record they should hold
    resume: int | None  # the sequence valid data resumes at, None if nothing valid follows

    def message(self) -> str:
        if self.resume is None:
            return f"record {self.seq} does not validate and nothing valid follows (a torn tail or damage)"
        lost = f"records {self.seq}-{self.resume - 1}" if self.resume - 1 > self.seq else f"record {self.seq}"
        return f"{lost} unreadable ({self.length} bytes do not validate); reading resumes at record {self.resume}"


def iter_segment(path: str, *, start: int = 0, past_damage: bool = False) -> Iterator[RawRecord]:
    """The valid records of one segment file, from sequence ``start``.

    Stops at the end of data or at a torn tail.  At a record that does not
    validate while valid records follow it: raises CorruptionError (with
    file and offset), or with ``past_damage`` yields a ``Damage`` and goes on
    at the next valid record (``walq dump``).
    """
    with _Mapped(path) as m:
        header = decode_segment_header(m.excerpt(0, SEGMENT_HEADER_SIZE))
        if header is None:
            raise CorruptionError(f"segment header does not validate: {path} at offset 0", path, 0)
        base, salt = header
        off, next_seq = SEGMENT_HEADER_SIZE, base
        while True:
            gen = _scan(m, off, salt, next_seq, True)
            while True:
                try:
                    seq, roff, n, t = next(gen)
                except StopIteration as stop:
                    res = stop.value
                    break
                if seq >= start:
                    yield RawRecord(seq, t, bytes(m.mm[roff + RECORD_HEADER_SIZE : roff + RECORD_HEADER_SIZE + n]),
                                    path, roff)
            if res.status not in (lib.WALQ_SCAN_BAD, lib.WALQ_SCAN_END):
                return
            nxt = m.find_valid(res.next_off + 8, salt, res.next_seq)
            if nxt is None:
                if past_damage and res.status == lib.WALQ_SCAN_BAD:
                    yield Damage(path, res.next_off, m.last_nonzero(res.next_off) - res.next_off, res.next_seq, None)
                return
            if not past_damage:
                raise CorruptionError(
                    f"record {res.next_seq} in {path} at offset {res.next_off} does not validate "
                    f"(valid data resumes at offset {nxt})", path, res.next_off)
            (resume,) = struct.unpack_from("<Q", m.mm, nxt + 16)
            yield Damage(path, res.next_off, nxt - res.next_off, res.next_seq, resume)
            off, next_seq = nxt, resume


def iter_log(directory: str, *, start: int = 0, past_damage: bool = False) -> Iterator[RawRecord]:
    """The valid records of every segment of a log, oldest first (with
    ``past_damage``, a ``Damage`` for each unreadable stretch, and for each
    gap between segments)."""
    segs = segment_files(directory)
    expect = None
    for i, (base, path) in enumerate(segs):
        if i + 1 < len(segs) and segs[i + 1][0] <= start:
            continue
        if past_damage and expect is not None and base > expect and base > start:
            yield Damage(directory, 0, 0, expect, base)
        expect = None
        for rec in iter_segment(path, start=start, past_damage=past_damage):
            if isinstance(rec, RawRecord):
                expect = rec.seq + 1
            yield rec


def body_json(body: bytes, *, include: bool = True) -> dict:
    """``{"body": text}`` for UTF-8 bodies, else ``{"body_base64": ...}``."""
    if not include:
        return {"size": len(body)}
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode("ascii")}


def attributes_json(attrs: dict) -> dict:
    """Message attributes with Binary values as ``{"Binary": base64}``."""
    return {k: ({"Binary": base64.b64encode(v).decode("ascii")} if isinstance(v, bytes) else v)
            for k, v in attrs.items()}


def queue_record_json(rec: RawRecord, *, bodies: bool = True) -> dict:
    """One queue record as a JSON-able dict (docs/format.md, "Queue records")."""
    out: dict = {"seq": rec.seq, "type": R.NAMES.get(rec.type, f"type-{rec.type}"),
                 "segment": os.path.basename(rec.path), "offset": rec.offset}
    p = rec.payload
    try:
        if rec.type == R.SEND:
            s = R.decode_send(p)
            out.update(message_id=format_id(s.message_id), sent_at=s.sent_at, visible_at=s.visible_at)
            if s.first_received_at:
                out["first_received_at"] = s.first_received_at
            if s.prior_receives:
                out["prior_receives"] = s.prior_receives
            for key in ("group", "dedup_id", "source"):
                if getattr(s, key) is not None:
                    out[key] = getattr(s, key)
            attrs = mattrs.decode(s.attributes)
            if attrs:
                out["attributes"] = attributes_json(attrs)
            out.update(body_json(s.body, include=bodies))
        elif rec.type == R.LEASE:
            now, entries = R.decode_lease(p)
            out.update(now=now, messages=[{"seq": m, "deadline": d} for m, d in entries])
        elif rec.type == R.HIDE:
            out["messages"] = [{"seq": m, "deadline": d} for m, d in R.decode_hide(p)]
        elif rec.type in (R.DELETE, R.MOVED):
            out["messages"] = R.decode_seqs(p)
        elif rec.type == R.CHVIS:
            out["messages"] = [{"seq": m, "lease": lease, "deadline": d} for m, lease, d in R.decode_chvis(p)]
        elif rec.type == R.PURGE:
            out["upto"] = R.decode_purge(p)
        elif rec.type == getattr(R, "CARRY", None):
            out["messages"] = [{"seq": new, "replaces": old, "lease": lease, "deadline": d, "orig": orig}
                               for new, old, lease, d, orig in R.decode_carry(p)]
        else:
            out["payload_base64"] = base64.b64encode(p).decode("ascii")
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        out["error"] = f"does not decode: {exc}"
        out["payload_base64"] = base64.b64encode(p).decode("ascii")
    return out


def catalog_record_json(rec: RawRecord) -> dict:
    out: dict = {"seq": rec.seq, "type": "catalog", "segment": os.path.basename(rec.path), "offset": rec.offset}
    try:
        out["entry"] = json.loads(rec.payload)
    except ValueError as exc:
        out["error"] = f"does not decode: {exc}"
        out["payload_base64"] = base64.b64encode(rec.payload).decode("ascii")
    return out


def damage_json(d: Damage) -> dict:
    """A ``Damage`` as a dump line: ``{"damage": ..., ...}``."""
    if d.offset == 0 and d.length == 0:
        msg = (f"records {d.seq}-{d.resume - 1} are missing: no segment holds them" if d.resume - 1 > d.seq
               else f"record {d.seq} is missing: no segment holds it")
        return {"damage": msg, "log": d.path, "seq": d.seq, "resume": d.resume}
    return {"damage": d.message(), "segment": os.path.basename(d.path), "offset": d.offset, "length": d.length,
            "seq": d.seq, "resume": d.resume}


def dump_log(directory: str, *, kind: str, start: int = 0, bodies: bool = True) -> Iterator[dict]:
    """Every record of a log (``kind`` "queue" or "catalog") as JSON-able
    dicts; damage is reported inline (a ``{"damage": ...}`` line) and
    reading goes on past it."""
    for rec in iter_log(directory, start=start, past_damage=True):
        if isinstance(rec, Damage):
            yield damage_json(rec)
        else:
            yield queue_record_json(rec, bodies=bodies) if kind == "queue" else catalog_record_json(rec)
    if kind == "catalog":  # then the topics and buses (walq/topic/inspect.py, walq/bus/inspect.py)
        from walq.bus import inspect as bus_inspect
        from walq.topic import inspect as topic_inspect
        store = os.path.dirname(os.path.abspath(directory))
        yield from topic_inspect.describe(store)
        yield from bus_inspect.describe(store)


def dump_segment(path: str, *, start: int = 0, bodies: bool = True) -> Iterator[dict]:
    """Every record of one segment file; decoded as catalog records when the
    file lies in a ``catalog`` directory, as bus or archive records in a
    bus's or archive's directory, else as queue records.  Damage is
    reported inline, as by dump_log."""
    from walq.bus import inspect as bus_inspect

    kind = "catalog" if os.path.basename(os.path.dirname(os.path.abspath(path))) == "catalog" else \
        bus_inspect.segment_kind(path) or "queue"
    for rec in iter_segment(path, start=start, past_damage=True):
        if isinstance(rec, Damage):
            yield damage_json(rec)
        elif kind in ("bus", "archive"):
            yield bus_inspect.record_json(rec, kind)
        else:
            yield queue_record_json(rec, bodies=bodies) if kind == "queue" else catalog_record_json(rec)
