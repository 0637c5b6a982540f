"""Recovery on open: a torn tail is cut off and kept aside, damage anywhere
else raises CorruptionError naming the file and offset, and nothing damaged
is ever returned.  Every test damages files through the named helpers."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from helpers import (
    SEGMENT_HEADER_SIZE,
    encode_frame,
    segment_header,
    flip_byte,
    frame_size,
    frames,
    last_segment,
    read_at,
    segment_paths,
    torn_files,
    truncate_to,
    write_at,
    zero_range,
)
from walq.errors import CorruptionError
from walq.log import Log, LogOptions, recovery
from walq.log.fileio import OsIO
from walq.log.log import RunBuffers

SEG = 8192
ALWAYS = LogOptions(durability="always", segment_size=SEG)


def nonzero_payload(i: int, size: int = 37) -> bytes:
    """Random bytes without zeros, so a cut frame's kept bytes are exact."""
    rng = random.Random(i)
    return bytes(rng.randrange(1, 256) for _ in range(size))


def build(path, payloads, opts=ALWAYS):
    with Log.open(path, opts) as log:
        for p in payloads:
            log.append(p)
    return payloads


def payloads_of(path, opts=ALWAYS) -> list[bytes]:
    with Log.open(path, opts) as log:
        return [r.payload for r in log.iter_from()]


@pytest.fixture
def copies(tmp_path):
    """``copies(template)`` -> a fresh copy of a log directory per call."""
    n = [0]

    def make(template):
        n[0] += 1
        dst = tmp_path / f"copy{n[0]}"
        shutil.copytree(template, dst)
        return str(dst)

    return make


# -- torn tails ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["mid-segment", "first-in-new-segment"])
def test_torn_tail_is_truncated_on_open(tmp_path, copies, layout):
    """The last record cut after every byte: recovery keeps exactly the
    records before it and puts the cut bytes in a torn-*.bin file."""
    template = str(tmp_path / "template")
    size = 37 if layout == "mid-segment" else 200
    per_segment = (SEG - SEGMENT_HEADER_SIZE) // frame_size(size)
    count = 5 if layout == "mid-segment" else per_segment + 1  # the last one alone in a new segment
    expected = build(template, [nonzero_payload(i, size) for i in range(count)])
    seg = last_segment(template)
    last = frames(seg)[-1]
    assert last.seq == count - 1
    if layout == "first-in-new-segment":
        assert len(frames(seg)) == 1 and len(segment_paths(template)) > 1
    original = read_at(seg, last.offset, last.size)
    for cut in range(24 + len(last.payload)):  # past that only zero padding is missing
        d = copies(template)
        s = last_segment(d)
        zero_range(s, last.offset + cut, last.size - cut)
        assert payloads_of(d) == expected[:-1], f"cut after {cut} bytes"
        kept = original[:cut].rstrip(b"\0")
        aside = torn_files(d)
        if kept:
            assert len(aside) == 1 and os.path.basename(aside[0]) == f"{os.path.basename(s)[:20].join(['torn-', ''])}-{last.offset}.bin"
            with open(aside[0], "rb") as f:
                assert f.read() == kept, "the torn file holds exactly the cut bytes"
        else:
            assert aside == []
        assert read_at(s, last.offset, last.size) == bytes(last.size), "the torn bytes are zeroed in place"
        with Log.open(d, ALWAYS) as log:
            assert log.append(b"again") == count - 1
        assert payloads_of(d) == expected[:-1] + [b"again"]


def test_truncated_active_segment_keeps_the_records_before_the_cut(tmp_path, copies):
    template = str(tmp_path / "template")
    expected = build(template, [nonzero_payload(i) for i in range(6)])
    last = frames(last_segment(template))[-1]
    for cut in (0, 1, 8, 23, 24, 25, last.size - 1):
        d = copies(template)
        truncate_to(last_segment(d), last.offset + cut)
        assert payloads_of(d) == expected[:-1], f"file cut {cut} bytes into the last record"
        with Log.open(d, ALWAYS) as log:
            seqs = [log.append(b"x" * 300) for _ in range(40)]  # fills the short segment and rolls
            assert seqs == list(range(5, 45))
        assert payloads_of(d) == expected[:-1] + [b"x" * 300] * 40


def test_zero_filled_tail_is_the_end_of_data(tmp_path, copies):
    template = str(tmp_path / "template")
    expected = build(template, [nonzero_payload(i) for i in range(8)])
    fs = frames(last_segment(template))
    for keep in (7, 5, 0):
        d = copies(template)
        zero_range(last_segment(d), fs[keep].offset, SEG - fs[keep].offset)
        assert payloads_of(d) == expected[:keep]
        assert torn_files(d) == [], "zeros are the end of data, not a torn record"


