"""The log's API: append, read, iterate, roll, reopen, trim, sync, close, and
the errors it raises for bad arguments, closed handles and failed fsyncs."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from helpers import SEGMENT_HEADER_SIZE, frame_size, frames, payload_for, parse_payload, segment_paths
from walq.errors import BrokerClosed, CorruptionError, InvalidParameter, LogPoisoned, WalqError
from walq.log import Log, LogOptions, Record, RecordGone
from walq.log._native import check_sync, ffi
from walq.log.fileio import OsIO
from walq.log.log import RunBuffers

SMALL = 4096


def opts(**kw) -> LogOptions:
    kw.setdefault("durability", "os")
    return LogOptions(**kw)


def contents(log) -> list[tuple[int, int, bytes]]:
    return [(r.seq, r.type, r.payload) for r in log.iter_from()]


# -- appending and reading ---------------------------------------------------------


def test_append_returns_dense_sequences_from_zero(tmp_path):
    with Log.open(tmp_path, opts()) as log:
        assert (log.first, log.end) == (0, 0)
        assert [log.append(b"r%d" % i) for i in range(10)] == list(range(10))
        assert log.end == 10


def test_read_returns_sequence_type_and_payload(tmp_path):
    with Log.open(tmp_path, opts()) as log:
        log.append(b"alpha", type=7)
        log.append(b"", type=255)
        assert log.read(0) == Record(0, 7, b"alpha")
        assert log.read(1) == Record(1, 255, b"")
        assert isinstance(log.read(0).payload, bytes)


def test_append_batch_returns_its_range_and_keeps_per_record_types(tmp_path):
    with Log.open(tmp_path, opts()) as log:
        log.append(b"before")
        got = log.append_batch([b"a", b"bb", b"ccc"], type=[1, 2, 3])
        assert got == range(1, 4)
        assert log.append_batch([b"d", b"e"], type=9) == range(4, 6)
        assert log.append_batch([]) == range(0)
        assert contents(log) == [(0, 1, b"before"), (1, 1, b"a"), (2, 2, b"bb"), (3, 3, b"ccc"), (4, 9, b"d"), (5, 9, b"e")]


def test_read_batch_returns_consecutive_records_up_to_the_limit(tmp_path):
    with Log.open(tmp_path, opts()) as log:
        log.append_batch([b"%d" % i for i in range(100)])
        got = log.read_batch(10, max_records=5)
        assert [r.seq for r in got] == [10, 11, 12, 13, 14]
        assert [r.payload for r in got] == [b"10", b"11", b"12", b"13", b"14"]
        assert log.read_batch(100) == []
        assert [r.seq for r in log.iter_from(95)] == [95, 96, 97, 98, 99]


def test_reading_past_the_end_raises_record_gone(tmp_path):
    with Log.open(tmp_path, opts()) as log:
        log.append(b"x")
        with pytest.raises(RecordGone):
            log.read(1)
        with pytest.raises(LookupError):  # RecordGone is a LookupError
            log.read(10**9)


def test_iteration_sees_records_appended_meanwhile(tmp_path):
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        log.append(b"0")
        seen = []
        for rec in log.iter_from(0):
            seen.append(rec.seq)
            if rec.seq < 200:
                log.append(b"%d" % (rec.seq + 1) * 20)
        assert seen == list(range(201))


def test_threads_appending_at_once_each_get_their_records_once_in_order(tmp_path):
    with Log.open(tmp_path, opts(segment_size=16384)) as log:

        def work(w):
            i = 0
            while i < 2000:
                if i % 10 == 0:
                    log.append_batch([payload_for(w, i), payload_for(w, i + 1)])
                    i += 2
                else:
                    log.append(payload_for(w, i))
                    i += 1

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        recs = list(log.iter_from())
    assert [r.seq for r in recs] == list(range(4 * 2000))
    next_index = [0] * 4
    for r in recs:
        w, i = parse_payload(r.payload)
        assert i == next_index[w], "a thread's records out of order, missing or repeated"
        next_index[w] += 1


# -- segments ------------------------------------------------------------------------


def test_segment_rolls_when_the_next_record_does_not_fit(tmp_path):
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        room = SMALL - SEGMENT_HEADER_SIZE
        payload = b"p" * (room // 4 - 24)  # frames of exactly room / 4 bytes
        assert frame_size(len(payload)) == room // 4
        for i in range(4):
            log.append(payload)
        assert len(segment_paths(str(tmp_path))) == 1, "four frames fill the segment exactly"
        log.append(b"next")
        paths = segment_paths(str(tmp_path))
        assert [os.path.basename(p) for p in paths] == ["00000000000000000000.seg", "00000000000000000004.seg"]
        assert [f.seq for f in frames(paths[0])] == [0, 1, 2, 3]
        assert frames(paths[0])[-1].end == SMALL
        assert [f.payload for f in frames(paths[1])] == [b"next"]
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        assert log.end == 5
        assert log.append(b"after reopen") == 5
        assert [r.payload for r in log.iter_from()] == [payload] * 4 + [b"next", b"after reopen"]


def test_threads_reading_one_handle_while_it_grows_see_every_record_once(tmp_path):
    """Readers of one Log extend the same segments' frame index at once
    (the native scan runs without the GIL): none may index a frame twice."""
    log = Log.open(tmp_path, opts(segment_size=64 * 1024))
    total = 4000
    expected = [b"%d-" % i + b"q" * (i % 50) for i in range(total)]
    errors: list[str] = []

    def writer():
        for i in range(0, total, 40):
            log.append_batch(expected[i : i + 40])

    def reader(k):
        try:
            buf = RunBuffers(17 + k)
            seq = 0
            while seq < total:
                mm, _base, n = log.frame_run(seq, buf)
                for i in range(n):
                    if mm[buf.poffs[i] : buf.poffs[i] + buf.lens[i]] != expected[seq + i]:
                        errors.append(f"reader {k}: record {seq + i} differs")
                        return
                seq += n
            if log.read_many([total - 1, 0, total // 2]) != [expected[total - 1], expected[0], expected[total // 2]]:
                errors.append(f"reader {k}: read_many differs")
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(f"reader {k}: {exc!r}")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        assert [r.payload for r in log.iter_from()] == expected
        for seg in log._segments.values():
            assert seg.next_seq <= log.end and seg.count == len(set(ffi.unpack(seg.offs, seg.count)))
    finally:
        log.close()


def test_handles_taking_turns_across_rolls_keep_every_record_in_order(tmp_path):
    """Each roll by one handle leaves the other's native append aimed at the
    old segment: it must notice, move to the new one and lose nothing."""
    a, b = Log.open(tmp_path, opts(segment_size=SMALL)), Log.open(tmp_path, opts(segment_size=SMALL))
    try:
        written = []
        for i in range(300):
            log = a if i % 3 else b
            payload = b"%d-" % i + b"r" * (i % 200)
            written.append((log.append(payload), payload))
        assert [s for s, _ in written] == list(range(300))
        assert len(segment_paths(str(tmp_path))) >= 8
        assert [(r.seq, r.payload) for r in a.iter_from()] == written
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    "spare, second_len, rolls",
    [(8, 0, True), (16, 0, True), (24, 0, False), (24, 1, True), (32, 8, False), (32, 9, True)],
)
def test_a_record_rolls_exactly_when_its_frame_exceeds_the_space_left(tmp_path, spare, second_len, rolls):
    """The first record leaves ``spare`` bytes; the second's frame is 24 + ``second_len`` padded."""
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        log.append(b"a" * (SMALL - SEGMENT_HEADER_SIZE - 24 - spare))
        log.append(b"b" * second_len)
        paths = segment_paths(str(tmp_path))
        assert len(paths) == (2 if rolls else 1)
        assert [f.seq for f in frames(paths[-1])][-1] == 1
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        assert [r.seq for r in log.iter_from()] == [0, 1]
        assert log.append(b"c") == 2


