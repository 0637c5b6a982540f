"""Simulated power loss: record a log's file-system operations, then build
every state a power cut could have left on disk.

``RecordingIO`` is an ``OsIO`` (walq/log/fileio.py) that performs each
operation for real and also appends it to ``ops``: file creations, size
changes, writes (offset and bytes), fdatasync/fsync, renames, unlinks and
directory fsyncs.  The log's hot path writes in C without calling the I/O
object (``walq_append``), so before every recorded operation the shim reads
the shared control block and records the bytes published since it last
looked (``_catch_up``) - the same bytes, at the same offsets, in the same
order relative to the syncs that follow them.

``crash_states(ops)`` replays a prefix of ``ops`` - a crash after each
operation - under the rules of a POSIX file system without a battery:

* a write or size change reaches the disk if an fdatasync/fsync of the same
  file followed it; otherwise it may be lost;
* a creation, rename or unlink reaches the disk if an fsync of the directory
  followed it; otherwise it may be lost;
* of the operations that were not made durable, the disk holds a prefix (in
  issue order), and the last write of that prefix may be torn: only its
  first bytes, up to a 512-byte sector, a 4 KiB page or any byte, landed;
* a file's bytes that were never written read as zeros (ftruncate and
  posix_fallocate both give zeros).

Variants per crash point: nothing unsynced survives (names strict); nothing
unsynced survives but every name operation does (ext4 often commits them
with the journal); each prefix of the unsynced operations, with and without
a torn last write; all unsynced data but no unsynced name.  The control
block ``log.ctl`` is an mmap that is never fsynced, so each state gets it
absent, zeroed, as it was at the crash, or older - recovery must not trust it.

The model assumes writes land in issue order (a prefix).  A disk may also
reorder writes between two flushes; that is not modelled here.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Iterator, NamedTuple

from walq.log._native import ffi, lib
from walq.log.fileio import OsIO
from walq.log.format import CTL_FILE_SIZE, CTL_MAGIC, SEGMENT_HEADER_SIZE, segment_name

# Operation kinds.
CREATE = "create"  # name -> new file
SETSIZE = "setsize"  # file size changes (truncate, fallocate past the end)
WRITE = "write"
SYNC = "sync"  # fdatasync/fsync of one file
RENAME = "rename"
UNLINK = "unlink"
SYNCDIR = "syncdir"
NOTE = "note"  # a test's annotation, e.g. "append of seq 7 returned"

DATA_OPS = (SETSIZE, WRITE)
NAME_OPS = (CREATE, RENAME, UNLINK)


class Op(NamedTuple):
    kind: str
    file: int = 0  # virtual inode number (stable even if the OS reuses inodes)
    name: str = ""  # CREATE/UNLINK: the name; RENAME: the source
    dst: str = ""  # RENAME: the destination
    offset: int = 0  # WRITE
    data: bytes = b""  # WRITE
    size: int = 0  # SETSIZE
    note: object = None  # NOTE

    def __repr__(self) -> str:
        if self.kind == WRITE:
            return f"write(f{self.file} @{self.offset} +{len(self.data)})"
        if self.kind == SETSIZE:
            return f"setsize(f{self.file} {self.size})"
        if self.kind == RENAME:
            return f"rename({self.name} -> {self.dst})"
        if self.kind in (CREATE, UNLINK):
            return f"{self.kind}({self.name} f{self.file})"
        if self.kind == SYNC:
            return f"sync(f{self.file})"
        if self.kind == NOTE:
            what = self.note[:2] if isinstance(self.note, tuple) else self.note
            return f"note{what!r}"
        return self.kind


class RecordingIO(OsIO):
    """Performs every operation and records it (single directory, one process)."""

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        self.ops: list[Op] = []
        self.ctl_snapshots: list[bytes] = []  # log.ctl as it was before ops[i]
        self._files: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) -> virtual inode
        self._next_file = 1
        self._seen: tuple[int, int] | None = None  # (seg_base, end_off) last recorded
        self._ctl_mm = None
        self._ctl = None

    # -- bookkeeping -----------------------------------------------------------

    def _record(self, op: Op) -> None:
        self.ctl_snapshots.append(self._ctl_bytes())
        self.ops.append(op)

    def _name(self, path: str) -> str:
        directory, name = os.path.split(os.path.abspath(path))
        assert directory == self.directory, f"{path} is outside the recorded directory"
        return name

    def _file(self, fd: int) -> int:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        assert key in self._files, "a write to a file whose creation was not recorded"
        return self._files[key]

    def _created(self, path: str, fd: int, existed: bool) -> int:
        """Records an O_CREAT|O_TRUNC open: a new file, or a truncated old one.
        (Whether the name existed decides: the OS reuses inode numbers.)"""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if existed:
            vid = self._files[key]
            self._record(Op(SETSIZE, file=vid, size=0))
        else:
            vid = self._files[key] = self._next_file
            self._next_file += 1
            self._record(Op(CREATE, file=vid, name=self._name(path)))
        return vid

    def _ctl_view(self):
        if self._ctl is None:
            path = os.path.join(self.directory, "log.ctl")
            try:
                if os.path.getsize(path) < CTL_FILE_SIZE:
                    return None
                with open(path, "rb") as f:
                    import mmap

                    self._ctl_mm = mmap.mmap(f.fileno(), CTL_FILE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
            except FileNotFoundError:
                return None
            self._ctl = ffi.cast("struct walq_ctl *", ffi.from_buffer(self._ctl_mm))
        return self._ctl

    def _ctl_bytes(self) -> bytes:
        return bytes(self._ctl_mm[:CTL_FILE_SIZE]) if self._ctl_view() is not None else b""

    def _load(self, ctl, field: str) -> int:
        return lib.walq_load(ffi.addressof(ctl, field))

    def _catch_up(self) -> None:
        """Records the bytes appended by the C fast path since the last look."""
        ctl = self._ctl_view()
        if ctl is None or self._load(ctl, "magic") != CTL_MAGIC:
            return
        base, end = self._load(ctl, "seg_base"), self._load(ctl, "end_off")
        if self._seen is None or base < self._seen[0] or (base == self._seen[0] and end <= self._seen[1]):
            # First look, or recovery rewound the control block.
            self._seen = (base, end)
            return
        start = self._seen[1] if base == self._seen[0] else SEGMENT_HEADER_SIZE
        fd = os.open(os.path.join(self.directory, segment_name(base)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._record(Op(WRITE, file=self._file(fd), offset=start, data=os.pread(fd, end - start, start)))
        finally:
            os.close(fd)
        self._seen = (base, end)

    def note(self, what: object) -> None:
        """Marks a point in the history, e.g. ``("acked", seq, payload)``."""
        self._catch_up()
        self._record(Op(NOTE, note=what))

    def finish(self) -> list[Op]:
        """Records anything still unrecorded; returns the operations."""
        self._catch_up()
        return self.ops

    def close(self) -> None:
        self._ctl = None
        if self._ctl_mm is not None:
            try:
                self._ctl_mm.close()
            except BufferError:
                pass
            self._ctl_mm = None

    # -- the OsIO interface, performed and recorded ------------------------

    def create_segment(self, directory: str, name: str, header: bytes, size: int, prealloc: int | None = None) -> int:
        # Mirrors OsIO.create_segment step by step: tmp file, size, blocks,
        # header, rename.  No fsync: the log's syncer fsyncs the file and the
        # directory before it declares anything in the segment durable.
        self._catch_up()
        tmp = os.path.join(directory, name + ".tmp")
        existed = os.path.exists(tmp)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            vid = self._created(tmp, fd, existed)
            os.ftruncate(fd, size)
            if prealloc:
                os.posix_fallocate(fd, 0, min(size, prealloc))
            else:
                os.posix_fallocate(fd, 0, size)
            self._record(Op(SETSIZE, file=vid, size=size))
            self.pwrite(fd, header, 0)
            os.rename(tmp, os.path.join(directory, name))
            self._record(Op(RENAME, name=self._name(tmp), dst=name))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def preallocate(self, fd: int, offset: int, length: int) -> None:
        self._catch_up()
        before = os.fstat(fd).st_size
        super().preallocate(fd, offset, length)
        after = os.fstat(fd).st_size
        if after != before:
            self._record(Op(SETSIZE, file=self._file(fd), size=after))

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        self._catch_up()
        super().pwrite(fd, data, offset)
        self._record(Op(WRITE, file=self._file(fd), offset=offset, data=bytes(data)))

    def append_locked(self, ctl, fd, seg_base, n, data, lens, types, type, seq_out) -> int:
        self._catch_up()
        load = lambda field: lib.walq_load(ffi.addressof(ctl, field))  # noqa: E731
        end0, reserved0, base0 = load("end_off"), load("reserve_off"), load("seg_base")
        seq0, rseq0, busy0 = load("end_seq"), load("reserve_seq"), load("busy")
        rc = super().append_locked(ctl, fd, seg_base, n, data, lens, types, type, seq_out)
        start = end0
        if not busy0 and base0 == seg_base and (reserved0 != end0 or rseq0 != seq0):
            # Mirrors walq_append_locked's repair of a writer killed mid-append.
            if rseq0 == seq0:
                start = reserved0  # it finished the publish of a whole batch
            elif reserved0 > end0:  # it zeroed a partial batch
                self._record(Op(WRITE, file=self._file(fd), offset=end0, data=bytes(reserved0 - end0)))
        if rc == lib.WALQ_OK:
            end1 = load("end_off")
            self._record(Op(WRITE, file=self._file(fd), offset=start, data=os.pread(fd, end1 - start, start)))
            self._seen = (seg_base, end1)
        return rc

    def zero(self, fd: int, offset: int, length: int) -> None:
        self._catch_up()
        super().zero(fd, offset, length)
        self._record(Op(WRITE, file=self._file(fd), offset=offset, data=bytes(length)))

    def fdatasync(self, fd: int, path: str) -> None:
        self._catch_up()
        super().fdatasync(fd, path)
        self._record(Op(SYNC, file=self._file(fd)))

    def fsync_dir(self, directory: str) -> None:
        self._catch_up()
        super().fsync_dir(directory)
        self._record(Op(SYNCDIR))

    def write_file_atomic(self, path: str, data: bytes, sync: bool = True) -> None:
        # Mirrors OsIO.write_file_atomic: tmp file, write, fsync, rename, fsync dir.
        self._catch_up()
        tmp = path + ".tmp"
        existed = os.path.exists(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            vid = self._created(tmp, fd, existed)
            self.pwrite(fd, data, 0)
            if sync:
                os.fsync(fd)
                self._record(Op(SYNC, file=vid))
        finally:
            os.close(fd)
        os.rename(tmp, path)
        self._record(Op(RENAME, name=self._name(tmp), dst=self._name(path)))
        if sync:
            self.fsync_dir(os.path.dirname(path) or ".")

    def rename(self, src: str, dst: str) -> None:
        self._catch_up()
        super().rename(src, dst)
        self._record(Op(RENAME, name=self._name(src), dst=self._name(dst)))

    def unlink(self, path: str) -> None:
        self._catch_up()
        existed = os.path.exists(path)
        super().unlink(path)
        if existed:
            self._record(Op(UNLINK, name=self._name(path)))


def abandon(log) -> None:
    """Leaves ``log`` the way kill -9 would: no close, no sync, no flush.

    The kernel drops a dead process's flocks and mappings; here the handle's
    files are released without any of ``close()``'s syncing, so the next
    ``Log.open`` in this process is alone and runs recovery.
    """
    flusher = getattr(log, "_flusher", None)
    if flusher is not None:
        log._stop.set()
        flusher.join()
    log._closed = True
    log._release_files()


# -- building crash states -------------------------------------------------------


class CrashState(NamedTuple):
    point: int  # how many operations ran before the power went
    label: str
    files: dict  # name -> bytes, the durable directory
    ctl: bytes | None  # log.ctl contents, None for absent
    notes: list  # NOTE annotations made before the crash


def _replay(ops: list[Op], point: int, keep, tear: tuple[int, int] | None = None) -> dict:
    files: dict[int, bytearray] = {}
    names: dict[str, int] = {}
    for i in range(point):
        op = ops[i]
        if op.kind in (SYNC, SYNCDIR, NOTE) or not keep(i):
            continue
        if op.kind == CREATE:
            files[op.file] = bytearray()
            names[op.name] = op.file
        elif op.kind == SETSIZE:
            buf = files.setdefault(op.file, bytearray())
            if op.size < len(buf):
                del buf[op.size :]
            else:
                buf.extend(bytes(op.size - len(buf)))
        elif op.kind == WRITE:
            buf = files.setdefault(op.file, bytearray())
            data = op.data if tear is None or tear[0] != i else op.data[: tear[1]]
            end = op.offset + len(data)
            if end > len(buf):
                buf.extend(bytes(end - len(buf)))
            buf[op.offset : end] = data
        elif op.kind == RENAME:
            if op.name in names:
                names[op.dst] = names.pop(op.name)
        elif op.kind == UNLINK:
            names.pop(op.name, None)
    return {name: bytes(files.get(vid, b"")) for name, vid in names.items()}


def _tear_points(op: Op, rng: random.Random) -> list[tuple[str, int]]:
    """Where a write may be cut: sector and page boundaries inside it, and any byte."""
    n = len(op.data)
    if n < 2:
        return []
    cuts = []
    for unit, label in ((512, "512B"), (4096, "4KiB")):
        inside = [b - op.offset for b in range((op.offset // unit + 1) * unit, op.offset + n, unit)]
        for c in sorted({inside[0], inside[-1]} if inside else ()):
            cuts.append((f"torn@{label}+{c}", c))
    c = rng.randrange(1, n)
    cuts.append((f"torn@byte+{c}", c))
    return cuts


def crash_states(
    ops: list[Op],
    ctl_snapshots: list[bytes] | None = None,
    *,
    seed: int = 0,
    max_prefixes: int = 8,
    points: set[int] | None = None,
) -> Iterator[CrashState]:
    """Every distinct crash state, for a crash after each operation in ``ops``
    (or only after the first ``n`` operations for each ``n`` in ``points``).

    ``max_prefixes`` bounds how many prefixes of a long run of unsynced
    operations are tried per crash point (evenly spread, always including
    the shortest and the longest).
    """
    rng = random.Random(seed)
    seen: set[bytes] = set()
    last_sync: dict[int, int] = {}  # file -> index of its latest SYNC before the point
    last_syncdir = -1
    notes: list = []
    ctl_modes = ("absent", "zero", "live", "stale")
    count = 0
    for point in range(len(ops) + 1):
        if point:
            op = ops[point - 1]
            if op.kind == SYNC:
                last_sync[op.file] = point - 1
            elif op.kind == SYNCDIR:
                last_syncdir = point - 1
            elif op.kind == NOTE:
                notes.append(op.note)
                continue  # a note changes nothing on disk
        if points is not None and point not in points:
            continue

        def durable(i: int) -> bool:
            op = ops[i]
            if op.kind in DATA_OPS:
                return last_sync.get(op.file, -1) > i
            if op.kind in NAME_OPS:
                return last_syncdir > i
            return True

        unsynced = [i for i in range(point) if ops[i].kind in DATA_OPS + NAME_OPS and not durable(i)]
        variants: list[tuple[str, object, tuple[int, int] | None]] = []
        variants.append(("drop-unsynced", lambda i: durable(i), None))
        variants.append(("drop-unsynced-keep-names", lambda i: durable(i) or ops[i].kind in NAME_OPS, None))
        if unsynced:
            variants.append(
                ("all-data-no-names", lambda i: durable(i) or ops[i].kind in DATA_OPS, None)
            )
            js = list(range(1, len(unsynced) + 1))
            if len(js) > max_prefixes:
                step = (len(js) - 1) / (max_prefixes - 1)
                js = sorted({js[round(k * step)] for k in range(max_prefixes)})
            for j in js:
                kept = set(unsynced[:j])
                keep = lambda i, kept=kept: durable(i) or i in kept  # noqa: E731
                variants.append((f"prefix{j}/{len(unsynced)}", keep, None))
                last = unsynced[j - 1]
                if ops[last].kind == WRITE:
                    for label, cut in _tear_points(ops[last], rng):
                        variants.append((f"prefix{j}/{len(unsynced)}-{label}", keep, (last, cut)))
        for label, keep, tear in variants:
            files = _replay(ops, point, keep, tear)
            digest = hashlib.blake2b(repr(sorted(files.items())).encode(), digest_size=16).digest()
            if digest in seen:
                continue
            seen.add(digest)
            mode = ctl_modes[count % len(ctl_modes)]
            count += 1
            ctl = None
            if ctl_snapshots is not None and mode != "absent":
                if mode == "zero":
                    ctl = bytes(CTL_FILE_SIZE)
                else:
                    snap = ctl_snapshots[point] if point < len(ctl_snapshots) else ctl_snapshots[-1]
                    if mode == "stale":
                        snap = ctl_snapshots[point // 2] if ctl_snapshots else b""
                    ctl = snap.ljust(CTL_FILE_SIZE, b"\0") if snap else None
            yield CrashState(point, f"{label} ctl={mode}", files, ctl, list(notes))


def materialize(state: CrashState, directory: str) -> str:
    """Writes a crash state's files into ``directory`` (created); returns it."""
    os.makedirs(directory, exist_ok=True)
    for name, data in state.files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    if state.ctl is not None:
        with open(os.path.join(directory, "log.ctl"), "wb") as f:
            f.write(state.ctl)
    return directory


def history(ops: list[Op], point: int | None = None, last: int = 80) -> str:
    """The last ``last`` operations before ``point``, one per line (for failure messages)."""
    point = len(ops) if point is None else point
    start = max(0, point - last)
    return "\n".join(f"{i:4d} {ops[i]!r}" for i in range(start, point))
