"""One segment file: its header, its memory map, and an index of its frames."""

from __future__ import annotations

import mmap
import os
from array import array

from walq.errors import CorruptionError
from walq.log._native import ffi, lib
from walq.log.format import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, decode_segment_header

_SCAN_CHUNK = 8192
#: Scanned pages are dropped from this process's map in chunks of this
#: size (at most a quarter of the segment), keeping the most recent quarter
#: of a chunk: the records just scanned are usually read next (a catch-up
#: applies them, a receive reads the newest messages), and a page dropped
#: at once faulted straight back in.
_RELEASE_CHUNK = 4 << 20


class Segment:
    """A segment open in this process.

    ``offs[i]`` is the byte offset of the frame with sequence ``base + i``;
    the index grows as this process scans further (``scan_off``/``scan_seq``).
    The map covers the whole preallocated file, so appends by other processes
    become visible without remapping.
    """

    __slots__ = ("path", "base", "salt", "fd", "size", "mm", "ptr", "offs", "scan_off", "released", "sealed")

    def __init__(self, path: str, fd: int, base: int, salt: int) -> None:
        self.path = path
        self.fd = -1  # owned only once mapped: open() closes it if mapping fails
        self.base = base
        self.salt = salt
        self.size = os.fstat(fd).st_size
        self.mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ)
        self.ptr = ffi.from_buffer(self.mm)
        self.fd = fd
        self.offs = array("Q")
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
        return self.base + len(self.offs)

    def index_to(self, limit_seq: int) -> None:
        """Extends the frame index up to ``limit_seq`` (exclusive) or the end of data.

        Everything below ``limit_seq`` was published, so a frame that does not
        validate there is damage, not a write in progress.
        """
        if self.next_seq >= limit_seq or self.sealed:
            return
        # Sized to the request: a catch-up usually wants a few frames, and
        # zeroing full-chunk arrays on every call cost more than the scan.
        offs = ffi.new("uint64_t[]", min(_SCAN_CHUNK, limit_seq - self.next_seq))
        res = ffi.new("walq_scan_t *")
        while self.next_seq < limit_seq and not self.sealed:
            want = min(len(offs), limit_seq - self.next_seq)
            lib.walq_scan(self.ptr, self.size, self.scan_off, self.salt, self.next_seq, want, offs,
                          ffi.NULL, ffi.NULL, res)
            if res.count:
                self.offs.frombytes(ffi.buffer(offs, 8 * res.count))
                self.scan_off = res.next_off
                chunk = min(_RELEASE_CHUNK, self.size >> 2)
                if self.scan_off - self.released >= chunk:
                    self.released = self._release(self.released, self.scan_off - (chunk >> 2))
            if res.status in (lib.WALQ_SCAN_BAD, lib.WALQ_SCAN_EOF) and self._remap_if_grown():
                continue
            if res.status == lib.WALQ_SCAN_BAD:
                raise CorruptionError(
                    f"record {res.next_seq} in {self.path} at offset {res.next_off} does not validate",
                    self.path,
                    res.next_off,
                )
            if res.status in (lib.WALQ_SCAN_END, lib.WALQ_SCAN_EOF):
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