@pytest.mark.parametrize("before", [0, 1, 3])
def test_a_record_bigger_than_a_segment_gets_a_segment_of_its_own_size(tmp_path, before):
    big = bytes(range(256)) * 40  # 10 KiB, more than SMALL
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        for i in range(before):
            log.append(b"small %d" % i)
        seq = log.append(big)
        assert seq == before
        assert log.read(seq).payload == big
        assert log.append(b"after") == before + 1
        assert log.read(before + 1).payload == b"after"
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        assert [r.payload for r in log.iter_from()] == [b"small %d" % i for i in range(before)] + [big, b"after"]
    holders = [p for p in segment_paths(str(tmp_path)) if any(f.payload == big for f in frames(p))]
    assert len(holders) == 1, "the big record lies whole in one segment"


def test_a_batch_bigger_than_a_segment_lands_whole_in_one_segment(tmp_path):
    batch = [payload_for(1, i, 700) for i in range(12)]  # ~8.6 KiB
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        log.append(b"first")
        assert log.append_batch(batch) == range(1, 13)
        log.append(b"last")
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        assert [r.payload for r in log.iter_from()] == [b"first"] + batch + [b"last"]
    holders = [p for p in segment_paths(str(tmp_path)) if any(f.payload in batch for f in frames(p))]
    assert len(holders) == 1
    assert [f.seq for f in frames(holders[0])][:12] == list(range(1, 13))