# -- damage ---------------------------------------------------------------------------


def _byte_positions(frame):
    return range(frame.offset, frame.offset + frame.size)


@pytest.mark.parametrize("payload_size", [40, 37])  # no padding, and 3 bytes of it
def test_flipped_byte_in_a_synced_record_of_the_active_segment_is_detected_on_open(tmp_path, copies, payload_size):
    template = str(tmp_path / "template")
    build(template, [nonzero_payload(i, payload_size) for i in range(6)])
    seg = last_segment(template)
    victim = frames(seg)[2]
    for pos in _byte_positions(victim):
        d = copies(template)
        flip_byte(last_segment(d), pos, 1 << (pos % 8))
        with pytest.raises(CorruptionError) as exc:
            Log.open(d, ALWAYS)
        assert exc.value.path == last_segment(d) and exc.value.offset == victim.offset, f"flip at {pos}"
        assert last_segment(d) in str(exc.value) and str(victim.offset) in str(exc.value)


@pytest.mark.parametrize("payload_size", [40, 37])
def test_flipped_byte_in_an_older_segment_is_detected_when_read(tmp_path, copies, payload_size):
    template = str(tmp_path / "template")
    expected = build(template, [nonzero_payload(i, payload_size) for i in range(300)])
    first = segment_paths(template)[0]
    victim = frames(first)[3]
    later = frames(segment_paths(template)[1])[0].seq
    for pos in _byte_positions(victim):
        d = copies(template)
        path = segment_paths(d)[0]
        flip_byte(path, pos, 1 << (pos % 8))
        with Log.open(d, ALWAYS) as log:  # older segments' frames are checked when read
            for s in range(3):  # intact records before the damage: returned, or refused
                try:
                    assert log.read(s).payload == expected[s]
                except CorruptionError as exc:
                    assert (exc.path, exc.offset) == (path, victim.offset)
            with pytest.raises(CorruptionError) as exc:
                log.read(victim.seq)
            assert (exc.value.path, exc.value.offset) == (path, victim.offset), f"flip at {pos}"
            with pytest.raises(CorruptionError):
                list(log.iter_from())  # iteration stops at the damage, never skips it
            assert log.read(later).payload == expected[later]


def test_damage_after_a_record_was_indexed_is_still_detected(tmp_path):
    expected = build(tmp_path, [nonzero_payload(i) for i in range(300)])
    with Log.open(tmp_path, ALWAYS) as log:
        assert [r.payload for r in log.iter_from()] == expected  # indexes every segment
        first = segment_paths(str(tmp_path))[0]
        victim = frames(first)[5]
        flip_byte(first, victim.offset + 30)
        with pytest.raises(CorruptionError) as exc:
            log.read(victim.seq)
        assert (exc.value.path, exc.value.offset) == (first, victim.offset)
        with pytest.raises(CorruptionError):
            log.read_batch(0)
        with pytest.raises(CorruptionError) as exc:
            log.read_many([victim.seq + 1, victim.seq])  # a receive's reads
        assert (exc.value.path, exc.value.offset) == (first, victim.offset)


def test_frame_runs_return_every_record_across_segments_and_report_damage(tmp_path):
    """The queue catch-up's reader (Log.frame_run): every record once, in
    order, across rolls; damage raises with the file and offset."""
    expected = build(tmp_path, [nonzero_payload(i) for i in range(300)])
    with Log.open(tmp_path, ALWAYS) as log:
        buf = RunBuffers(37)  # runs shorter than a segment, and not dividing it
        got, seq = [], 0
        while True:
            mm, _base, n = log.frame_run(seq, buf)
            if not n:
                break
            got += [mm[buf.poffs[i] : buf.poffs[i] + buf.lens[i]] for i in range(n)]
            seq += n
        assert got == expected
        first = segment_paths(str(tmp_path))[0]
        victim = frames(first)[5]
        flip_byte(first, victim.offset + 30)
        with pytest.raises(CorruptionError) as exc:
            log.frame_run(2, buf)  # indexed already: the run re-validates
        assert (exc.value.path, exc.value.offset) == (first, victim.offset)


