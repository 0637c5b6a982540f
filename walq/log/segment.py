"""One segment file: its header, its memory map, and an index of its frames."""

from __future__ import annotations

import mmap
import os
import threading

from walq.errors import CorruptionError
from walq.log._native import ffi, lib
from walq.log.format import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, decode_segment_header

_SCAN_CHUNK = 8192
#: walq_scan's stop reasons, looked up once (a catch-up scans every few records).
_SCAN_LIMIT, _SCAN_BAD = lib.WALQ_SCAN_LIMIT, lib.WALQ_SCAN_BAD
_SCAN_EOF, _SCAN_END = lib.WALQ_SCAN_EOF, lib.WALQ_SCAN_END
#: Scanned pages are dropped from this process's map in chunks of this
#: size (at most a quarter of the segment), keeping the most recent quarter
#: of a chunk: the records just scanned are usually read next (a catch-up
#: applies them, a receive reads the newest messages), and a page dropped
#: at once faulted straight back in.
_RELEASE_CHUNK = 4 << 20


class Segment:
    """A segment open in this process.

    ``offs[i]`` is the byte offset of the frame with sequence ``base + i``,
    for ``i < count``; the index grows as this process scans further
    (``scan_off``).  ``offs`` is a cffi array that the native scan fills in
    place (grown by doubling; a reader holding the old one reads the same
    values), so a catch-up's offsets never pass through Python objects.
    The map covers the whole preallocated file, so appends by other processes
    become visible without remapping.
    """

    __slots__ = ("path", "base", "salt", "fd", "size", "mm", "ptr", "offs", "count", "scan_off", "released", "sealed",
                 "_res", "_scan_lock")

    def __init__(self, path: str, fd: int, base: int, salt: int) -> None:
        self.path = path
        self.fd = -1  # owned only once mapped: open() closes it if mapping fails
        self.base = base
        self.salt = salt
        self.size = os.fstat(fd).st_size
        self.mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ)
        self.ptr = ffi.from_buffer(self.mm)
        self.fd = fd
        self.offs = ffi.new("uint64_t[]", 256)
        self.count = 0
        self._res = ffi.new("walq_scan_t *")
        # Two threads reading one Log may both extend the index; the scan
        # releases the GIL, so they would write the same slots.
        self._scan_lock = threading.Lock()
        self.scan_off = SEGMENT_HEADER_SIZE
        self.released = 0  # pages below this offset were dropped from the map
        self.sealed = False  # True once a scan hit this segment's end of data

    @classmethod
    def open(cls, path: str, io, expected_base: int | None = None) -> "Segment":
        """Opens and validates the header; CorruptionError if it is damaged."""
        fd = io.open_rw(path)
        try:
            header = os.pread(fd, SEGMENT_HEADER_SIZE, 0)
            decoded = decode_segment_header(header)
            if decoded is None:
                raise CorruptionError(f"segment header does not validate: {path} at offset 0", path, 0)
            base, salt = decoded
            if expected_base is not None and base != expected_base:
                raise CorruptionError(
                    f"segment {path} says its base is {base}, its name says {expected_base}", path, 0
                )
            return cls(path, fd, base, salt)
        except BaseException:
            os.close(fd)
            raise

    @property
    def next_seq(self) -> int:
        """The sequence of the first frame not yet indexed."""
        return self.base + self.count

    def index_to(self, limit_seq: int) -> None:
        """Extends the frame index up to ``limit_seq`` (exclusive) or the end of data.

        Everything below ``limit_seq`` was published, so a frame that does not
        validate there is damage, not a write in progress.
        """
        if self.base + self.count >= limit_seq or self.sealed:
            return
        with self._scan_lock:
            self._scan_to(limit_seq)

    def scan_run(self, seq: int, limit_seq: int, buf) -> int:
        """index_to(limit_seq) for a reader whose run starts at ``seq``, at
        or past the first frame not yet indexed: the run's payload offsets,
        lengths and types also go to ``buf`` (a RunBuffers), so they are
        checked once, not once by the scan and again by the reader.  Returns
        how many, or 0 if indexing already passed ``seq`` (another thread
        moved it): the caller reads the indexed frames instead."""
        with self._scan_lock:
            if self.base + self.count < seq:
                # Records this reader wrote and applied without reading them
                # (a queue folds in its own appends): index them first.
                self._scan_to(seq)
            start = self.count
            if self.base + start != seq or self.sealed:
                return 0
            self._scan_to(limit_seq, buf)
            return self.count - start

    def _scan_to(self, limit_seq: int, buf=None) -> None:
        res = self._res
        start = self.count
        while self.base + self.count < limit_seq and not self.sealed:
            want = min(_SCAN_CHUNK, limit_seq - self.base - self.count)
            if self.count + want > len(self.offs):
                grown = ffi.new("uint64_t[]", max(self.count + want, 2 * len(self.offs)))
                ffi.memmove(grown, self.offs, 8 * self.count)
                self.offs = grown
            if buf is None:
                lib.walq_scan(self.ptr, self.size, self.scan_off, self.salt, self.base + self.count, want,
                              self.offs + self.count, ffi.NULL, ffi.NULL, res)
            else:
                k = self.count - start
                lib.walq_scan_run(self.ptr, self.size, self.scan_off, self.salt, self.base + self.count, want,
                                  self.offs + self.count, buf.poffs + k, buf.lens + k, buf.types + k, res)
            got, status = res.count, res.status
            if got:
                self.count += got  # after the offsets are written: readers check count first
                self.scan_off = res.next_off
                chunk = min(_RELEASE_CHUNK, self.size >> 2)
                if self.scan_off - self.released >= chunk:
                    self.released = self._release(self.released, self.scan_off - (chunk >> 2))
            if status == _SCAN_LIMIT:
                continue  # the usual case: all that was asked for
            if status in (_SCAN_BAD, _SCAN_EOF) and self._remap_if_grown():
                continue
            if status == _SCAN_BAD:
                raise CorruptionError(
                    f"record {res.next_seq} in {self.path} at offset {res.next_off} does not validate",
                    self.path,
                    res.next_off,
                )
            if status in (_SCAN_END, _SCAN_EOF):
                self.sealed = True

    def _remap_if_grown(self) -> bool:
        """Maps the file again if it grew since it was mapped: an empty active
        segment is enlarged in place for a batch bigger than it (Log._grow).
        The old map stays valid for views still holding it."""
        size = os.fstat(self.fd).st_size
        if size <= self.size:
            return False
        self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        self.ptr = ffi.from_buffer(self.mm)
        self.size = size
        return True

    def _release(self, start: int, end: int) -> int:
        """Drops scanned pages from this process's mapping; returns the
        offset up to which they are dropped.

        They stay in the page cache; without this a process that indexed a
        large log would carry every page it scanned in its resident set.
        """
        page = mmap.PAGESIZE
        lo = (start + page - 1) // page * page
        hi = end // page * page
        if hi > lo:
            self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        return max(hi, start)

    def frame_at(self, seq: int) -> tuple[int, int, int]:
        """``(offset, length, type)`` of a validated frame; CorruptionError if damaged."""
        off = self.offs[seq - self.base]
        info = lib.walq_frame_info(self.ptr, self.size, off, self.salt, seq)
        if info < 0:
            raise CorruptionError(
                f"record {seq} in {self.path} at offset {off} does not validate", self.path, off
            )
        return off + RECORD_HEADER_SIZE, info & 0xFFFFFFFF, info >> 32

    def close(self) -> None:
        """Unmaps and closes (pending reads must not hold views into the map).
        Closing twice is fine."""
        if self.fd < 0:
            return
        try:
            self.ptr = None
            self.mm.close()
        except BufferError:
            pass  # a caller still holds a view; the map dies with it
        os.close(self.fd)
        self.fd = -1

    def __del__(self) -> None:
        # A segment another process removed is dropped, not closed (Log.
        # _drop_segment): its last reference closes the descriptor.  The map
        # is left to its own last reference - a caller of Log.frames holds
        # the map, not the segment.
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            self.fd = -1
            os.close(fd)