def test_sequences_continue_across_reopen(tmp_path):
    expected = []
    for round in range(5):
        with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
            assert log.end == len(expected)
            for i in range(37):
                p = payload_for(round, i)
                assert log.append(p) == len(expected)
                expected.append(p)
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        assert [r.payload for r in log.iter_from()] == expected
        assert len(segment_paths(str(tmp_path))) > 5


def test_reopening_with_another_segment_size_keeps_every_record(tmp_path):
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        log.append_batch([b"x" * 500] * 20)
    with Log.open(tmp_path, opts(segment_size=1 << 20)) as log:
        log.append_batch([b"y" * 500] * 20)
    with Log.open(tmp_path, opts(segment_size=8192)) as log:
        assert [r.payload for r in log.iter_from()] == [b"x" * 500] * 20 + [b"y" * 500] * 20


# -- trimming -------------------------------------------------------------------------


def test_delete_below_removes_whole_segments_only(tmp_path):
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        for i in range(60):
            log.append(payload_for(0, i, 300))
        bases = [int(os.path.basename(p)[:20]) for p in segment_paths(str(tmp_path))]
        assert len(bases) >= 4
        cut = bases[2] + 1  # inside the third segment
        assert log.delete_below(cut) == bases[2]
        assert log.first == bases[2]
        assert [int(os.path.basename(p)[:20]) for p in segment_paths(str(tmp_path))] == bases[2:]
        with pytest.raises(RecordGone):
            log.read(bases[2] - 1)
        assert log.read(bases[2]).payload == payload_for(0, bases[2], 300)
        assert [r.seq for r in log.iter_from()] == list(range(bases[2], 60))
        assert log.delete_below(0) == bases[2], "deleting below an older point changes nothing"
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        assert log.first == bases[2]
        assert [r.seq for r in log.iter_from()][0] == bases[2]
        assert log.append(b"more") == 60


def test_delete_below_never_removes_the_active_segment(tmp_path):
    with Log.open(tmp_path, opts(segment_size=SMALL)) as log:
        for i in range(40):
            log.append(b"z" * 300)
        active = segment_paths(str(tmp_path))[-1]
        log.delete_below(10**6)
        assert segment_paths(str(tmp_path)) == [active]
        assert log.end == 40
        assert log.append(b"still") == 40
        assert log.read(40).payload == b"still"