def test_flipped_byte_in_the_last_record_is_cut_aside_never_returned(tmp_path, copies):
    """No later record vouches that the last one was synced, so damage there
    is indistinguishable from a torn write: it is cut off and kept aside."""
    template = str(tmp_path / "template")
    expected = build(template, [nonzero_payload(i) for i in range(5)])
    last = frames(last_segment(template))[-1]
    for pos in _byte_positions(last):
        d = copies(template)
        flip_byte(last_segment(d), pos, 0x40)
        damaged = read_at(last_segment(d), last.offset, SEG - last.offset).rstrip(b"\0")
        assert payloads_of(d) == expected[:-1], f"flip at {pos}"
        (aside,) = torn_files(d)
        with open(aside, "rb") as f:
            assert f.read() == damaged


def test_zeroed_record_inside_synced_data_is_detected_on_open(tmp_path, copies):
    template = str(tmp_path / "template")
    build(template, [nonzero_payload(i) for i in range(8)])
    victim = frames(last_segment(template))[3]
    for start, length in ((victim.offset, victim.size), (victim.offset, 24), (victim.offset, 2 * victim.size)):
        d = copies(template)
        zero_range(last_segment(d), start, length)
        with pytest.raises(CorruptionError) as exc:
            Log.open(d, ALWAYS)
        assert (exc.value.path, exc.value.offset) == (last_segment(d), victim.offset)


def test_damaged_header_of_an_older_segment_is_detected_on_open(tmp_path, copies):
    template = str(tmp_path / "template")
    build(template, [nonzero_payload(i, 300) for i in range(60)])
    assert len(segment_paths(template)) >= 3
    for pos in range(SEGMENT_HEADER_SIZE):
        d = copies(template)
        victim = segment_paths(d)[1]
        flip_byte(victim, pos, 1 << (pos % 8))
        with pytest.raises(CorruptionError) as exc:
            Log.open(d, ALWAYS)
        assert (exc.value.path, exc.value.offset) == (victim, 0), f"flip at header byte {pos}"


def test_damaged_header_of_the_active_segment_holding_records_is_detected_on_open(tmp_path, copies):
    template = str(tmp_path / "template")
    expected = build(template, [nonzero_payload(i, 300) for i in range(30)])
    assert len(frames(last_segment(template))) > 1
    for pos in range(SEGMENT_HEADER_SIZE):
        d = copies(template)
        victim = last_segment(d)
        flip_byte(victim, pos, 1 << (pos % 8))
        try:
            Log.open(d, ALWAYS).close()
        except CorruptionError as exc:
            assert (exc.path, exc.offset) == (victim, 0)
        else:
            pytest.fail(f"a flip at header byte {pos} lost the segment's records: {len(payloads_of(d))} of {len(expected)} left")


@pytest.mark.parametrize("state", ["empty-file", "zero-header", "torn-header"])
def test_newest_segment_whose_creation_was_cut_off_is_set_aside(tmp_path, copies, state):
    """A roll that never reached the disk: the newest segment has no valid
    header and holds nothing; the log continues from the previous one."""
    template = str(tmp_path / "template")
    expected = build(template, [nonzero_payload(i, 300) for i in range(20)])
    d = copies(template)
    base = len(expected)
    path = os.path.join(d, f"{base:020d}.seg")
    header = read_at(last_segment(d), 0, SEGMENT_HEADER_SIZE)  # a real header to tear
    with open(path, "wb") as f:
        if state == "zero-header":
            f.truncate(SEG)
        elif state == "torn-header":
            f.write(header[:30])
            f.truncate(SEG)
    with Log.open(d, ALWAYS) as log:
        assert [r.payload for r in log.iter_from()] == expected
        assert log.end == base
        assert log.append(b"next") == base
    assert payloads_of(d) == expected + [b"next"]


def test_leftover_tmp_segment_is_removed_on_open(tmp_path):
    expected = build(tmp_path, [b"a", b"b"])
    tmp = tmp_path / "00000000000000000002.seg.tmp"
    tmp.write_bytes(b"\1" * 100)
    (tmp_path / "notes.txt").write_text("not ours")
    assert payloads_of(tmp_path) == expected
    assert not tmp.exists()
    assert (tmp_path / "notes.txt").read_text() == "not ours"


def test_missing_middle_segment_is_refused_on_open_naming_the_range(tmp_path):
    build(tmp_path, [nonzero_payload(i, 300) for i in range(60)])
    paths = segment_paths(str(tmp_path))
    gone = frames(paths[1])
    os.unlink(paths[1])
    with pytest.raises(CorruptionError) as err:
        Log.open(tmp_path, ALWAYS)
    msg = str(err.value)
    assert f"records {gone[0].seq}-{gone[-1].seq} are missing" in msg
    assert os.path.basename(paths[0]) in msg and "walq repair" in msg


