"""Log: append, read, sync and trim a segmented log shared by many processes.

Concurrency (see docs/format.md for the files):

* ``lock.append`` - flock held while a batch is framed, written and published
  (taken in C on the hot path; a threading lock orders this process's threads
  first, since flock does not exclude threads sharing one descriptor).
* ``lock.sync`` - taken by whoever fdatasyncs on behalf of everyone (group
  commit, as PostgreSQL's XLogFlush): outside the append lock, so appenders
  keep writing while one process waits on the disk.
* ``lock.open`` and ``lock.users`` - every open handle holds ``lock.users``
  shared; an opener that can take it exclusively is alone and runs recovery.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import mmap
import os
import secrets
import threading
import time
from typing import Iterator, NamedTuple

import portalocker

from walq.errors import BrokerClosed, CorruptionError, InvalidParameter, LogPoisoned, ReadOnlyStore, WalqError
from walq.log import recovery
from walq.log._native import check_os, check_sync, ffi, lib
from walq.log.access import Access
from walq.log.fileio import OsIO, allocate
from walq.log.format import (
    CTL_FILE_SIZE,
    CTL_MAGIC,
    SEGMENT_HEADER_SIZE,
    encode_segment_header,
    parse_segment_name,
    segment_name,
)
from walq.log.options import LogOptions
from walq.log.segment import Segment

MAX_RECORD = (1 << 32) - 1 - 64


class Record(NamedTuple):
    """One record read back: its sequence, type (1-255) and payload."""

    seq: int
    type: int
    payload: bytes


class RecordGone(WalqError, LookupError):
    """The sequence was trimmed by delete_below, or was never written."""


class Log:
    """A segmented append-only log in a directory.  Thread-safe; share the
    directory with any number of processes, each with its own ``Log``."""

    def __init__(self, path: str | os.PathLike, options: LogOptions | None = None, io: OsIO | None = None,
                 readonly: bool = False, *, create: bool = True, on_recover=None):
        self.path = os.fspath(path)
        self.readonly = readonly
        self._on_recover = on_recover
        self.options = options or LogOptions()
        # A read-only handle writes nothing, and so waits for nothing.
        self._always = self.options.durability == "always" and not readonly
        self.io = io or OsIO()
        # The usual sync runs natively unless a shim must see every call.
        self._native_sync = type(self.io) is OsIO
        self._closed = True
        self._poisoned = False
        self._segments: dict[int, Segment] = {}
        self._last_read: Segment | None = None
        self._bases: list[int] = []
        # _tlock orders this process's appenders.  The queue's native fast
        # paths (walq.queue.queue: _receive_now, _delete_now, _send_plain)
        # hold it and use _writer, _seq_out and _append_fd directly, after
        # checking _closed under it, as LockedLog and append() do here;
        # _receive_now also loads _p_end_seq without it (the queue keeps
        # _ctl_buf referenced, so the block stays mapped).
        self._tlock = threading.Lock()
        self._alloc_tlock = threading.Lock()  # see _alloc_locked
        self._zeroer: threading.Thread | None = None
        self._zero_kick = threading.Event()
        self._seq_out = ffi.new("uint64_t[1]")
        self._len1 = ffi.new("uint32_t[1]")
        # The active segment for the native append; aimed by _aim.
        self._writer = ffi.new("struct walq_writer *", {"fd": -1, "max_record": MAX_RECORD})
        self._writer_seg: Segment | None = None  # keeps the aimed descriptor open
        self._append_one = lib.walq_append_one
        if not readonly and create:
            Access.inherited(self.path).make_dir(self.path)
        elif not os.path.isdir(self.path):
            # Never recreated here: the directory of a queue deleted since
            # the caller looked it up would come back as an orphan.
            raise FileNotFoundError(errno.ENOENT, "log directory does not exist", self.path)
        self.io.access = Access.of_directory(self.path, readonly=readonly)
        self._open_files()
        try:
            self._attach()
        except BaseException:
            self._release_files()
            raise
        self._closed = False
        self._flusher = None
        if self.options.durability == "batch" and not readonly:
            self._stop = threading.Event()
            self._flusher = threading.Thread(target=self._flush_loop, name="walq-log-flush", daemon=True)
            self._flusher.start()

    @classmethod
    def open(cls, path: str | os.PathLike, options: LogOptions | None = None, io: OsIO | None = None,
             readonly: bool = False, *, create: bool = True, on_recover=None) -> "Log":
        """Opens (creating if needed, recovering if it crashed) the log at ``path``.

        ``readonly``: opens an existing log for reading only (a user who may
        read the files but not write them): no file is created, locked,
        recovered or changed, and every write raises ReadOnlyStore.  It
        reads through the live control block while one is valid (writers
        keep it current); after a crash nobody recovered from, it derives
        a private one from the segments, taking the valid records before a
        torn tail (recovery.read_only_state).
        ``create=False``: FileNotFoundError if the directory is missing.
        ``on_recover(end)`` runs right after a recovery, while no other
        process has the log open, with the end recovery found: for files
        beside a log that must agree with it (a queue's checkpoints).
        """
        return cls(path, options, io, readonly, create=create, on_recover=on_recover)

    # -- opening -----------------------------------------------------------

    def _open_files(self) -> None:
        if self.readonly:
            self._open_files_readonly()
            return
        p = self.path
        self._open_fh = self._lock_file("lock.open")
        self._users_fh = self._lock_file("lock.users")
        self._sync_fh = self._lock_file("lock.sync")
        self._alloc_fd = self.io.access.create(os.path.join(p, "lock.alloc"))
        self._append_fd = self.io.access.create(os.path.join(p, "lock.append"))
        ctl_path = os.path.join(p, "log.ctl")
        fd = self.io.access.create(ctl_path)
        try:
            if os.fstat(fd).st_size < CTL_FILE_SIZE:
                # Blocks first, then the map: a store of a sparse file through
                # a map faults (SIGBUS) on a full file system.
                allocate(fd, CTL_FILE_SIZE, ctl_path)
            self._ctl_mm = mmap.mmap(fd, CTL_FILE_SIZE, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self._map_ctl()

    def _open_files_readonly(self) -> None:
        """No lock files (they may not be writable, and holding one would
        change what writers see); log.ctl mapped read-only if it is valid,
        else a private block (``_attach`` fills it)."""
        self._open_fh = self._users_fh = self._sync_fh = None
        self._alloc_fd = self._append_fd = -1
        ctl_path = os.path.join(self.path, "log.ctl")
        self._ctl_mm = None
        try:
            fd = self.io.access.open(ctl_path)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                if os.fstat(fd).st_size >= CTL_FILE_SIZE:
                    self._ctl_mm = mmap.mmap(fd, CTL_FILE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
            finally:
                os.close(fd)
        if self._ctl_mm is not None:
            ctl = ffi.cast("struct walq_ctl *", ffi.from_buffer(self._ctl_mm))
            if lib.walq_load(ffi.addressof(ctl, "magic")) != CTL_MAGIC or lib.walq_load(ffi.addressof(ctl, "busy")):
                self._ctl_mm.close()
                self._ctl_mm = None
        if self._ctl_mm is None:
            self._ctl_mm = mmap.mmap(-1, CTL_FILE_SIZE)  # private: filled from the segments
            self._private_ctl = True
        else:
            self._private_ctl = False
        self._map_ctl()

    def _map_ctl(self) -> None:
        self._ctl_buf = ffi.from_buffer(self._ctl_mm)
        self.ctl = ffi.cast("struct walq_ctl *", self._ctl_buf)
        # Field pointers, computed once: loads on the hot path are one call.
        self._fields = {name: ffi.addressof(self.ctl, name) for name, _ in ffi.typeof("struct walq_ctl").fields
                        if name not in ("notify", "waiters", "reserved")}
        self._p_end_seq = self._fields["end_seq"]
        self._p_poisoned = self._fields["poisoned"]
        self._p_first_seq = self._fields["first_seq"]
        self._p_seg_base = self._fields["seg_base"]
        self._run_seg: Segment | None = None
        self._writer.ctl = self.ctl
        self._writer.lockfd = self._append_fd
        self._syncer = ffi.new("struct walq_syncer *", {"ctl": self.ctl,
                                                       "sync_fd": self._sync_fh.fileno() if self._sync_fh else -1})
        self._p_durable = self._fields["durable_seq"]
        self._p_dir_synced = self._fields["dir_synced_base"]

    def _lock_file(self, name: str):
        """A lock file as a file object (portalocker locks file objects)."""
        return os.fdopen(self.io.access.create(os.path.join(self.path, name)), "r+b", buffering=0)

    def _release_files(self) -> None:
        """Closes the lock files (``_tlock`` held, or not yet shared).

        Other threads may still be inside a call that passed its closed
        check: segments are dropped, not closed, so that a reader's map and
        a syncer's descriptor stay valid until their last reference goes
        (a closed descriptor's number can be reused by an unrelated file);
        the control block stays mapped until this object goes, since
        field pointers into it are loaded without a lock (close() cannot
        wait for those readers).  Every use of the lock files checks
        ``_closed`` under ``_tlock`` first.
        """
        self._writer.fd = -1  # the native append now always takes the slow path
        self._writer_seg = None
        self._run_seg = None
        self._last_read = None
        self._segments.clear()
        for fh in (self._open_fh, self._users_fh, self._sync_fh):
            if fh is not None:
                fh.close()  # closing drops any flock held through it
        for fd in (self._append_fd, self._alloc_fd):
            if fd >= 0:
                os.close(fd)

    def _attach(self) -> None:
        if self.readonly:
            if self._private_ctl:
                recovery.read_only_state(self)
            self._refresh_bases()
            return
        portalocker.lock(self._open_fh, portalocker.LOCK_EX)
        try:
            try:
                portalocker.lock(self._users_fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
                alone = True
            except portalocker.LockException:
                alone = False
            if alone or lib.walq_load(ffi.addressof(self.ctl, "magic")) != CTL_MAGIC:
                # Nobody else has the log open, so the control block may be
                # stale (power loss) or absent: rebuild it from the segments.
                recovery.recover(self)
                if self._on_recover is not None:
                    self._on_recover(self._load("end_seq"))
            if alone:
                portalocker.unlock(self._users_fh)
            portalocker.lock(self._users_fh, portalocker.LOCK_SH)
        finally:
            portalocker.unlock(self._open_fh)
        if self._load("poisoned"):
            raise LogPoisoned(0, "an fsync failed in another process; close every handle and reopen", self.path)
        self._refresh_bases()

    # -- control block helpers --------------------------------------------

    def _load(self, field: str) -> int:
        return lib.walq_load(self._fields[field])

    def _store(self, field: str, value: int) -> None:
        lib.walq_store(self._fields[field], value)

    def _refresh_bases(self) -> None:
        self._bases = sorted(b for b in map(parse_segment_name, os.listdir(self.path)) if b is not None)
        # Drop segments another process removed: an open descriptor would
        # keep their disk space allocated for as long as this process lives.
        present = set(self._bases)
        for base in [b for b in list(self._segments) if b not in present]:
            self._drop_segment(base)

    def _drop_segment(self, base: int) -> None:
        """Forgets a removed segment without closing it under a reader.

        Another thread may be reading it at this moment (a catch-up's
        frames, a receive's read_many: the batch flusher refreshes the list
        on its own thread); closing the map under it failed that read.  The
        segment's last reference closes its descriptor (Segment.__del__);
        the map goes with the map's own last reference.
        """
        seg = self._segments.pop(base, None)  # another thread may have dropped it
        if seg is not None and self._last_read is seg:
            self._last_read = None

    def _segment(self, base: int) -> Segment:
        seg = self._segments.get(base)
        if seg is None:
            path = os.path.join(self.path, segment_name(base))
            try:
                seg = Segment.open(path, self.io, expected_base=base)
            except FileNotFoundError:
                raise RecordGone(f"segment {path} was removed (trimmed by another process)") from None
            self._segments[base] = seg
        return seg

    def _active(self) -> Segment:
        base = self._load("seg_base")
        if not self._bases or self._bases[-1] != base:
            self._refresh_bases()
        return self._segment(base)

    # -- writing -----------------------------------------------------------

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ReadOnlyStore(f"{self.path} is open read-only")

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosed(f"log {self.path} is closed")
        if self._poisoned or lib.walq_load(self._p_poisoned):
            self._poisoned = True
            raise LogPoisoned(0, "an fsync failed; close every handle and reopen the log", self.path)

    def append(self, payload: bytes, type: int = 1, settle: bool = True) -> int:
        """Appends one record; returns its sequence number.

        Returns once the record is as durable as ``options.durability`` says;
        with ``settle=False`` at once, and the caller calls ``settle(seq + 1)``
        before it reports the record written (work that does not depend on
        durability can run first, while the CPU is still warm).
        """
        # One native call does the checks and the write; anything unusual
        # (closed, poisoned, bad arguments, a full or changed segment) comes
        # back as -1 and goes the slow way, which says what was wrong.
        try:
            with self._tlock:
                seq = self._append_one(self._writer, payload, len(payload), type)
        except (TypeError, OverflowError):
            seq = -1
        if seq < 0:
            seq = self._append_one_slow(payload, type)
        if self._always and settle:
            self._make_durable(seq + 1)
        return seq

    def _append_one_slow(self, payload: bytes, type: int) -> int:
        self._check_writable()
        n = len(payload)
        if not isinstance(type, int) or not 1 <= type <= 255:
            raise InvalidParameter(f"record type must be 1-255; got {type!r}")
        if n > MAX_RECORD:
            raise InvalidParameter(f"record of {n} bytes exceeds the {MAX_RECORD}-byte limit")
        with self._tlock:
            self._len1[0] = n
            self._append_slow(1, payload, self._len1, ffi.NULL, type)
            return self._seq_out[0]

    def append_batch(self, payloads: list[bytes], type: int | list[int] = 1) -> range:
        """Appends records atomically adjacent; returns their sequence range.

        ``type`` is one type for all, or one per record.  The batch is framed
        and written in one call and synced (in ``"always"``) once.
        """
        self._check_writable()
        if not payloads:
            return range(0)
        data, lens, types, t = self._pack(payloads, type)
        return self._append_packed(len(payloads), data, lens, types, t)

    def append_packed(self, n: int, data, lens, type: int, settle: bool = True) -> range:
        """append_batch of ``n`` payloads already concatenated in ``data``
        (bytes or a cffi ``char[]``) with their lengths in ``lens`` (a cffi
        ``uint32_t[]``): for encoders that build a batch natively.  The
        caller vouches for the lengths (each at most MAX_RECORD, summing to
        the data's size).  ``settle`` as in append()."""
        self._check_writable()
        if not 1 <= type <= 255:
            raise InvalidParameter(f"record type must be 1-255; got {type}")
        return self._append_packed(n, data, lens, ffi.NULL, type, settle)

    def _append_packed(self, n: int, data, lens, types, t, settle: bool = True) -> range:
        with self._tlock:
            rc = lib.walq_writer_append(self._writer, n, data, lens, types, t, self._seq_out)
            if rc != lib.WALQ_OK:
                self._append_slow(n, data, lens, types, t)
            seq = self._seq_out[0]
        if settle:
            self.settle(seq + n)
        return range(seq, seq + n)

    @staticmethod
    def _pack(payloads: list[bytes], type):
        lengths = [len(p) for p in payloads]
        if max(lengths) > MAX_RECORD:
            raise InvalidParameter(f"a record exceeds the {MAX_RECORD}-byte limit")
        if isinstance(type, int):
            if not 1 <= type <= 255:
                raise InvalidParameter(f"record type must be 1-255; got {type}")
            types, t = ffi.NULL, type
        else:
            if len(type) != len(payloads) or not all(isinstance(x, int) and 1 <= x <= 255 for x in type):
                raise InvalidParameter("types must give one type 1-255 per record")
            types, t = ffi.new("uint8_t[]", type), 0
        return b"".join(payloads), ffi.new("uint32_t[]", lengths), types, t

    def _append_slow(self, n, data, lens, types, t) -> int:
        """Append under an explicitly held lock, rolling the segment if full
        (``_tlock`` held)."""
        if self._closed:  # another thread closed the log after the caller's check
            raise BrokerClosed(f"log {self.path} is closed")
        check_os(lib.walq_lock(self._append_fd), "lock", self.path)
        try:
            return self._append_locked(n, data, lens, types, t)
        finally:
            lib.walq_unlock(self._append_fd)

    def _append_locked(self, n, data, lens, types, t) -> int:
        for _attempt in range(5):
            seg = self._active()
            rc = self.io.append_locked(self.ctl, seg.fd, seg.base, n, data, lens, types, t, self._seq_out)
            if rc == lib.WALQ_OK:
                self._aim(seg)
                return rc
            if rc == lib.WALQ_EREPAIR:
                recovery.repair_active(self)
                self._refresh_bases()
                continue
            if rc == lib.WALQ_EALLOC:
                self._extend(seg, sum(lib.walq_frame_size(lens[i]) for i in range(n)))
                continue
            if rc == lib.WALQ_EFULL:
                need = SEGMENT_HEADER_SIZE + sum(lib.walq_frame_size(lens[i]) for i in range(n)) + 8
                if self._load("end_seq") == seg.base:
                    # The active segment holds no record yet (a fresh log, or
                    # a crash right after a roll) and the batch is bigger than
                    # it.  A roll would create a file of the same name and
                    # leave every open descriptor - ours and other processes'
                    # - on the replaced file, where appends are lost: grow it.
                    self._grow(seg, max(self.options.segment_size, need))
                else:
                    self._roll(max(self.options.segment_size, need))
                continue
            if rc == lib.WALQ_ESTALE:
                continue
            check_os(rc, "append", seg.path)
        raise CorruptionError(f"could not append to {self.path}: the active segment keeps changing")

    def _aim(self, seg: Segment) -> None:
        """Points the native append at ``seg``, the active segment (append
        lock and _tlock held)."""
        if self._writer_seg is not seg:
            self._writer_seg = seg
            self._writer.fd = seg.fd
            self._writer.seg_base = seg.base

    def _extend(self, seg: Segment, need: int) -> None:
        """Allocates blocks ahead of the end (append lock held): the
        fallback when the zeroer (_zero_ahead) fell behind, or in "os"."""
        with self._alloc_locked():
            alloc = self._load("alloc_off")
            end = self._load("end_off")
            if alloc >= end + need:
                return  # the zeroer finished while this waited for lock.alloc
            cap = self._load("seg_cap")
            target = min(cap, max(end + need, alloc + self.options.chunk_at(alloc)))
            if target > alloc:
                self.io.preallocate(seg.fd, alloc, target - alloc)
            self._store("alloc_off", target)

    @contextlib.contextmanager
    def _alloc_locked(self):
        """lock.alloc, held by this thread (flock does not exclude threads
        sharing a descriptor: hence the thread lock as well)."""
        with self._alloc_tlock:
            check_os(lib.walq_lock(self._alloc_fd), "lock", self.path)
            try:
                yield
            finally:
                lib.walq_unlock(self._alloc_fd)

    # Zeroing ahead, off the append lock, in steps each synced on its own:
    # an appender's fdatasync flushes the file's dirty zeros with its
    # records, so 4 MiB of them at once stalled one append in ~300 by ~5 ms
    # (append_batch(100)'s p99.9, bench/RESULTS.md).
    _ZERO_STEP = 256 * 1024

    def _low_water(self) -> int:
        """The runway (allocated bytes past the end) below which the zeroer
        is asked for more: half the next chunk, as _zero_ahead checks."""
        return self.options.chunk_at(lib.walq_load(self._fields["alloc_off"])) // 2

    def _kick_zeroer(self) -> None:
        """Asks this handle's zeroing thread for the next chunk of blocks."""
        if self._zeroer is None:
            with self._alloc_tlock:
                if self._zeroer is None and not self._closed:
                    self._zeroer = threading.Thread(target=self._zero_loop, name="walq-log-zero", daemon=True)
                    self._zeroer.start()
        self._zero_kick.set()

    def _zero_loop(self) -> None:
        while True:
            self._zero_kick.wait()
            self._zero_kick.clear()
            if self._closed:
                return
            try:
                self._zero_ahead()
            except LogPoisoned:
                # A failed fdatasync may have lost appended pages too.
                self._poisoned = True
                self._store("poisoned", 1)
            except (OSError, WalqError):
                pass  # the segment went or changed: the appenders' fallback covers it

    def _zero_ahead(self) -> None:
        """Zeroes (and, unless "os", syncs) the next chunk (LogOptions.chunk_at)
        past ``alloc_off`` of the active segment, then publishes them.

        Never over a record: appends land only below ``alloc_off``, which
        only a holder of lock.alloc raises (here, or _extend), and this
        zeroes only above it while holding that lock.  The segment and its
        ``alloc_off`` are read as one: a roll changes them holding
        lock.alloc too (_roll).  A roll after this released the lock finds
        blocks zeroed past the old segment's records, which no append
        will use.
        """
        with self._alloc_locked():
            if self._load("busy"):
                return  # a roll under way, or cut short: its fields are not one segment's yet
            base = self._load("seg_base")
            alloc, end, cap = self._load("alloc_off"), self._load("end_off"), self._load("seg_cap")
            chunk = self.options.chunk_at(alloc)
            if alloc - end >= chunk // 2 or alloc >= cap:
                return
            seg = self._segment(base)
            stop = min(cap, alloc + chunk)
            off = alloc
            while off < stop:
                n = min(self._ZERO_STEP, stop - off)
                self.io.preallocate(seg.fd, off, n)
                if self.options.durability != "os":
                    self.io.fdatasync(seg.fd, seg.path)
                off += n
            lib.walq_cas(self._fields["alloc_off"], alloc, stop)  # no roll meanwhile: we hold lock.alloc

    def _grow(self, seg: Segment, size: int) -> None:
        """Enlarges the empty active segment in place (append lock held).

        Readers that mapped the old size remap when a scan runs past it
        (Segment.index_to).
        """
        if size > self._load("seg_cap"):
            self.io.grow(seg.fd, size)
            self._store("seg_cap", size)

    def _roll(self, size: int) -> None:
        """Starts a new segment at the current end (append lock held)."""
        base = self._load("end_seq")
        salt = secrets.randbits(64)
        header = encode_segment_header(base, salt, time.time_ns())
        prealloc = min(size, max(self.options.chunk_at(0), size - self.options.segment_size + 4096))
        # Writers read these only under the append lock we hold.  `busy`
        # brackets the update: if this process dies half way, the next
        # writer sees it and re-derives the block from the segment files.
        # It is raised before the file exists: a death between the rename
        # and the update would otherwise leave a segment file whose name
        # claims sequences that other writers keep appending to the old
        # segment, and recovery would take that empty file as the end.
        self._store("busy", 1)
        try:
            fd = self.io.create_segment(self.path, segment_name(base), header, size, prealloc)
        except BaseException:
            # A creation that failed before its rename (no space) removed
            # its tmp file: nothing changed.  Once the file is in place, the
            # next writer must re-derive the block (busy stays raised).
            if not os.path.lexists(os.path.join(self.path, segment_name(base))):
                self._store("busy", 0)
            raise
        os.close(fd)
        # Under lock.alloc too: a zeroer (_zero_ahead) reads the active
        # segment and its alloc_off as one snapshot under that lock.  Without
        # it, a zeroer that read the old segment's base and then the new
        # segment's alloc_off zeroed the old segment from there - over
        # records (the stress tier, 256 KiB segments, 64 KiB first chunks).
        with self._alloc_locked():
            self._store("end_off", SEGMENT_HEADER_SIZE)
            self._store("reserve_off", SEGMENT_HEADER_SIZE)
            self._store("alloc_off", prealloc)
            self._store("seg_cap", size)
            self._store("salt", salt)
            self._store("reserve_seq", base)
            self._store("seg_base", base)
            self._store("busy", 0)
        self._refresh_bases()

    def settle(self, end: int) -> None:
        """Returns once every record below ``end`` is as durable as
        ``options.durability`` says (after an append with ``settle=False``)."""
        if self._always:
            self._make_durable(end)

    # -- transactions (used by queues to decide and write atomically) -------

    def locked(self, wait_durable: bool = True) -> "LockedLog":
        """Holds the append lock: read the tail, decide, append, release.

        The durability wait happens after the lock is released and covers
        the whole log as the holder saw it (its decision may rest on other
        writers' records); with ``wait_durable=False`` there is none (the
        records are in the OS, and the next durable write or sync covers
        them).
        """
        self._check_open()
        return LockedLog(self, wait_durable)

    # -- durability --------------------------------------------------------

    def sync(self) -> None:
        """Makes every record appended so far durable (fdatasync)."""
        self.sync_to(self._load("end_seq"))

    def sync_to(self, upto: int) -> None:
        """Returns once every record below ``upto`` is on stable storage,
        whatever the durability mode: for files that must never get ahead
        of the log (a checkpoint covering records below ``upto``)."""
        self._check_writable()
        self._make_durable(upto)

    # How long a follower waits for the syncer before trying the sync lock
    # itself.  Only a syncer killed mid-sync (kill -9) never publishes; the
    # kernel drops its flock, and the next try after this wait wins.
    _SYNC_WAIT_MS = 5
    # How many times a syncer yields the CPU, before it reads the end it
    # will sync to, while other appenders keep moving it.  The waiters it
    # woke last time are runnable and about to append; letting them first
    # made a sync cover ~7 records instead of ~4 with 8 appenders on 2 CPUs
    # (bench/RESULTS.md).  Alone, the first yield returns at once.
    _YIELDS = 8

    def _make_durable(self, upto: int) -> None:
        """Returns once every record below ``upto`` is on stable storage.

        Group commit across processes, as PostgreSQL's XLogFlush: whoever
        takes ``lock.sync`` without blocking fdatasyncs everything written so
        far; everyone else waits on the ``synced`` futex of the control block
        and looks again when a syncer releases the lock.  Waiting on the flock
        instead made a convoy: the waiters took it one at a time, each to
        find itself already durable, so a sync covered ~2 records.

        The checking and waiting run natively (walq_await_durable, which
        also says why no waiter is stranded), and so does the usual sync
        (walq_make_durable: all of it in the active segment, which this
        process appends to).  Any other sync runs here, as does every sync
        when ``self.io`` is not the plain OsIO: the crash tests' I/O shim
        must see it.
        """
        if lib.walq_load(self._p_durable) >= upto:
            return
        syncer = self._syncer
        keep_mapped = self._ctl_buf  # noqa: F841  (keeps log.ctl mapped if another thread closes the log meanwhile)
        while True:
            seg = self._writer_seg if self._native_sync else None
            if seg is None:
                rc = lib.walq_await_durable(syncer, upto, self._SYNC_WAIT_MS)
            else:
                rc = lib.walq_make_durable(syncer, seg.fd, seg.base, upto, self._SYNC_WAIT_MS, self._YIELDS)
                if rc == lib.WALQ_SYNCED:
                    if lib.walq_runway_low(self.ctl, self._low_water()):
                        self._kick_zeroer()
                    return
            if rc == lib.WALQ_DURABLE:
                return
            if rc == lib.WALQ_SYNC:
                target = 0
                try:
                    target = self._sync_locked(upto)
                finally:
                    lib.walq_sync_done(syncer, target)
                if target >= upto:
                    return  # our own sync covered it: no need to look again
                continue
            if rc in (lib.WALQ_POISONED, lib.WALQ_CLOSED):
                self._check_open()  # raises LogPoisoned or BrokerClosed
            if rc == lib.WALQ_SYNC_FAILED:  # walq_make_durable's fdatasync; the log is poisoned
                self._poisoned = True
                check_sync(-syncer.sync_errno, seg.path)
            check_os(rc, "lock", self.path)

    def _sync_locked(self, upto: int) -> int:
        """fdatasyncs everything written so far (``lock.sync`` held); returns
        the new durable point, or 0 if ``upto`` was durable already."""
        durable = self._p_durable
        if lib.walq_load(self._p_poisoned):
            # The holder before us failed: a second fdatasync can report
            # success without the lost pages ever reaching the disk.
            self._poisoned = True
            raise LogPoisoned(0, "an fsync failed; close every handle and reopen the log", self.path)
        done = lib.walq_load(durable)
        if done >= upto:
            return 0
        # Sync everything written so far: later waiters ride along.  Every
        # record below `target` was written before the fdatasyncs below start.
        target = lib.walq_sync_target(self.ctl, self._YIELDS)
        active = lib.walq_load(self._p_seg_base)
        if done >= active:
            bases = (active,)  # the usual case: all of it in the active segment
        else:
            if not self._bases or self._bases[-1] != active:
                self._refresh_bases()
            bases = self._bases  # one snapshot (see _locate)
            bases = bases[max(0, bisect.bisect_right(bases, done) - 1):]
        try:
            for base in bases:
                try:
                    seg = self._segment(base)
                except RecordGone:
                    # Trimmed by another process meanwhile: a durable
                    # checkpoint holds everything it held (delete_below).
                    continue
                self.io.fdatasync(seg.fd, seg.path)
            if active > lib.walq_load(self._p_dir_synced):
                self.io.fsync_dir(self.path)
                self._store("dir_synced_base", active)
        except (LogPoisoned, OSError) as exc:
            self._poisoned = True
            self._store("poisoned", 1)
            if isinstance(exc, LogPoisoned):
                raise
            raise LogPoisoned(exc.errno or 5, f"sync failed: {exc}", self.path) from exc
        lib.walq_store_max(durable, target)
        if lib.walq_runway_low(self.ctl, self._low_water()):
            self._kick_zeroer()
        return target

    def _flush_loop(self) -> None:
        interval = self.options.sync_interval
        while not self._stop.wait(interval):
            try:
                if self._load("durable_seq") < self._load("end_seq"):
                    self._make_durable(self._load("end_seq"))
            except WalqError:
                return  # poisoned: writers see it on their next call

    # -- reading -----------------------------------------------------------

    @property
    def end(self) -> int:
        """The next sequence number to be assigned (one past the last record)."""
        if self._closed:
            raise BrokerClosed(f"log {self.path} is closed")
        return lib.walq_load(self._p_end_seq)

    @property
    def active_base(self) -> int:
        """Base sequence of the segment being appended to (changes on a roll)."""
        return self._load("seg_base")

    @property
    def first(self) -> int:
        """The lowest sequence still stored."""
        self._check_open()
        return max(self._load("first_seq"), self._bases[0] if self._bases else 0)

    def _locate(self, seq: int, _retried: bool = False) -> tuple[Segment, int]:
        """The segment holding ``seq``, indexed up to it, and the sequence
        where that segment's records end (the next base, or the log's end).

        Works on one snapshot of the segment list: the batch flusher thread
        may replace ``self._bases`` (after another process trimmed) at any
        moment, and mixing two lists once read a record from the wrong
        segment ("record N is missing").
        """
        bases = self._bases
        i = bisect.bisect_right(bases, seq) - 1
        if i < 0 or seq < self._load("first_seq"):
            raise RecordGone(f"record {seq} is below the log's first record")
        end = self._load("end_seq")
        if seq >= end:
            raise RecordGone(f"record {seq} has not been written (end is {end})")
        if i == len(bases) - 1 and bases[-1] != self._load("seg_base"):
            self._refresh_bases()
            bases = self._bases
            i = bisect.bisect_right(bases, seq) - 1
            if i < 0:
                raise RecordGone(f"record {seq} is below the log's first record")
        seg = self._segment(bases[i])
        limit = bases[i + 1] if i + 1 < len(bases) else end
        if seq >= seg.next_seq:
            seg.index_to(limit)
            if seq >= seg.next_seq and not _retried:
                # The list this lookup used may have missed a segment that a
                # roll had just created (the race behind da9b711 and 99cfd4a):
                # look again once before calling it damage.
                self._refresh_bases()
                return self._locate(seq, _retried=True)
            if seq >= seg.next_seq:
                raise CorruptionError(
                    f"record {seq} is missing from {seg.path} (data ends at offset {seg.scan_off})",
                    seg.path,
                    seg.scan_off,
                )
        return seg, limit

    def read(self, seq: int) -> Record:
        """The record with sequence ``seq``, checksum verified."""
        self._check_open()
        seg = self._holding(self._last_read, seq, lib.walq_load(self._p_first_seq))
        off, n, t = seg.frame_at(seq)
        return Record(seq, t, seg.mm[off : off + n])

    def read_many(self, seqs: list[int]) -> list[bytes]:
        """The payloads of the records ``seqs`` (any order), each checksum
        verified: read() for a handful of scattered records at once, as a
        receive needs.  RecordGone if any of them is gone."""
        self._check_open()
        n = len(seqs)
        want = ffi.new("uint64_t[]", seqs)
        poffs = ffi.new("uint64_t[]", n)
        lens = ffi.new("uint32_t[]", n)
        out = []
        seg = self._last_read
        first = lib.walq_load(self._p_first_seq)
        segments = self._segments
        i = 0
        while i < n:
            # A receive's records mostly share a segment: one native call
            # checks every one of them that the segment holds.
            seq = seqs[i]
            if seg is None or not (first <= seq and seg.base <= seq < seg.base + seg.count) \
                    or seg.base not in segments:
                seg = self._holding(None, seq, first)
            count = seg.count  # before the offsets: a scan grows them first (Segment._scan_to)
            got = lib.walq_frames_at(seg.ptr, seg.size, seg.salt, seg.offs, seg.base, count, first,
                                     want + i, n - i, poffs + i, lens + i)
            if got < 0:
                seg.frame_at(seqs[i - got - 1])  # raises CorruptionError naming the file and offset
            mm = seg.mm
            out += [mm[o : o + k] for o, k in zip(ffi.unpack(poffs + i, got), ffi.unpack(lens + i, got))]
            i += got
        return out

    def aim_reader(self, r) -> tuple | None:
        """Points a native reader's struct (a ``walq_qx_recv``) at the
        segment this handle read from last, and at its writer: a receive
        reads its messages mostly from there.  Returns ``(map, offsets)``,
        to be held for the duration of the native call, or None if there is
        no such segment.  The caller holds the append lock (the writer is
        used under it)."""
        seg = self._last_read
        if seg is None or self._segments.get(seg.base) is not seg or self.readonly:
            return None  # (read-only: the general path, whose writes refuse)
        r.count = seg.count  # before the offsets: a scan grows them first (Segment._scan_to)
        offs = r.offs = seg.offs
        r.base, r.size, r.salt, r.seg_base = seg.ptr, seg.size, seg.salt, seg.base
        r.first_seq = lib.walq_load(self._p_first_seq)
        r.writer = self._writer
        return seg.mm, offs

    def index_read_segment(self) -> bool:
        """Indexes the segment aim_reader aims at up to the log's end, if it
        is the active one: the records this handle appended and its reader
        folded in without reading them (a queue's own sends).  True if that
        indexed anything."""
        seg = self._last_read
        end = lib.walq_load(self._p_end_seq)
        if seg is None or seg.next_seq >= end or seg.base != lib.walq_load(self._p_seg_base):
            return False
        seg.index_to(end)
        return True

    def _holding(self, seg: Segment | None, seq: int, first: int) -> Segment:
        """``seg`` if it is still open and already indexed up to ``seq`` (the
        fast path of consecutive reads), else the segment located afresh."""
        if seg is None or not seg.base <= seq < seg.next_seq or seq < first or seg.base not in self._segments:
            seg = self._last_read = self._locate(seq)[0]
        return seg

    def read_batch(self, seq: int, max_records: int = 4096) -> list[Record]:
        """Up to ``max_records`` consecutive records from ``seq`` (fewer at the
        end of a segment or of the log); each checksum is verified."""
        mm, seq0, offs, lens, types = self.frames(seq, max_records)
        return [Record(seq0 + i, types[i], mm[o : o + lens[i]]) for i, o in enumerate(offs)]

    def frames(self, seq: int, max_records: int = 4096):
        """Validated frames of one segment run, without copying payloads.

        Returns ``(mm, seq0, offsets, lengths, types)``: payload ``i`` is
        ``mm[offsets[i] : offsets[i] + lengths[i]]``, record ``seq0 + i``.
        Empty lists at the end of the log.  frame_run, as Python lists.
        """
        buf = RunBuffers(max_records)
        mm, _base, n = self.frame_run(seq, buf)
        if not n:
            return None, seq, [], [], []
        return mm, seq, ffi.unpack(buf.poffs, n), ffi.unpack(buf.lens, n), ffi.unpack(buf.types, n)

    def frame_run(self, seq: int, buf: "RunBuffers") -> tuple:
        """Validated frames of one segment run from ``seq``, into ``buf``.

        Returns ``(mm, base, n)``: the payload of record ``seq + i`` is
        ``mm[buf.poffs[i] : buf.poffs[i] + buf.lens[i]]``, its type
        ``buf.types[i]``; ``base`` is a cdata pointer to ``mm``'s first
        byte.  ``n`` is 0 at the end of the log.  frames() without its
        Python lists, for the hot reader (a queue's catch-up, which runs
        every few records in every process), whose per-call overhead they
        were most of.
        """
        self._check_open()
        end = lib.walq_load(self._p_end_seq)
        if seq >= end:
            return None, None, 0
        seg = self._run_seg
        active = lib.walq_load(self._p_seg_base)
        # The usual case - reading the tail of the active segment - needs
        # no lookup: the active segment is never trimmed, and it ends at
        # the log's end.
        if seg is not None and seg.base == active and seq >= active:
            seg_end = end
        else:
            seg, seg_end = self._locate(seq)
            self._run_seg = seg
        limit = min(end, seq + buf.size, seg_end)
        if seg.next_seq <= seq:
            # The usual catch-up: nothing of the run indexed yet.
            n = seg.scan_run(seq, limit, buf)
            if n:
                return seg.mm, seg.ptr, n
        if seg.next_seq < limit:
            seg.index_to(limit)
        n = min(limit, seg.next_seq) - seq
        if n <= 0:
            seg, seg_end = self._locate(seq)  # raises what is wrong, or finds the record after all
            self._run_seg = seg
            n = min(end, seq + buf.size, seg_end, seg.next_seq) - seq
        first = seq - seg.base
        held = seg.offs  # a pointer into it does not keep it alive; another thread may grow it
        ok = lib.walq_frames_run(seg.ptr, seg.size, seg.salt, held + first, seq, n, buf.poffs, buf.lens, buf.types)
        if ok < n:
            off = seg.offs[first + ok]
            raise CorruptionError(f"record {seq + ok} in {seg.path} at offset {off} does not validate", seg.path, off)
        return seg.mm, seg.ptr, n

    def iter_from(self, seq: int | None = None) -> Iterator[Record]:
        """Records from ``seq`` (default: the first) to the end as of each step."""
        seq = self.first if seq is None else seq
        while True:
            batch = self.read_batch(seq)
            if not batch:
                return
            yield from batch
            seq = batch[-1].seq + 1

    # -- waiting for other writers -----------------------------------------

    def change_token(self) -> int:
        """A value that changes whenever any process publishes an append."""
        return lib.walq_notify_word(self.ctl)

    def wait_for_change(self, token: int, timeout: float) -> None:
        """Blocks until an append is published after ``token`` was read, or
        ``timeout`` seconds pass.  A futex on the shared control block: a
        writer in another process wakes us within microseconds."""
        if timeout > 0:
            lib.walq_wait(self.ctl, token, max(1, int(timeout * 1000)))

    # -- trimming ------------------------------------------------------------

    def delete_below(self, seq: int) -> int:
        """Removes the segments whose records all lie below ``seq``.

        The active segment always stays.  Returns the new first sequence.
        """
        self._check_writable()
        with self._tlock:
            self._check_open()  # again: another thread may have closed it meanwhile
            check_os(lib.walq_lock(self._append_fd), "lock", self.path)
            try:
                self._refresh_bases()
                active = self._load("seg_base")
                doomed = [
                    b for i, b in enumerate(self._bases[:-1]) if self._bases[i + 1] <= seq and b != active
                ]
                if not doomed:
                    return self.first
                new_first = self._bases[len(doomed)]
                # Raise first_seq before unlinking, so that no reader trusts a
                # file that is about to go.
                self._store("first_seq", new_first)
                for base in doomed:  # lowest first: what remains stays contiguous
                    self._drop_segment(base)
                    self.io.unlink(os.path.join(self.path, segment_name(base)))
                if self.options.durability != "os":
                    self.io.fsync_dir(self.path)
                self._refresh_bases()
                return new_first
            finally:
                lib.walq_unlock(self._append_fd)

    def segment_bases(self) -> list[int]:
        """Base sequences of the segment files, oldest first."""
        self._check_open()
        self._refresh_bases()
        return list(self._bases)

    def disk_bytes(self) -> int:
        """Bytes the segment files occupy (allocated size)."""
        total = 0
        for name in os.listdir(self.path):
            if parse_segment_name(name) is not None:
                try:
                    total += os.stat(os.path.join(self.path, name)).st_blocks * 512
                except FileNotFoundError:
                    pass
        return total

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Syncs (in ``"batch"`` mode), then releases files and locks.  Idempotent."""
        if self._closed:
            return
        if self._flusher is not None:
            self._stop.set()
            self._flusher.join()
            if not self._poisoned:
                try:
                    self._make_durable(self._load("end_seq"))
                except WalqError:
                    pass
        with self._tlock:
            self._closed = True
            # Wake this process's long-polls (wait_for_change) so that they
            # see the close now, not when their wait runs out; waiters in
            # other processes look again and wait on.  (A read-only handle
            # maps the block read-only, or privately: it wakes no one.)
            if not self.readonly:
                lib.walq_publish(self.ctl)
            # Another thread may be syncing through lock.sync's descriptor:
            # wait for it to let go; no thread tries the lock after this.
            lib.walq_syncer_seize(self._syncer)
            if self._zeroer is not None:
                self._zero_kick.set()
                self._zeroer.join()
            self._release_files()

    def __enter__(self) -> "Log":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<walq.log.Log {self.path!r} {'closed' if self._closed else 'open'}>"


class RunBuffers:
    """Scratch arrays that Log.frame_run fills, plus one double per record
    for the reader's own use (the queue index's send times): one owner at
    a time."""

    def __init__(self, size: int = 4096):
        self.size = size
        self.poffs = ffi.new("uint64_t[]", size)
        self.lens = ffi.new("uint32_t[]", size)
        self.types = ffi.new("uint8_t[]", size)
        self.sent = ffi.new("double[]", size)


class LockedLog:
    """The append lock, held: catch up on the tail, then append atomically.

    Use as a context manager from ``Log.locked()``; appends made through it
    become durable (per the log's mode) after the lock is released.
    """

    def __init__(self, log: Log, wait_durable: bool = True):
        self.log = log
        self._wait = wait_durable

    def __enter__(self) -> "LockedLog":
        log = self.log
        log._tlock.acquire()
        if log._closed:  # closed by another thread since locked() checked: its descriptors are gone
            log._tlock.release()
            raise BrokerClosed(f"log {log.path} is closed")
        # Read-only: nothing to exclude (its appends raise ReadOnlyStore).
        rc = lib.walq_lock(log._append_fd) if not log.readonly else 0
        if rc < 0:
            log._tlock.release()
            check_os(rc, "lock", log.path)
        return self

    @property
    def end(self) -> int:
        """The log's end; stable while the lock is held."""
        return self.log._load("end_seq")

    def append_batch(self, payloads: list[bytes], type: int | list[int] = 1) -> range:
        """Appends under the held lock (same contract as Log.append_batch)."""
        log = self.log
        log._check_writable()
        if not payloads:
            return range(0)
        data, lens, types, t = log._pack(payloads, type)
        log._append_locked(len(payloads), data, lens, types, t)
        seq = log._seq_out[0]
        return range(seq, seq + len(payloads))

    def append(self, payload: bytes, type: int = 1) -> int:
        """Appends one record under the held lock; returns its sequence."""
        log = self.log
        try:
            seq = lib.walq_append_one_locked(log._writer, payload, len(payload), type)
        except (TypeError, OverflowError):
            seq = -1
        if seq < 0:  # anything unusual: the general path says what
            return self.append_batch([payload], type)[0]
        return seq

    def __exit__(self, exc_type, exc, tb) -> None:
        log = self.log
        # The whole log as the holder saw it, not only what it appended: a
        # decision that wrote nothing (a FIFO duplicate, a queue that
        # already exists) rests on records other writers appended, which
        # must be durable before the call reports its outcome (DESIGN.md,
        # guarantee 7).  Under the lock the end is stable.
        end = lib.walq_load(log._p_end_seq)
        if not log.readonly:
            lib.walq_unlock(log._append_fd)
        log._tlock.release()
        if self._wait and exc_type is None:
            log.settle(end)