def test_delete_below_frees_disk_space(tmp_path):
    with Log.open(tmp_path, opts(segment_size=SMALL, preallocate=SMALL)) as log:
        for i in range(100):
            log.append(b"d" * 400)
        before = log.disk_bytes()
        log.delete_below(log.end)
        assert log.disk_bytes() < before / 4


def test_records_trimmed_by_another_handle_are_gone_not_corrupt(tmp_path):
    with Log.open(tmp_path, opts(segment_size=SMALL)) as trimmer, Log.open(tmp_path, opts(segment_size=SMALL)) as reader:
        for i in range(60):
            trimmer.append(payload_for(0, i, 300))
        assert reader.read(0).payload == payload_for(0, 0, 300)  # maps the first segment
        first = trimmer.delete_below(40)
        assert 0 < first <= 40
        for seq in (0, first - 1):
            with pytest.raises(RecordGone):
                reader.read(seq)
        assert [r.seq for r in reader.iter_from(first)] == list(range(first, 60))
        assert reader.first == first


def test_an_append_by_another_handle_changes_the_wait_token(tmp_path):
    with Log.open(tmp_path, opts()) as waiter, Log.open(tmp_path, opts()) as writer:
        token = waiter.change_token()
        assert waiter.change_token() == token
        writer.append(b"wake up")
        assert waiter.change_token() != token
        waiter.wait_for_change(token, 60)  # returns at once: the token already moved
        assert waiter.end == 1 and waiter.read(0).payload == b"wake up"


# -- arguments and state ----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"durability": "sometimes"},
        {"durability": None},
        {"segment_size": 100},
        {"segment_size": 4095},
        {"segment_size": 1 << 41},
        {"segment_size": 65536.0},
        {"segment_size": "64M"},
        {"sync_interval": 0},
        {"sync_interval": -1},
        {"sync_interval": 61},
        {"sync_interval": "fast"},
    ],
)
def test_bad_options_raise_invalid_parameter(bad):
    with pytest.raises(InvalidParameter):
        LogOptions(**bad)
    with pytest.raises(ValueError):  # InvalidParameter is a ValueError
        LogOptions(**bad)


@pytest.mark.parametrize("bad_type", [0, 256, -1, 1000, 2**70, "1"])
def test_record_types_outside_1_to_255_raise_invalid_parameter(tmp_path, bad_type):
    with Log.open(tmp_path, opts()) as log:
        log.append(b"first")  # aims the native append: bad types must not slip through it
        with pytest.raises(InvalidParameter):
            log.append(b"x", type=bad_type)
        with pytest.raises(InvalidParameter):
            log.append_batch([b"x", b"y"], type=bad_type)
        with pytest.raises(InvalidParameter):
            log.append_batch([b"x", b"y"], type=[1, bad_type])
        with pytest.raises(InvalidParameter):
            log.append_batch([b"x", b"y"], type=[1])  # one type per record
        assert log.end == 1, "a refused append writes nothing"


def test_every_call_on_a_closed_log_raises_broker_closed(tmp_path):
    log = Log.open(tmp_path, opts())
    log.append(b"x")
    log.close()
    log.close()  # idempotent
    calls = [
        lambda: log.append(b"y"),
        lambda: log.append_batch([b"y"]),
        lambda: log.read(0),
        lambda: log.read_batch(0),
        lambda: list(log.iter_from(0)),
        lambda: log.sync(),
        lambda: log.end,
        lambda: log.first,
        lambda: log.delete_below(1),
        lambda: log.locked(),
    ]
    for call in calls:
        with pytest.raises(BrokerClosed):
            call()
    assert "closed" in repr(log)


def test_locked_log_appends_after_a_stable_end(tmp_path):
    with Log.open(tmp_path, opts()) as log:
        log.append(b"a")
        with log.locked() as tx:
            assert tx.end == 1
            assert tx.append(b"b") == 1
            assert tx.append_batch([b"c", b"d"]) == range(2, 4)
            assert tx.end == 4
        assert [r.payload for r in log.iter_from()] == [b"a", b"b", b"c", b"d"]