def test_an_intact_log_of_many_segments_opens(tmp_path):
    expected = build(tmp_path, [nonzero_payload(i, 300) for i in range(60)])
    assert len(segment_paths(str(tmp_path))) >= 3
    with Log.open(tmp_path, ALWAYS) as log:
        assert [r.payload for r in log.iter_from()] == expected


@pytest.mark.parametrize("ctl", ["absent", "zeroed", "garbage", "from-later", "from-earlier"])
def test_control_block_is_rebuilt_not_trusted(tmp_path, copies, ctl):
    early = str(tmp_path / "early")
    expected = build(early, [nonzero_payload(i, 200) for i in range(10)])
    late = copies(early)
    build(late, [nonzero_payload(i, 200) for i in range(10, 50)])
    target, source = (early, late) if ctl == "from-later" else (late, early)
    d = copies(target)
    ctl_path = os.path.join(d, "log.ctl")
    if ctl == "absent":
        os.unlink(ctl_path)
    elif ctl == "zeroed":
        zero_range(ctl_path, 0, os.path.getsize(ctl_path))
    elif ctl == "garbage":
        write_at(ctl_path, 8, os.urandom(200))
    else:
        shutil.copyfile(os.path.join(source, "log.ctl"), ctl_path)
    want = expected if target == early else expected + [nonzero_payload(i, 200) for i in range(10, 50)]
    with Log.open(d, ALWAYS) as log:
        assert [r.payload for r in log.iter_from()] == want
        assert log.end == len(want)
        assert log.append(b"next") == len(want)


class CrashingIO(OsIO):
    """Raises (a simulated crash) at the ``crash_at``-th file-changing call."""

    class Crash(Exception):
        pass

    def __init__(self, crash_at: int):
        self.crash_at = crash_at
        self.calls = 0

    def _step(self):
        self.calls += 1
        if self.calls == self.crash_at:
            raise self.Crash(self.calls)


for _name in ("create_segment", "pwrite", "zero", "fdatasync", "fsync_dir", "write_file_atomic", "rename", "unlink", "grow", "preallocate"):

    def _wrap(name=_name):
        def method(self, *args, **kw):
            self._step()
            return getattr(OsIO, name)(self, *args, **kw)

        return method

    if hasattr(OsIO, _name):
        setattr(CrashingIO, _name, _wrap())


def test_recovery_interrupted_at_any_step_is_finished_by_the_next_open(tmp_path, copies):
    template = str(tmp_path / "template")
    expected = build(template, [nonzero_payload(i) for i in range(6)])
    last = frames(last_segment(template))[-1]
    zero_range(last_segment(template), last.offset + 30, last.size - 30)  # a torn tail to cut
    done = False
    step = 0
    while not done:
        step += 1
        d = copies(template)
        io = CrashingIO(step)
        try:
            Log.open(d, ALWAYS, io=io).close()
            done = True  # recovery needed fewer steps: every interruption point was tried
        except CrashingIO.Crash:
            pass
        assert payloads_of(d) == expected[:-1], f"after a crash at recovery step {step}"
        assert payloads_of(d) == expected[:-1], "and again"
    assert step > 3, "recovery of a torn tail takes several steps"


class DiesInRollIO(OsIO):
    """The process dies right after a roll's new segment file is in place."""

    class Died(Exception):
        pass

    def create_segment(self, *args, **kw):
        fd = super().create_segment(*args, **kw)
        os.close(fd)
        raise self.Died()


def test_segment_file_left_by_a_roll_cut_short_does_not_hide_later_records(tmp_path):
    """A process dies between creating the next segment and publishing it;
    another process keeps appending to the current segment (the batch that
    needed a roll died with its process), at sequences the orphan file's
    name claims.  Those records must stay readable, now and after recovery."""
    from crashsim import abandon

    opts = LogOptions(durability="always", segment_size=SEG)
    survivor = Log.open(tmp_path, opts)
    doomed = Log.open(tmp_path, opts, io=DiesInRollIO())
    survivor.append(b"s" * 300)
    while frames(last_segment(str(tmp_path)))[-1].end < SEG - 600:
        survivor.append(b"s" * 300)
    with pytest.raises(DiesInRollIO.Died):
        doomed.append(b"d" * 1000)  # does not fit: rolls, and dies there
    abandon(doomed)
    seq = survivor.append(b"after the death")  # fits in the current segment
    assert survivor.read(seq).payload == b"after the death"
    expected = [r.payload for r in survivor.iter_from()]
    survivor.close()
    assert payloads_of(tmp_path, opts) == expected


