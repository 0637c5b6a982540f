"""Recovery on open: find the end of valid data and rebuild the control block.

Runs only when no other process has the log open (the caller holds
``lock.open`` and ``lock.users`` exclusively), so nothing moves underneath.

* Newest segments whose creation never reached the disk (an all-zero
  header, or a torn one with nothing after it) are renamed aside to
  ``torn-<base>-header.bin``; a damaged header anywhere else is an error.
* Segments before the active one were fdatasynced before anything in a later
  segment was declared durable, so only their headers are checked here;
  their frames are verified whenever they are read.  Those that may hold
  records above the last durable point (appenders killed between a roll and
  their sync) are fdatasynced before everything is declared durable.
* Every segment but the newest must end with the record just below the next
  one's base (looked for near the end of its data); a gap - a segment file
  deleted from the middle - is CorruptionError naming the missing range.
* The active (last) segment is scanned in C from its header.  Where the scan
  stops - on a frame that does not validate, or on a zero header with valid
  frames after it - the rest of the segment decides:
  every record carries how far the durable point trailed it when written, so
  if a later valid record shows the bad one had already been synced, the log
  is damaged (CorruptionError with file and offset); otherwise it is a torn
  tail - writes a crash or power cut cut short - and the bytes are copied
  aside to ``torn-<base>-<offset>.bin`` and zeroed.
* Every step is idempotent, so a crash during recovery is recovered by the
  next open.
"""

from __future__ import annotations

import os
import secrets
import struct
import time

from walq.errors import CorruptionError
from walq.log._native import ffi, lib
from walq.log.fileio import OsIO
from walq.log.format import (
    CTL_MAGIC,
    SEGMENT_HEADER_SIZE,
    decode_segment_header,
    encode_segment_header,
    parse_segment_name,
    segment_name,
)
from walq.log.segment import Segment


def recover(log) -> None:
    """Scans ``log``'s directory and writes a fresh control block."""
    io, path = log.io, log.path
    # Read before anything changes it: below the durable point of the last
    # run everything was synced (if the control block survived).
    ctl_ok = lib.walq_load(ffi.addressof(log.ctl, "magic")) == CTL_MAGIC
    synced_below = lib.walq_load(ffi.addressof(log.ctl, "durable_seq")) if ctl_ok else 0
    for name in os.listdir(path):
        if name.endswith(".seg.tmp"):
            # A segment creation that never reached its rename: nothing in it
            # was ever published.
            io.unlink(os.path.join(path, name))
    bases = sorted(b for b in map(parse_segment_name, os.listdir(path)) if b is not None)
    # Newest segments whose creation never reached the disk (no header, and
    # nothing else, or an all-zero header: nothing in them was ever synced,
    # since an fdatasync would have persisted the header too) are kept aside.
    # A roll is not synced by itself, so several may be cut off at once.  A
    # header that is damaged while the segment holds data is an error: the
    # records in it may have been acknowledged.
    newest_gone = None
    while bases:
        last = os.path.join(path, segment_name(bases[-1]))
        state = _header_state(last, bases[-1], io)
        if state == "ok":
            break
        if state == "damaged":
            raise CorruptionError(f"segment header does not validate: {last} at offset 0", last, 0)
        io.rename(last, _aside_path(path, f"torn-{bases[-1]:020d}-header", io=io))
        io.fsync_dir(path)
        newest_gone = bases.pop()
    for base in bases[:-1]:
        seg_path = os.path.join(path, segment_name(base))
        decoded = decode_segment_header(io.read_file(seg_path, SEGMENT_HEADER_SIZE))
        if decoded is None or decoded[0] != base:
            raise CorruptionError(f"segment header does not validate: {seg_path} at offset 0", seg_path, 0)
    # Invariant: the log is dense - every segment but the newest ends with
    # the record just below the next one's base.  A segment file deleted
    # from the middle leaves a gap that nothing else would notice: a reader
    # past a checkpoint never reads it, and the messages it held vanish.
    for i, base in enumerate(bases[:-1]):
        _check_reaches(os.path.join(path, segment_name(base)), base, bases[i + 1], io)

    seg = Segment.open(os.path.join(path, segment_name(bases[-1])), io, expected_base=bases[-1]) if bases else None
    if seg is None:
        base = newest_gone if newest_gone is not None else 0
        size = log.options.segment_size
        salt = secrets.randbits(64)
        fd = io.create_segment(path, segment_name(base), encode_segment_header(base, salt, time.time_ns()),
                               size, min(size, log.options.chunk_at(0)))
        io.fdatasync(fd, path)
        os.close(fd)
        io.fsync_dir(path)
        seg = Segment.open(os.path.join(path, segment_name(base)), io, expected_base=base)
        bases = [base]

    try:
        end_off, end_seq = _find_end(seg, io)
        # Everything found is declared durable below, so everything must be
        # synced - older segments too: appenders killed between a roll and
        # their sync leave records (and a new segment's header) there only
        # in the page cache, and the directory fsync below would make such a
        # segment's name durable without its bytes.  A segment wholly below
        # the last durable point needs no sync.
        for i, base in enumerate(bases[:-1]):
            if bases[i + 1] > synced_below:
                fd = io.open_rw(os.path.join(path, segment_name(base)))
                try:
                    io.fdatasync(fd, os.path.join(path, segment_name(base)))
                finally:
                    os.close(fd)
        io.fdatasync(seg.fd, seg.path)
        io.fsync_dir(path)
        store = _storer(log)
        store("magic", 0)  # invalid while half-written
        _store_active(store, seg, end_off, end_seq)
        store("durable_seq", end_seq)
        store("first_seq", bases[0])
        store("generation", lib.walq_load(ffi.addressof(log.ctl, "generation")) + 1)
        store("poisoned", 0)
        # Waiter counts left raised by processes killed while waiting: each
        # would cost every publish a futex wake-up for nobody.  No process
        # has the log open now, so nobody waits.
        log.ctl.waiters = 0
        log.ctl.sync_waiters = 0
        store("dir_synced_base", seg.base)
        store("magic", CTL_MAGIC)
    finally:
        seg.close()