# -- durability ------------------------------------------------------------------------


class CountingIO(OsIO):
    """Counts fdatasyncs; fails the ``fail_at``-th one (1-based) with EIO."""

    def __init__(self, fail_at: int | None = None):
        self.syncs = 0
        self.fail_at = fail_at

    def fdatasync(self, fd: int, path: str) -> None:
        self.syncs += 1
        if self.syncs == self.fail_at:
            check_sync(-errno.EIO, path)  # the log's own translation: LogPoisoned
        super().fdatasync(fd, path)


def test_always_syncs_before_append_returns_and_os_never_does(tmp_path):
    io = CountingIO()
    with Log.open(tmp_path / "a", LogOptions(durability="always"), io=io) as log:
        opened = io.syncs
        log.append(b"x")
        assert io.syncs > opened
        n = io.syncs
        log.append_batch([b"y"] * 10)
        assert io.syncs > n
    io = CountingIO()
    with Log.open(tmp_path / "o", LogOptions(durability="os"), io=io) as log:
        opened = io.syncs
        for _ in range(100):
            log.append(b"x")
        assert io.syncs == opened
        log.sync()
        assert io.syncs > opened


class ZeroWatchingIO(OsIO):
    """Notes which thread zeroed which range, and the bytes under it first."""

    def __init__(self):
        self.zeroed: list[tuple[str, int, int, bytes]] = []

    def preallocate(self, fd, offset, length):
        self.zeroed.append((threading.current_thread().name, offset, length, os.pread(fd, length, offset)))
        super().preallocate(fd, offset, length)


@pytest.mark.parametrize("durability", ["always", "batch"])
def test_blocks_ahead_are_zeroed_off_the_append_path_and_never_over_a_record(tmp_path, durability):
    io = ZeroWatchingIO()
    chunk = 64 * 1024
    opts = LogOptions(durability=durability, preallocate=chunk, segment_size=1 << 20, sync_interval=0.001)
    written = []
    with Log.open(tmp_path, opts, io=io) as log:
        for i in range(60):
            written.append(log.append_batch([b"%d-%d" % (i, k) + b"z" * 90 for k in range(40)]))
            log.sync()
            time.sleep(0.002)  # the zeroer's turn (appends outrunning it fall back to zeroing themselves)
        assert [r.payload for r in log.iter_from()] == [b"%d-%d" % (i, k) + b"z" * 90
                                                        for i in range(60) for k in range(40)]
    by_zeroer = [z for z in io.zeroed if z[0] == "walq-log-zero"]
    assert by_zeroer, "the zeroing thread never ran"
    assert len(by_zeroer) > len([z for z in io.zeroed if z[0] != "walq-log-zero"])
    for _thread, _off, _n, before in io.zeroed:
        assert before.count(0) == len(before), "zeros were written over data"


def test_batch_mode_close_makes_everything_durable(tmp_path):
    io = CountingIO()
    log = Log.open(tmp_path, LogOptions(durability="batch", sync_interval=60), io=io)
    opened = io.syncs
    log.append(b"x")
    assert io.syncs == opened, "batch mode does not sync in append"
    log.close()
    assert io.syncs > opened


def test_failed_fdatasync_poisons_the_log_and_is_never_retried(tmp_path):
    io = CountingIO()
    with Log.open(tmp_path, LogOptions(durability="always"), io=io) as log:
        acked = [log.append(b"ok %d" % i) for i in range(3)]
    io = CountingIO()
    log = Log.open(tmp_path, LogOptions(durability="always"), io=io)
    io.fail_at = io.syncs + 1
    with pytest.raises(LogPoisoned) as exc:
        log.append(b"doomed")
    assert isinstance(exc.value, OSError) and exc.value.errno == errno.EIO
    syncs = io.syncs
    for call in (lambda: log.append(b"again"), lambda: log.append_batch([b"again"]), log.sync):
        with pytest.raises(LogPoisoned):
            call()
    assert io.syncs == syncs, "a failed fdatasync must not be retried"
    log.close()
    with Log.open(tmp_path, LogOptions(durability="always")) as log:
        recs = contents(log)
        assert [p for _, _, p in recs[:3]] == [b"ok 0", b"ok 1", b"ok 2"] and [s for s, _, _ in recs[:3]] == acked
        seq = log.append(b"after reopen")
        assert log.read(seq).payload == b"after reopen"


