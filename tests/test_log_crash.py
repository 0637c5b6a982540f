"""Crashes: kill -9 of appending processes, and simulated power loss.

(a) Subprocess appenders report each append that returned; they are killed
    at random moments; the log is reopened and every returned append must be
    there exactly once, intact, in order.
(b) A workload runs through tests/crashsim.RecordingIO; every state a power
    cut could have left is rebuilt and opened: recovery must succeed, every
    append acknowledged under ``durability="always"`` (or covered by a
    returned ``sync()``) must be there, and every record returned must be
    exactly what was written at that sequence.

The default run does a few kill cycles and every crash state of one run of
each workload; ``--crash`` runs 120 kill cycles and six more seeds of each
workload.
"""

from __future__ import annotations

import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import crashsim
from helpers import data_end, last_segment, parse_payload, payload_for
from walq.log import Log, LogOptions

TESTS = os.path.dirname(os.path.abspath(__file__))

# -- (a) kill -9 ---------------------------------------------------------------------

APPENDER = r"""
import os, random, sys
sys.path.insert(0, sys.argv[1])
from helpers import payload_for
from walq.log import Log, LogOptions

path, writer, mode, seed = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rng = random.Random(seed)
log = Log.open(path, LogOptions(durability=mode, segment_size=16384, preallocate=4096, sync_interval=0.002))
i = 0
while True:
    r = rng.random()
    if r < 0.3:
        n = rng.randint(2, 6)
        batch = [payload_for(writer, i + k, rng.randint(16, 400)) for k in range(n)]
        seqs = log.append_batch(batch)
    else:
        n = 1
        size = 20000 if r > 0.995 else rng.randint(16, 400)  # now and then bigger than a segment
        seqs = [log.append(payload_for(writer, i, size))]
    # One write per returned append: a pipe write of < 4 KiB is atomic.
    os.write(1, b"".join(b"%d %d\n" % (s, i + k) for k, s in enumerate(seqs)))
    i += n
"""