def repair_active(log) -> None:
    """Re-derives the active segment's fields of the control block from the
    newest segment file, after a process died half way through a roll.

    The caller holds the append lock; other processes may be reading, and
    only ever read up to end_seq, which this never lowers below what was
    published.
    """
    path = log.path
    bases = sorted(b for b in map(parse_segment_name, os.listdir(path)) if b is not None)
    seg = Segment.open(os.path.join(path, segment_name(bases[-1])), log.io, expected_base=bases[-1])
    try:
        end_off, end_seq = _find_end(seg, log.io)
        store = _storer(log)
        with log._alloc_locked():  # as _roll: a zeroer reads these as one snapshot
            _store_active(store, seg, end_off, end_seq)
            store("busy", 0)
    finally:
        seg.close()


def read_only_state(log) -> None:
    """Fills a read-only handle's private control block from the segment
    files, changing nothing on disk: what recovery would find, without its
    writes.  Newest segments whose creation was cut off are skipped, and the
    active one ends at its first record that does not validate (a torn tail,
    or a writer's record in progress).  The result is a snapshot: this
    handle does not see later appends."""
    io, path = log.io, log.path
    bases = sorted(b for b in map(parse_segment_name, os.listdir(path)) if b is not None)
    while bases and _header_state(os.path.join(path, segment_name(bases[-1])), bases[-1], io) != "ok":
        bases.pop()
    store = _storer(log)
    if not bases:
        store("magic", CTL_MAGIC)  # an empty log
        return
    seg = Segment.open(os.path.join(path, segment_name(bases[-1])), io, expected_base=bases[-1])
    try:
        res = ffi.new("walq_scan_t *")
        lib.walq_scan(seg.ptr, seg.size, SEGMENT_HEADER_SIZE, seg.salt, seg.base, 1 << 62,
                      ffi.NULL, ffi.NULL, ffi.NULL, res)
        _store_active(store, seg, res.next_off, res.next_seq)
        store("durable_seq", res.next_seq)
        store("first_seq", bases[0])
        store("dir_synced_base", seg.base)
        store("magic", CTL_MAGIC)
    finally:
        seg.close()


def _storer(log):
    ctl = log.ctl
    return lambda field, v: lib.walq_store(ffi.addressof(ctl, field), v)


def _store_active(store, seg: Segment, end_off: int, end_seq: int) -> None:
    store("end_seq", end_seq)
    store("seg_base", seg.base)
    store("end_off", end_off)
    store("reserve_off", end_off)
    store("reserve_seq", end_seq)
    # What is allocated past the end is unknown after a crash; the next
    # append re-allocates from here (a no-op for blocks already there).
    store("alloc_off", end_off)
    store("seg_cap", seg.size)
    store("salt", seg.salt)
    store("busy", 0)


def _find_end(seg: Segment, io) -> tuple[int, int]:
    """``(end offset, end seq)`` of the active segment, cutting a torn tail."""
    res = ffi.new("walq_scan_t *")
    lib.walq_scan(seg.ptr, seg.size, SEGMENT_HEADER_SIZE, seg.salt, seg.base, 1 << 62,
                  ffi.NULL, ffi.NULL, ffi.NULL, res)
    end_off, end_seq = res.next_off, res.next_seq
    if res.status not in (lib.WALQ_SCAN_BAD, lib.WALQ_SCAN_END):
        return end_off, end_seq
    # A zero header ends the data too, but it is checked the same way: zeros
    # where synced records were (a lost block) must not silently drop every
    # record after them, and valid frames left after the end by a power cut
    # must not come back once new records reach them.
    # Only the parts of the file that hold data are scanned: the rest of a
    # sparse or preallocated segment reads as zeros, and touching it page by
    # page cost ~20 ms per 64 MiB on every open.
    found, durable, data_end = 0, 0, end_off
    one = ffi.new("uint64_t *")
    for start, stop in _data_regions(seg.fd, end_off + 8, seg.size):
        durable = max(durable, lib.walq_durable_after(seg.ptr, stop, start, seg.salt, end_seq, one))
        found += one[0]
        data_end = stop
    if res.status == lib.WALQ_SCAN_END and not found:
        return end_off, end_seq
    if found and durable > end_seq:
        # A later record was written after this one had been synced: synced
        # data does not tear, so this is damage.
        raise CorruptionError(
            f"record {end_seq} in {seg.path} at offset {end_off} does not validate, but later "
            f"records show it had been synced: the log is damaged",
            seg.path,
            end_off,
        )
    # Otherwise nothing from here on had been synced when it was written:
    # a torn tail (a crash, or a power cut that wrote later pages before
    # earlier ones).  Keep it aside, never return it.
    tail = seg.mm[end_off:max(data_end, end_off + 8)].rstrip(b"\0")
    aside = _aside_path(os.path.dirname(seg.path), f"torn-{seg.base:020d}-{end_off}", tail, io)
    io.write_file_atomic(aside, tail)
    io.zero(seg.fd, end_off, len(tail))
    return end_off, end_seq


