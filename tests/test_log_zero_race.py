"""Zeroing ahead never writes over records, even when a roll runs while
the zeroer reads the control block.

The zeroer (Log._zero_ahead) reads the active segment's base and its
``alloc_off`` under lock.alloc.  If a roll could change them between those
reads, the zeroer would pair the old segment with the new segment's
``alloc_off`` and zero the old segment from there - over its records.  A
roll therefore updates them holding lock.alloc too.
"""

from __future__ import annotations

import threading

from walq.log import Log, LogOptions

KIB = 1024


def test_a_roll_during_the_zeroers_reads_never_zeroes_the_old_segments_records(tmp_path):
    opts = LogOptions(durability="os", segment_size=256 * KIB)
    log = Log.open(tmp_path / "log", opts)
    try:
        # The first segment nearly full: records from the header to ~250 KiB,
        # so some lie above the next segment's first chunk (64 KiB).
        for i in range(25):
            log.append(bytes([65 + i % 26]) * (10 * KIB - 64))
        first_segment = log.active_base

        roller_done = threading.Event()
        roller_at_alloc_lock = threading.Event()
        roller = None

        def roll_and_fill():
            # Does not fit the first segment: a roll, then records that bring
            # the new segment's runway below half a chunk.
            log.append(b"r" * (10 * KIB))
            for _ in range(30):
                log.append(b"s" * KIB)
            roller_done.set()

        real_alloc_locked = log._alloc_locked

        def alloc_locked():
            if threading.current_thread() is roller:
                roller_at_alloc_lock.set()  # about to wait for the zeroer's lock
            return real_alloc_locked()

        log._alloc_locked = alloc_locked
        real_load = log._load
        started = []

        def load(field):
            if field == "alloc_off" and not started:
                # The zeroer has read the segment's base, not yet its
                # alloc_off: let a roll run now, until it is done or waits
                # for lock.alloc.
                started.append(True)
                nonlocal roller
                roller = threading.Thread(target=roll_and_fill)
                roller.start()
                while not (roller_done.is_set() or roller_at_alloc_lock.is_set()):
                    roller_done.wait(0.01)
            return real_load(field)

        log._load = load
        log._zero_ahead()
        log._load = real_load
        roller.join(60)
        assert not roller.is_alive()
        assert log.active_base != first_segment  # the roll happened
        records = list(log.iter_from(0))  # every checksum verified
        assert [len(r.payload) for r in records[:25]] == [10 * KIB - 64] * 25
        assert [r.payload[:1] for r in records[:25]] == [bytes([65 + i % 26]) for i in range(25)]
        assert len(records) == 25 + 1 + 30
    finally:
        log.close()