def test_poison_reaches_other_handles_in_other_processes(tmp_path):
    import subprocess
    import sys

    io = CountingIO()
    log = Log.open(tmp_path, LogOptions(durability="always"), io=io)
    io.fail_at = io.syncs + 1
    with pytest.raises(LogPoisoned):
        log.append(b"doomed")
    script = (
        "import sys\n"
        "from walq.log import Log, LogOptions\n"
        "from walq.errors import LogPoisoned\n"
        "try:\n"
        "    Log.open(sys.argv[1], LogOptions(durability='always'))\n"
        "except LogPoisoned:\n"
        "    print('poisoned')\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "poisoned", out.stderr
    log.close()
    with Log.open(tmp_path, LogOptions(durability="always")) as log:
        log.append(b"healthy again")


def test_a_poisoned_batch_flusher_makes_the_next_append_raise(tmp_path):
    io = CountingIO()
    log = Log.open(tmp_path, LogOptions(durability="batch", sync_interval=0.001), io=io)
    io.fail_at = io.syncs + 1
    log.append(b"x")
    log._flusher.join(timeout=30)  # the flusher stops after the failure
    assert not log._flusher.is_alive()
    with pytest.raises(LogPoisoned):
        log.append(b"y")
    log.close()
    with Log.open(tmp_path, opts()) as log:
        assert log.read(0).payload == b"x"


def test_errors_form_one_tree():
    for exc in (BrokerClosed, CorruptionError, InvalidParameter, LogPoisoned, RecordGone):
        assert issubclass(exc, WalqError)


def test_a_reader_drops_scanned_pages_from_its_map_in_chunks(tmp_path):
    # A process that indexes a big log must not keep every scanned page
    # resident; dropping each scan's pages at once made the next read of
    # the same records fault them back in.  Chunks: a quarter of the segment.
    size = 1 << 20
    with Log.open(tmp_path / "log", LogOptions(durability="os", segment_size=size)) as w:
        w.append_batch([b"r" * 1000] * 900)
        with Log.open(tmp_path / "log", LogOptions(durability="os", segment_size=size)) as r:
            r.read(899)  # indexes the whole segment
            seg = r._last_read
            chunk = size // 4
            assert seg.scan_off - chunk <= seg.released <= seg.scan_off
            assert seg.released >= 2 * chunk


def test_a_segment_removed_elsewhere_stays_readable_by_a_reader_holding_it(tmp_path):
    # Another process trims a segment; this process's batch flusher thread
    # refreshes the segment list and drops it while a catch-up on the main
    # thread is between locating the segment and reading it.  Closing the
    # map there made the read fail with a TypeError (crash-bench; fixed in 53e5ab7).
    opts = LogOptions(durability="os", segment_size=8192)
    with Log.open(tmp_path / "log", opts) as log:
        log.append_batch([b"a" * 1000] * 20)
        seg, _end = log._locate(0)  # the reader has it in hand
        os.unlink(segment_paths(str(tmp_path / "log"))[0])  # the trim, elsewhere
        log._refresh_bases()  # the flusher thread
        assert seg.base not in log._segments
        off, n, t = seg.frame_at(0)  # the reader goes on
        assert (bytes(seg.mm[off : off + n]), t) == (b"a" * 1000, 1)
        mm = seg.mm
        del seg  # the segment goes; a caller of frames() holds only the map
        assert bytes(mm[off : off + n]) == b"a" * 1000
        with pytest.raises(RecordGone):
            log.read(0)