def _check_reaches(seg_path: str, base: int, next_base: int, io) -> None:
    """CorruptionError unless the segment at ``seg_path`` holds the record
    ``next_base - 1``.  Looks for that record near the end of the data only
    (records are found by their checksum at any 8-aligned offset), widening
    the window until it covers the segment: an intact log costs a few
    kilobytes per segment, not a scan of every byte."""
    want = next_base - 1
    seg = Segment.open(seg_path, io, expected_base=base)
    try:
        data_end = _last_nonzero(seg)
        window = 1 << 16
        while True:
            start = max(SEGMENT_HEADER_SIZE, (data_end - window) & ~7)
            # Up to the file's end, not data_end: a record's payload may end
            # in zero bytes, past the last non-zero one.
            at = lib.walq_find_valid(seg.ptr, seg.size, start, seg.salt, want)
            if at != 0xFFFFFFFFFFFFFFFF:
                (found,) = struct.unpack_from("<Q", seg.mm, at + 16)
                if found == want:
                    return
                break  # a record past the next base: reported below
            if start == SEGMENT_HEADER_SIZE:
                break
            window <<= 3
        seg.index_to(next_base)
        end = seg.next_seq
    finally:
        seg.close()
    if end < next_base:
        raise CorruptionError(
            f"records {end}-{want} are missing: segment {seg_path} ends after record {end - 1} but the "
            f"next segment starts at {next_base} (a segment file was deleted, or its records damaged)",
            seg_path, None)
    raise CorruptionError(f"segment {seg_path} holds records past {want}, overlapping the next segment",
                          seg_path, None)


def _last_nonzero(seg: Segment) -> int:
    """One past the last non-zero byte of ``seg`` (its header's end if none)."""
    last = SEGMENT_HEADER_SIZE
    for start, stop in _data_regions(seg.fd, SEGMENT_HEADER_SIZE, seg.size):
        pos = stop
        while pos > start:
            lo = max(start, pos - (1 << 20))
            tail = len(seg.mm[lo:pos].rstrip(b"\0"))
            if tail:
                last = lo + tail
                break
            pos = lo
    return last


def _aside_path(directory: str, stem: str, content: bytes | None = None, io=None) -> str:
    """Where to keep bytes cut aside: ``<stem>.bin``, or ``<stem>-<n>.bin``
    if a file with other bytes has that name - a second tear at the same
    place (after a later crash) must not overwrite the first one's bytes.
    A file holding exactly ``content`` is reused: recovery interrupted after
    writing it and run again writes the same bytes.  ``io`` (the log's)
    reads the file, refusing links."""
    io = io or OsIO()
    n = 0
    while True:
        path = os.path.join(directory, f"{stem}.bin" if n == 0 else f"{stem}-{n}.bin")
        if not os.path.lexists(path):
            return path
        if content is not None and io.read_file(path) == content:
            return path
        n += 1


def _data_regions(fd: int, start: int, size: int):
    """``(start, end)`` of each stretch of ``[start, size)`` that may hold
    data (lseek SEEK_DATA/SEEK_HOLE); all of it where that is unsupported."""
    if not hasattr(os, "SEEK_DATA"):
        yield start, size
        return
    off = start
    while off < size:
        try:
            data = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole from here on
            return
        if data >= size:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        yield data, hole
        off = hole


def _header_state(seg_path: str, base: int, io) -> str:
    """``"ok"``, ``"unwritten"`` (the creation was cut off: an all-zero
    header, or a torn one with nothing after it) or ``"damaged"``."""
    with os.fdopen(io.open_ro(seg_path), "rb") as f:
        header = f.read(SEGMENT_HEADER_SIZE)
        decoded = decode_segment_header(header)
        if decoded is not None and decoded[0] == base:
            return "ok"
        if not any(header):
            return "unwritten"
        while chunk := f.read(1 << 20):
            if any(chunk):
                return "damaged"
    return "unwritten"
