"""StoreClock: a store's time, which no wall-clock step moves.

Every time walq stores (send times, lease and delay deadlines, retention and
dedup windows) is absolute "epoch seconds" from the broker's clock.  The
default clock is the store's own time::

    store time = anchor_epoch + (boot_now - anchor_boot)

``boot_now`` is ``CLOCK_BOOTTIME`` (it never steps, and it counts a suspend),
and the anchor ``(boot_id, anchor_epoch, anchor_boot)`` is one small file at
the store root that every process of one boot reads, so all of them compute
the same, step-free time.  The wall clock is read only when a boot anchors
(the first open after a reboot, or of a new store):

- a new store starts at the wall clock;
- after a reboot, time goes on from the high-water mark (the newest store
  time recorded, with the wall clock read at the same moment), forward by the
  wall clock's advance since that mark - and by nothing if the wall clock went
  back or either reading is before ``WALL_FLOOR`` (a clock not yet set, as a
  host that boots in 1970 before NTP runs).  So store time never goes back,
  a step during an earlier boot never reaches it, and the downtime is counted
  only when both readings can be believed.

The file formats are in docs/format.md ("Clock").
"""

from __future__ import annotations

import os
import struct
import time
from functools import partial

import portalocker

from walq.errors import CorruptionError, InvalidParameter
from walq.log.fileio import OsIO
from walq.log.format import hash64

__all__ = ["StoreClock", "WALL_FLOOR", "MARK_EVERY_S"]

#: 2024-01-01 UTC.  A wall clock reading earlier than this has not been set
#: (walq did not exist), so it never decides how much time passed.
WALL_FLOOR = 1_704_067_200.0
#: How often a process records the high-water mark (at most; on a clock call).
MARK_EVERY_S = 60.0

ANCHOR_FILE = "clock.anchor"
MARK_FILE = "clock.mark"
_ANCHOR_MAGIC = b"WALQCLK1"
_BOOT_ID_LEN = 64
#: magic, boot id (ASCII, zero padded), anchor_epoch, anchor_boot, anchor_wall
_ANCHOR = struct.Struct(f"<8s{_BOOT_ID_LEN}sddd")
#: one slot of the mark file: store time, wall time, XXH3-64 of the 16 bytes before it
_SLOT = struct.Struct("<ddQ")
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


#: CLOCK_BOOTTIME: never stepped, and (unlike CLOCK_MONOTONIC) it counts a
#: suspend.  None where the platform has none (it is Linux's).
_boottime = (partial(time.clock_gettime, time.CLOCK_BOOTTIME)
             if hasattr(time, "CLOCK_BOOTTIME") else None)


def _read_boot_id() -> str | None:
    try:
        with open(_BOOT_ID_PATH, "r", encoding="ascii") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return None  # not Linux


def encode_anchor(boot_id: str, epoch: float, boot: float, wall: float) -> bytes:
    """The bytes of ``clock.anchor`` (docs/format.md)."""
    body = _ANCHOR.pack(_ANCHOR_MAGIC, boot_id.encode("ascii"), epoch, boot, wall)
    return body + struct.pack("<Q", hash64(body))


def decode_anchor(data: bytes, path: str) -> tuple[str, float, float, float]:
    """``(boot_id, anchor_epoch, anchor_boot, anchor_wall)``; CorruptionError if damaged."""
    if len(data) != _ANCHOR.size + 8:
        raise CorruptionError(f"{path}: clock anchor of {len(data)} bytes, expected {_ANCHOR.size + 8}",
                              path, 0)
    body, (checksum,) = data[:_ANCHOR.size], struct.unpack_from("<Q", data, _ANCHOR.size)
    magic, raw_id, epoch, boot, wall = _ANCHOR.unpack(body)
    if magic != _ANCHOR_MAGIC or hash64(body) != checksum:
        raise CorruptionError(f"{path}: clock anchor fails its checksum (remove it to re-anchor on "
                              "the wall clock)", path, 0)
    return raw_id.rstrip(b"\0").decode("ascii"), epoch, boot, wall


def encode_slot(store: float, wall: float) -> bytes:
    """One slot of ``clock.mark``."""
    body = struct.pack("<dd", store, wall)
    return body + struct.pack("<Q", hash64(body))


def decode_slots(data: bytes) -> list[tuple[float, float]]:
    """The slots of ``clock.mark`` that validate (a torn one is skipped: it
    is only a hint, and the other slot or the anchor stands in for it)."""
    out = []
    for off in range(0, len(data) - _SLOT.size + 1, _SLOT.size):
        store, wall, checksum = _SLOT.unpack_from(data, off)
        if hash64(data[off:off + 16]) == checksum:
            out.append((store, wall))
    return out


def resume_from(high_water: tuple[float, float] | None, wall_now: float) -> float:
    """The store time a new boot starts at, given the newest ``(store time,
    wall time)`` pair recorded (None: a new store) and the wall clock now.

    Rule: never back; forward by the wall clock's advance since the mark only
    when both readings are set (at or after WALL_FLOOR).  A clock stepped
    during the last boot does not matter: the mark pairs the store time with
    the wall clock as it read at that moment.
    """
    if high_water is None:
        return wall_now
    store, wall = high_water
    if wall >= WALL_FLOOR and wall_now >= WALL_FLOOR and wall_now > wall:
        return store + (wall_now - wall)
    return store


