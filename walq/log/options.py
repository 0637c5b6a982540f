"""LogOptions: every knob of a log, with its default and its cost."""

from __future__ import annotations

from dataclasses import dataclass

from walq.errors import InvalidParameter

DURABILITY_MODES = ("always", "batch", "os")
#: The first chunk of blocks a segment gets (LogOptions.preallocate caps it).
PREALLOCATE_START = 64 * 1024


@dataclass(frozen=True)
class LogOptions:
    """How a log writes and syncs.

    durability:
        ``"always"`` (default): an append returns after fdatasync covers it;
        concurrent appenders, threads or processes, share one fdatasync
        (group commit).  Survives power loss.  Costs one disk flush per group.
        ``"batch"``: an append returns after write(); a background thread
        fdatasyncs every ``sync_interval`` seconds.  Power loss may lose the
        last interval.  ``"os"``: never fsyncs; power loss may lose anything
        the kernel had not written back.  Every mode survives kill -9.
    sync_interval:
        Seconds between background syncs in ``"batch"`` mode (default 0.01).
    segment_size:
        Bytes preallocated per segment file (default 64 MiB).  Larger
        segments mean fewer files and rolls; recovery after a crash scans the
        active segment, so its size bounds the worst-case open time.
        Segment files are sparse: blocks are allocated ahead of the end in
        chunks (see ``preallocate``), so an idle queue costs 64 KiB of disk.
    preallocate:
        The largest chunk of blocks allocated ahead of the write position
        (default 4 MiB).  Writing into allocated blocks makes each fdatasync
        cheaper; a larger chunk means fewer allocation calls and more idle
        disk use.  Each segment starts with ``PREALLOCATE_START`` (64 KiB)
        and each chunk is as large as what the segment already holds, so the
        chunk doubles with traffic up to this size: a new queue, and a roll,
        need only 64 KiB free (``chunk_at``).
    """

    durability: str = "always"
    sync_interval: float = 0.01
    segment_size: int = 64 * 1024 * 1024
    preallocate: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.durability not in DURABILITY_MODES:
            raise InvalidParameter(
                f"durability must be one of {', '.join(DURABILITY_MODES)}; got {self.durability!r}"
            )
        if not (isinstance(self.sync_interval, (int, float)) and 0 < self.sync_interval <= 60):
            raise InvalidParameter(f"sync_interval must be in (0, 60] seconds; got {self.sync_interval!r}")
        if not (isinstance(self.segment_size, int) and 4096 <= self.segment_size <= 1 << 40):
            raise InvalidParameter(f"segment_size must be 4096 B - 1 TiB; got {self.segment_size!r}")
        if not (isinstance(self.preallocate, int) and 4096 <= self.preallocate <= 1 << 40):
            raise InvalidParameter(f"preallocate must be 4096 B - 1 TiB; got {self.preallocate!r}")

    def chunk_at(self, alloc_off: int) -> int:
        """Bytes to allocate past ``alloc_off`` (the end of a segment's
        allocated blocks): as many as it has, from PREALLOCATE_START up to
        ``preallocate`` - doubling with traffic, then steady."""
        return min(self.preallocate, max(PREALLOCATE_START, alloc_off))