def run_kill_cycle(path: str, writers: list[int], mode: str, rng: random.Random) -> dict[tuple[int, int], int]:
    """Starts one appender per writer id, kills them all with SIGKILL once a
    random number of appends returned; returns {(writer, index): seq} of
    every append that reported returning."""
    procs = {
        w: subprocess.Popen(
            [sys.executable, "-c", APPENDER, TESTS, path, str(w), mode, str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in writers
    }
    target = rng.choice([0, 1, 10, 100, 300, 1000])
    buffers = {w: b"" for w in writers}
    acked: dict[tuple[int, int], int] = {}

    def take(w: int, data: bytes) -> None:
        buffers[w] += data
        *lines, buffers[w] = buffers[w].split(b"\n")
        for line in lines:
            seq, i = map(int, line.split())
            acked[(w, i)] = seq

    sel = selectors.DefaultSelector()
    for w, p in procs.items():
        os.set_blocking(p.stdout.fileno(), False)
        sel.register(p.stdout, selectors.EVENT_READ, w)
    try:
        if target == 0:  # die while starting, opening or recovering
            time.sleep(rng.uniform(0, 0.4))
        while len(acked) < target:
            events = sel.select(timeout=30)
            assert events, "appenders stopped making progress"
            for key, _ in events:
                data = key.fileobj.read()
                if not data:
                    p = procs[key.data]
                    pytest.fail(f"appender {key.data} exited early: {p.wait()} {p.stderr.read().decode()[-2000:]}")
                take(key.data, data)
        if target:
            time.sleep(rng.uniform(0, 0.01))  # a random moment, not a timing check
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for w, p in procs.items():
            p.wait()
            rest = p.stdout.read() or b""
            take(w, rest)
            p.stdout.close()
            p.stderr.close()
        sel.close()
    for w, p in procs.items():
        assert p.returncode == -signal.SIGKILL, f"appender {w} died on its own: {p.returncode}"
    return acked


def verify_log(path: str, acked: dict[tuple[int, int], int]) -> int:
    """Every acknowledged append present at its sequence, exactly once and
    intact; each writer's records a gap-free prefix of what it wrote, in
    order; sequences dense.  Returns the record count."""
    with Log.open(path, LogOptions(durability="os")) as log:
        recs = list(log.iter_from())
        assert [r.seq for r in recs] == list(range(log.first, log.end))
    where: dict[tuple[int, int], int] = {}
    for r in recs:
        key = parse_payload(r.payload)  # raises on any damaged byte
        assert key not in where, f"{key} appears twice, at {where[key]} and {r.seq}"
        where[key] = r.seq
    for key, seq in acked.items():
        assert where.get(key) == seq, f"acknowledged append {key} at {seq} is {'at ' + str(where[key]) if key in where else 'missing'}"
    by_writer: dict[int, list[tuple[int, int]]] = {}
    for (w, i), seq in where.items():
        by_writer.setdefault(w, []).append((seq, i))
    for w, pairs in by_writer.items():
        pairs.sort()
        assert [i for _, i in pairs] == list(range(len(pairs))), f"writer {w}'s records are not its first appends in order"
    return len(recs)


def kill_cycles(path: str, cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    all_acked: dict[tuple[int, int], int] = {}
    modes = ["always", "batch", "os"]
    for cycle in range(cycles):
        writers = [cycle * 10 + k for k in range(3)]
        acked = run_kill_cycle(path, writers, modes[cycle % 3], rng)
        all_acked.update(acked)
        if rng.random() < 0.8:  # otherwise the next cycle's appenders recover it
            verify_log(path, all_acked)
    verify_log(path, all_acked)


def test_kill_9_of_appenders_loses_no_returned_append(tmp_path):
    kill_cycles(str(tmp_path), cycles=4, seed=1)


@pytest.mark.crash
def test_kill_9_of_appenders_loses_no_returned_append_over_many_cycles(tmp_path):
    kill_cycles(str(tmp_path), cycles=120, seed=2)


# -- (b) simulated power loss ---------------------------------------------------------

SIM = LogOptions(durability="always", segment_size=4096, preallocate=4096)


class Workload:
    """Drives a log through a RecordingIO and notes what was acknowledged."""

    def __init__(self, directory: str, seed: int):
        self.dir = directory
        self.io = crashsim.RecordingIO(directory)
        self.rng = random.Random(seed)
        self.history: dict[int, bytes] = {}  # seq -> payload last written there
        self.i = 0

    def _payload(self, size: int | None = None) -> bytes:
        self.i += 1
        return payload_for(0, self.i, size or self.rng.randint(16, 700))

    def append(self, log, *, acked: bool = True, size: int | None = None) -> None:
        p = self._payload(size)
        seq = log.append(p)
        self.history[seq] = p
        self.io.note(("acked" if acked else "written", seq, p))

    def append_batch(self, log, n: int, *, acked: bool = True) -> None:
        ps = [self._payload() for _ in range(n)]
        for seq, p in zip(log.append_batch(ps), ps):
            self.history[seq] = p
            self.io.note(("acked" if acked else "written", seq, p))

    def ops(self) -> list:
        return self.io.finish()


def workload_always(directory: str, seed: int) -> Workload:
    """Appends, batches, records bigger than a segment, rolls, a trim and a
    clean reopen, all under durability="always"."""
    w = Workload(directory, seed)
    log = Log.open(directory, SIM, io=w.io)
    w.append(log, size=6000)  # bigger than the (empty) first segment
    for step in range(70):
        r = w.rng.random()
        if r < 0.65:
            w.append(log)
        elif r < 0.85:
            w.append_batch(log, w.rng.randint(2, 5))
        elif r < 0.9:
            w.append(log, size=5000)
        elif r < 0.95 and step > 30:
            target = log.end - 5
            w.io.note(("trimming", target))
            log.delete_below(target)
        else:
            log.close()
            log = Log.open(directory, SIM, io=w.io)
    log.close()
    return w


def workload_kill_then_recover(directory: str, seed: int) -> Workload:
    """Acknowledged appends; then a transaction appends across rolls and the
    process dies before its sync, leaving a half-written frame; recovery cuts
    it; more acknowledged appends follow."""
    w = Workload(directory, seed)
    log = Log.open(directory, SIM, io=w.io)
    for _ in range(6):
        w.append(log)
    tx = log.locked().__enter__()  # appends under the lock: synced only at exit
    for _ in range(14):
        p = w._payload(400)
        seq = tx.append(p)
        w.history[seq] = p
        w.io.note(("written", seq, p))
    crashsim.abandon(log)  # killed inside the transaction
    seg = last_segment(directory)
    fd = os.open(seg, os.O_RDWR)
    try:  # a dead writer's half frame past the published end
        w.io.pwrite(fd, b"\x5a" * 40, data_end(seg))
    finally:
        os.close(fd)
    log = Log.open(directory, SIM, io=w.io)
    for _ in range(20):
        w.append(log)
    w.append_batch(log, 4)
    log.close()
    return w


def workload_batch_mode(directory: str, seed: int) -> Workload:
    """durability="batch": records are written, and only an explicit sync()
    (or close) that returned makes them acknowledged."""
    w = Workload(directory, seed)
    opts = LogOptions(durability="batch", sync_interval=60, segment_size=4096, preallocate=4096)
    log = Log.open(directory, opts, io=w.io)
    for step in range(60):
        if w.rng.random() < 0.3:
            w.append_batch(log, w.rng.randint(2, 4), acked=False)
        else:
            w.append(log, acked=False)
        if step % 9 == 8:
            log.sync()
            w.io.note(("synced", log.end))
    log.close()
    w.io.note(("synced", max(w.history) + 1))
    return w


def check_crash_state(state: crashsim.CrashState, directory: str, history: dict[int, bytes]) -> None:
    acked: set[int] = set()
    trimmed = 0
    for note in state.notes:
        if note[0] == "acked":
            acked.add(note[1])
        elif note[0] == "synced":
            acked.update(s for s in history if s < note[1])
        elif note[0] == "trimming":
            trimmed = max(trimmed, note[1])
    crashsim.materialize(state, directory)
    with Log.open(directory, SIM) as log:  # recovery must succeed
        recs = list(log.iter_from())  # and every record must validate
        first, end = log.first, log.end
        assert [r.seq for r in recs] == list(range(first, end))
        for r in recs:
            assert r.payload == history.get(r.seq), f"record {r.seq} is not what was written there"
        lost = sorted(s for s in acked if s >= trimmed and not first <= s < end)
        assert not lost, f"acknowledged records lost: {lost[:10]}"
        extra = [log.append(b"after the crash %d" % k) for k in range(2)]
        assert extra == [end, end + 1]
    with Log.open(directory, SIM) as log:
        assert [r.payload for r in log.iter_from(first)] == [r.payload for r in recs] + [
            b"after the crash 0",
            b"after the crash 1",
        ]


def scratch_dir() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="walq-crash-", dir=base)


def run_power_loss(workload, tmp_path, seed: int, sample: int | None) -> int:
    """Checks every crash state of ``workload`` (a random ``sample`` of them
    if given); returns how many were checked."""
    w = workload(str(tmp_path / "live"), seed)
    ops = w.ops()
    states = list(crashsim.crash_states(ops, w.io.ctl_snapshots, seed=seed))
    w.io.close()
    if sample is not None and len(states) > sample:
        states = random.Random(seed).sample(states, sample)
    scratch = scratch_dir()
    try:
        for n, state in enumerate(states):
            d = os.path.join(scratch, str(n))
            try:
                check_crash_state(state, d, w.history)
            except BaseException as exc:
                raise AssertionError(
                    f"crash after op {state.point} ({state.label}): {exc!r}\n"
                    f"files: { {k: len(v) for k, v in sorted(state.files.items())} }\n"
                    f"ops:\n{crashsim.history(ops, state.point)}"
                ) from exc
            finally:
                shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return len(states)


WORKLOADS = [workload_always, workload_kill_then_recover, workload_batch_mode]


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda f: f.__name__)
def test_power_loss_loses_no_acknowledged_record(tmp_path, workload):
    checked = run_power_loss(workload, tmp_path, seed=1, sample=None)
    assert checked >= 200


@pytest.mark.crash
@pytest.mark.parametrize("seed", [2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda f: f.__name__)
def test_power_loss_loses_no_acknowledged_record_in_any_state(tmp_path, workload, seed):
    run_power_loss(workload, tmp_path, seed=seed, sample=None)


# -- the simulator checks itself ------------------------------------------------------


def test_crash_sim_replay_of_every_operation_is_the_real_directory(tmp_path):
    w = workload_kill_then_recover(str(tmp_path / "live"), seed=5)
    ops = w.ops()
    files = crashsim._replay(ops, len(ops), keep=lambda i: True)
    real = sorted(n for n in os.listdir(w.dir) if n.endswith(".seg") or n.startswith("torn-"))
    assert sorted(files) == real
    for name in real:
        with open(os.path.join(w.dir, name), "rb") as f:
            assert files[name] == f.read(), f"{name} differs from its replay"


def test_crash_sim_states_include_lost_unsynced_writes(tmp_path):
    """Under durability="os" nothing is synced: the simulator must produce
    states that lose acknowledged records, or the checks above prove nothing."""
    w = Workload(str(tmp_path / "live"), seed=6)
    log = Log.open(w.dir, LogOptions(durability="os", segment_size=4096, preallocate=4096), io=w.io)
    for _ in range(30):
        w.append(log)
    log.close()
    states = list(crashsim.crash_states(w.ops(), w.io.ctl_snapshots))
    labels = {s.label.split()[0].split("-torn")[0].rstrip("0123456789/") for s in states}
    assert {"drop-unsynced", "prefix", "all-data-no-names"} <= labels
    assert any("torn@512B" in s.label for s in states) and any("torn@byte" in s.label for s in states)
    failures = 0
    scratch = scratch_dir()
    try:
        for n, state in enumerate(states[-40:]):
            try:
                check_crash_state(state, os.path.join(scratch, str(n)), w.history)
            except AssertionError:
                failures += 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert failures, "no crash state lost an unsynced record"


def test_crash_sim_rename_without_directory_fsync_can_be_lost(tmp_path):
    d = str(tmp_path)
    io = crashsim.RecordingIO(d)
    fd = io.create_segment(d, "x.seg", b"h" * 64, 4096, 4096)
    io.fdatasync(fd, d)
    os.close(fd)
    ops = io.finish()
    names = [sorted(s.files) for s in crashsim.crash_states(ops, points={len(ops)})]
    assert [] in names, "the file's name was never made durable"
    assert ["x.seg"] in names, "ext4 may persist it anyway"
    io.fsync_dir(d)
    ops = io.finish()
    final = list(crashsim.crash_states(ops, points={len(ops)}))
    assert final and all(sorted(s.files) == ["x.seg"] and s.files["x.seg"][:64] == b"h" * 64 for s in final)


# -- a writer killed mid-append while other processes keep the log open ---------------


def _dead_writer(log, payloads: list[bytes], publish_seq: bool, cut: int | None = None) -> None:
    """Leaves the control block and the segment as a writer killed inside
    walq_append_locked would: after reserving (and writing ``cut`` bytes of)
    its batch, or after publishing end_seq but not end_off."""
    from walq.log.format import frame

    seq, end = log._load("end_seq"), log._load("end_off")
    data = frame(payloads, log._load("salt"), seq)
    log._store("reserve_seq", seq + len(payloads))
    log._store("reserve_off", end + len(data))
    fd = os.open(last_segment(log.path), os.O_RDWR)
    try:
        os.pwrite(fd, data if cut is None else data[:cut], end)
    finally:
        os.close(fd)
    if publish_seq:
        log._store("end_seq", seq + len(payloads))


def test_batch_of_a_writer_killed_before_publishing_is_cleared(tmp_path):
    opts = LogOptions(durability="os", segment_size=16384)
    with Log.open(tmp_path, opts) as log:
        log.append(b"before")
        dead = [payload_for(9, i, 100) for i in range(3)]
        _dead_writer(log, dead, publish_seq=False, cut=300)  # two whole frames and a part
        assert log.end == 1
        assert log.append(b"next") == 1  # the next writer clears the dead batch
        assert [r.payload for r in log.iter_from()] == [b"before", b"next"]
    with Log.open(tmp_path, opts) as log:
        assert [r.payload for r in log.iter_from()] == [b"before", b"next"]


def test_batch_of_a_writer_killed_after_publishing_its_sequence_is_kept(tmp_path):
    opts = LogOptions(durability="os", segment_size=16384)
    with Log.open(tmp_path, opts) as log:
        log.append(b"before")
        dead = [payload_for(9, i, 100) for i in range(3)]
        _dead_writer(log, dead, publish_seq=True)
        assert [r.payload for r in log.iter_from()] == [b"before"] + dead  # readers saw it
        assert log.append(b"next") == 4
        assert [r.payload for r in log.iter_from()] == [b"before"] + dead + [b"next"]
    with Log.open(tmp_path, opts) as log:
        assert [r.payload for r in log.iter_from()] == [b"before"] + dead + [b"next"]