class StoreClock:
    """The store's time at ``path`` (a store directory): epoch seconds that a
    wall-clock step never moves, the same in every process of one boot.

    The default clock of ``walq.open``.  ``wall`` (the wall clock; default
    ``time.time``), ``boot`` (default ``CLOCK_BOOTTIME``) and ``boot_id``
    (this boot's id; default ``/proc/sys/kernel/random/boot_id``) are the
    seams tests step and reboot through.  Call it for the time: one
    ``clock_gettime`` and an add, plus a compare that records the high-water
    mark at most every MARK_EVERY_S.  ``close()`` records it durably.
    Without a boot clock or boot id (not Linux) it is the wall clock.
    ``now`` is the same clock as a plain function, a little cheaper to call.
    """

    def __init__(self, path, *, wall=None, boot=None, boot_id=None):
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidParameter(f"path must be a str or os.PathLike; got {type(path).__name__}")
        if (wall is not None and not callable(wall)) or (boot is not None and not callable(boot)):
            raise InvalidParameter("wall and boot must be callables returning seconds")
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise InvalidParameter(f"{self.path} is not a directory (a store's, as walq.open makes)")
        self._wall = time.time if wall is None else wall  # looked up now: a test may patch it
        boot_id = _read_boot_id() if boot_id is None else boot_id
        boot = _boottime if boot is None else boot
        if boot_id is None or boot is None:
            # No boot clock or boot id (not Linux): the wall clock, as before
            # (README, "Caveats and limitations").
            self.boot_id = self.offset = None
            self.now = self._wall
            return
        if not isinstance(boot_id, str) or not boot_id.isascii() or not 0 < len(boot_id) <= _BOOT_ID_LEN:
            raise InvalidParameter(f"boot_id must be 1-{_BOOT_ID_LEN} ASCII characters; got {boot_id!r}")
        self.boot_id = boot_id
        self._boot = boot
        self._anchor_path = os.path.join(self.path, ANCHOR_FILE)
        self._mark_path = os.path.join(self.path, MARK_FILE)
        _, epoch, anchor_boot, _ = self._anchor()
        #: store time = boot clock + offset, for the rest of this boot
        self.offset = epoch - anchor_boot
        self.now = self._make_now()
        self.mark()

    def __call__(self) -> float:
        """The store's time now (epoch seconds)."""
        return self.now()

    def _make_now(self):
        """The clock itself, as a closure: cell variables are cheaper to
        read than attributes (python -m timeit: ~190 ns a call against ~320
        for the same code as a method, time.time ~70)."""
        boot, offset, mark = self._boot, self.offset, self._mark_quietly
        due = boot() + offset + MARK_EVERY_S

        def now() -> float:
            nonlocal due
            t = boot() + offset
            if t < due:
                return t
            due = t + MARK_EVERY_S  # first, so that threads racing here mark once or twice, not loop
            mark(t)
            return t

        return now

    # -- the anchor ------------------------------------------------------------

    def _read_anchor(self) -> tuple[str, float, float, float] | None:
        try:
            fd = os.open(self._anchor_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        return decode_anchor(data, self._anchor_path)

    def _anchor(self) -> tuple[str, float, float, float]:
        """This boot's anchor: read, or written if this is the boot's first open."""
        cur = self._read_anchor()
        if cur is not None and cur[0] == self.boot_id:
            return cur
        # The mark file is the lock too: whoever anchors first writes the
        # anchor, the rest wait and read it.  Not a hot path.
        with self._open_mark() as fh:
            portalocker.lock(fh, portalocker.LOCK_EX)
            try:
                cur = self._read_anchor()
                if cur is not None and cur[0] == self.boot_id:
                    return cur
                marks = decode_slots(os.pread(fh.fileno(), 2 * _SLOT.size, 0))
                if cur is not None:
                    marks.append((cur[1], cur[3]))
                wall_now, boot_now = float(self._wall()), float(self._boot())
                epoch = resume_from(max(marks) if marks else None, wall_now)
                new = (self.boot_id, epoch, boot_now, wall_now)
                OsIO().write_file_atomic(self._anchor_path, encode_anchor(*new))
                return new
            finally:
                portalocker.unlock(fh)

    # -- the high-water mark ---------------------------------------------------

    def _open_mark(self):
        fd = os.open(self._mark_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        return os.fdopen(fd, "r+b", buffering=0)

    def mark(self, *, durable: bool = False) -> None:
        """Records the high-water mark (store time and wall time now).

        Two checksummed slots, written in turn, one per MARK_EVERY_S period:
        a write torn by a power cut leaves the other one.  The clock's own
        writes are not fsynced; ``durable`` (at close) fsyncs.
        """
        if self.boot_id is not None:
            self._write_mark(self.now(), durable, block=durable)

    def _mark_quietly(self, t: float) -> None:
        try:
            self._write_mark(t, False, block=False)
        except OSError:
            # The mark only narrows the time lost across a reboot with the wall
            # clock behind; a disk that fails is reported by the log's writes,
            # and a clock call must not fail.
            pass

    def _write_mark(self, t: float, durable: bool, block: bool) -> None:
        with self._open_mark() as fh:
            try:
                portalocker.lock(fh, portalocker.LOCK_EX | (0 if block else portalocker.LOCK_NB))
            except portalocker.LockException:
                return  # another process is writing one this very moment
            try:
                slot = int(t // MARK_EVERY_S) % 2
                os.pwrite(fh.fileno(), encode_slot(t, float(self._wall())), slot * _SLOT.size)
                if durable:
                    os.fsync(fh.fileno())
            finally:
                portalocker.unlock(fh)

    def close(self) -> None:
        """Records the high-water mark durably (the broker calls it on close)."""
        try:
            self.mark(durable=True)
        except FileNotFoundError:
            pass  # the store was removed: nothing left to keep time for

    def __repr__(self) -> str:
        return f"<walq.StoreClock {self.path!r} boot {self.boot_id}>"