def test_damage_in_records_never_synced_is_cut_as_a_torn_tail(tmp_path, copies):
    """A power cut may persist later pages of unsynced writes before earlier
    ones, so damage that no synced record vouches for is a torn tail (cut,
    kept aside, never returned); once a record written after a sync follows,
    the same damage is an error."""
    opts = LogOptions(durability="os", segment_size=SEG)
    unsynced = str(tmp_path / "unsynced")
    expected = build(unsynced, [nonzero_payload(i) for i in range(6)], opts)
    vouched = copies(unsynced)
    with Log.open(vouched, opts) as log:  # the reopen synced 0-5; 6 is written after that
        log.append(nonzero_payload(6))
    victim = frames(last_segment(unsynced))[2]
    for template in (unsynced, vouched):
        d = copies(template)
        flip_byte(last_segment(d), victim.offset + 30)
        if template == unsynced:
            assert payloads_of(d, opts) == expected[:2]
            (aside,) = torn_files(d)
            assert os.path.basename(aside).endswith(f"-{victim.offset}.bin")
        else:
            with pytest.raises(CorruptionError) as exc:
                Log.open(d, opts)
            assert (exc.value.path, exc.value.offset) == (last_segment(d), victim.offset)


def test_zeroed_record_in_a_sparse_segment_is_detected_on_open(tmp_path):
    """The same, in the file as the log left it (sparse, blocks allocated
    in chunks), not in a copy: recovery skips holes, never data."""
    opts = LogOptions(durability="always", segment_size=1 << 20, preallocate=4096)
    build(tmp_path, [nonzero_payload(i, 1000) for i in range(20)], opts)
    seg = last_segment(str(tmp_path))
    victim = frames(seg)[2]
    zero_range(seg, victim.offset, victim.size)
    with pytest.raises(CorruptionError) as exc:
        Log.open(tmp_path, opts)
    assert (exc.value.path, exc.value.offset) == (seg, victim.offset)


def test_a_second_tear_at_the_same_offset_keeps_the_first_ones_bytes(tmp_path):
    """Two crashes that each tear a record at the same offset: both torn
    files are kept (the second gets a numbered name), and recovering the
    same tear twice (recovery interrupted) does not make a copy."""
    d = str(tmp_path / "log")
    build(d, [nonzero_payload(i, 50) for i in range(3)])
    seg = last_segment(d)
    last = frames(seg)[-1]
    end = last.offset + last.size
    header = segment_header(seg)
    tears = []
    for i in range(2):
        # The next record cut after 30 bytes, as a crash mid-write leaves it.
        frame = encode_frame(nonzero_payload(100 + i, 50), last.seq + 1, header.salt, lag=1)
        write_at(seg, end, frame[:30])
        tears.append(frame[:30].rstrip(b"\0"))
        with Log.open(d, ALWAYS):
            pass
    names = sorted(os.path.basename(p) for p in torn_files(d))
    assert names == [f"torn-{header.base:020d}-{end}-1.bin", f"torn-{header.base:020d}-{end}.bin"]
    got = []
    for name in names:
        with open(os.path.join(d, name), "rb") as f:
            got.append(f.read())
    assert sorted(got) == sorted(tears) and tears[0] != tears[1]
    assert payloads_of(d) == [nonzero_payload(i, 50) for i in range(3)]
    # A recovery interrupted after writing its torn file and run again
    # writes the same bytes to the same name, not to a third file.
    stem = f"torn-{header.base:020d}-{end}"
    assert recovery._aside_path(d, stem, tears[0]) in {os.path.join(d, n) for n in names}
    assert recovery._aside_path(d, stem, b"other bytes") == os.path.join(d, f"{stem}-2.bin")


def test_recovery_resets_waiter_counts_left_by_killed_waiters(tmp_path):
    d = str(tmp_path / "log")
    with Log.open(d, ALWAYS) as log:
        log.append(b"x")
        # As a process killed inside walq_wait / walq_wait_durable leaves them.
        log.ctl.waiters = 3
        log.ctl.sync_waiters = 2
    with Log.open(d, ALWAYS) as log:  # alone: recovers
        assert (log.ctl.waiters, log.ctl.sync_waiters) == (0, 0)
        assert [r.payload for r in log.iter_from()] == [b"x"]
