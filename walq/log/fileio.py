"""Every system call by which a log changes files, in one replaceable object.

The log changes files only through an ``OsIO``, with one exception: the
lock-taking fast path of ``Log.append``/``append_batch`` calls the native
``walq_append_one``/``walq_writer_append`` directly, to keep a Python call off
every append.  Crash tests
substitute a recording subclass (tests/crashsim.py) that logs each write,
fsync, creation and rename - observing fast-path appends through the control
block - and then builds the states a power cut could leave.
"""

from __future__ import annotations

import errno
import os

from walq.errors import StoreFull
from walq.log._native import check_os, check_sync, ffi, lib
from walq.log.access import NO_SPACE, Access


class OsIO:
    """The real file system.

    ``access`` is the store's file policy (walq/log/access.py): the log sets
    it from its directory; every file is opened and created through it.
    """

    access = Access()

    def open_rw(self, path: str) -> int:
        """Opens an existing file for reading and writing (reading only in a
        read-only store); UnsafeFile for a symlink or a file walq did not make."""
        return self.access.open(path, os.O_RDWR)

    def open_ro(self, path: str) -> int:
        """Opens an existing file for reading, with open_rw's checks."""
        return self.access.open(path, os.O_RDONLY)

    def read_file(self, path: str, limit: int = -1) -> bytes:
        """The first ``limit`` bytes of a file (all of it if -1), with open_rw's checks."""
        with os.fdopen(self.open_ro(path), "rb") as f:
            return f.read(limit)

    def create_segment(self, directory: str, name: str, header: bytes, size: int, prealloc: int) -> int:
        """Creates a segment atomically: tmp file, header, rename.

        The file gets its full ``size`` at once (sparse) and its first
        ``prealloc`` bytes written with zeros; ``preallocate`` adds more as
        the end approaches.  The rename is not followed by a directory fsync here -
        the syncer does that before it declares anything in the new segment
        durable - so no fsync happens under the append lock.
        """
        tmp = os.path.join(directory, name + ".tmp")
        # A leftover (or planted) tmp name is removed, never written through.
        self.unlink(tmp)
        fd = self.access.create(tmp, os.O_RDWR, exclusive=True)
        try:
            os.ftruncate(fd, size)
            self.preallocate(fd, 0, min(size, prealloc))
            self.pwrite(fd, header, 0)
            os.rename(tmp, os.path.join(directory, name))
        except BaseException as exc:
            os.close(fd)
            self.unlink(tmp)  # a failed roll (no space) leaves no file behind
            _raise_full(exc, tmp, "a new segment")
            raise
        return fd

    def preallocate(self, fd: int, offset: int, length: int) -> None:
        """Writes zeros over a range ahead of the end (file size unchanged).

        Zeros, not posix_fallocate: fallocate leaves *unwritten* extents on
        ext4, and the first write into each block converts it - a metadata
        change every fdatasync then journals.  Overwriting written blocks
        has nothing to journal: append_batch(100) under "always" measured
        628k -> 857k records/s (bench/RESULTS.md).  The cost is one extra
        sequential write of each byte, flushed with the next sync.
        """
        check_os(lib.walq_zero(fd, offset, length), "preallocate")

    def grow(self, fd: int, size: int) -> None:
        """Extends a file to ``size`` bytes (sparse: the new part reads as zeros)."""
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Writes all of ``data`` at ``offset``."""
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n

    def append_locked(self, ctl, fd, seg_base, n, data, lens, types, type, seq_out) -> int:
        """Frames and writes a batch at the published end (append lock held)."""
        return lib.walq_append_locked(ctl, fd, seg_base, n, data, lens, types, type, seq_out)

    def zero(self, fd: int, offset: int, length: int) -> None:
        """Overwrites a range with zeros (cutting off a torn tail)."""
        check_os(lib.walq_zero(fd, offset, length), "zero")

    def fdatasync(self, fd: int, path: str) -> None:
        """fdatasync, poisoning on failure."""
        check_sync(lib.walq_fdatasync(fd), path)

    def fsync_dir(self, directory: str) -> None:
        """Makes file creations, renames and removals in ``directory`` durable."""
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_file_atomic(self, path: str, data: bytes, sync: bool = True) -> None:
        """Replaces ``path`` with ``data``: tmp file, fsync, rename, fsync dir.
        ``sync=False``: no fsyncs (still whole or not at all after kill -9;
        after a power cut, whichever version the kernel had written back)."""
        tmp = path + ".tmp"
        self.unlink(tmp)  # a leftover (or planted) tmp name is removed, never written through
        fd = self.access.create(tmp, os.O_WRONLY, exclusive=True)
        try:
            try:
                self.pwrite(fd, data, 0)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException as exc:
            self.unlink(tmp)  # no space: no empty tmp file left behind
            _raise_full(exc, tmp, os.path.basename(path))
            raise
        os.rename(tmp, path)
        if sync:
            # The rename is only durable once the directory is.
            self.fsync_dir(os.path.dirname(path) or ".")

    def rename(self, src: str, dst: str) -> None:
        """Renames a file (the caller fsyncs the directory when it matters)."""
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        """Removes a file; a file already gone is fine."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def allocate(fd: int, size: int, path: str) -> None:
    """Gives a file ``size`` bytes of real blocks (posix_fallocate; written
    zeros where the file system has no fallocate); StoreFull if there is no
    room."""
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            have = os.fstat(fd).st_size
            check_os(lib.walq_zero(fd, have, max(0, size - have)), "allocate", path)
    except OSError as exc:
        _raise_full(exc, path, os.path.basename(path))
        raise


def _raise_full(exc: BaseException, path: str, what: str) -> None:
    """Raises StoreFull for an OSError that means no space (else returns)."""
    if isinstance(exc, OSError) and not isinstance(exc, StoreFull) and exc.errno in NO_SPACE:
        raise StoreFull(exc.errno, path, what) from exc


# Keep cffi scratch types in one place for the hot path.
SEQ_OUT = "uint64_t[1]"
LENS = "uint32_t[]"
NULL = ffi.NULL
