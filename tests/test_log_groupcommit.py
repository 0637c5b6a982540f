"""Group commit under durability="always": every appender - thread or
process - returns only once its record is durable; followers wait on the
``synced`` futex of the control block, are woken by the syncer's release
(not by the timeout), and are not stranded by a syncer killed with SIGKILL
while it holds ``lock.sync``."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from walq.errors import BrokerClosed, LogPoisoned
from walq.log import Log, LogOptions
from walq.log._native import check_sync, ffi, lib
from walq.log.fileio import OsIO

ALWAYS = LogOptions(durability="always")
# A follower that missed its wake-up would sit out this timeout; every test
# below bounds latencies far below it, so a lost wake-up fails them.
NEVER_MS = 30_000


def durable_seq(log: Log) -> int:
    """The shared durable point: every record below it is on stable storage."""
    return lib.walq_load(ffi.addressof(log.ctl, "durable_seq"))


class CountingIO(OsIO):
    """Counts fdatasyncs."""

    def __init__(self):
        self.syncs = 0

    def fdatasync(self, fd: int, path: str) -> None:
        self.syncs += 1
        super().fdatasync(fd, path)


# -- the control block --------------------------------------------------------------


def test_control_block_layout_keeps_every_old_offset_and_its_size():
    """Processes of the previous version may map the same ``log.ctl``: the
    futex fields come out of ``reserved``, nothing else moves."""
    old = {"magic": 0, "end_seq": 8, "seg_base": 16, "end_off": 24, "reserve_off": 32, "durable_seq": 40,
           "first_seq": 48, "seg_cap": 56, "salt": 64, "generation": 72, "poisoned": 80, "dir_synced_base": 88,
           "notify": 96, "waiters": 100, "alloc_off": 104, "reserve_seq": 112, "busy": 120}
    assert {name: ffi.offsetof("struct walq_ctl", name) for name in old} == old
    assert ffi.sizeof("struct walq_ctl") == 248
    # The new words sit where reserved[0] was, the rest of it follows.
    assert (ffi.offsetof("struct walq_ctl", "synced"), ffi.offsetof("struct walq_ctl", "sync_waiters")) == (128, 132)
    assert ffi.offsetof("struct walq_ctl", "reserved") == 136
    assert ffi.sizeof(ffi.typeof("uint64_t[14]")) == 248 - 136


def test_try_lock_reports_a_lock_held_through_another_descriptor(tmp_path):
    path = str(tmp_path / "lock")
    a = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    b = os.open(path, os.O_RDWR)
    try:
        assert lib.walq_try_lock(a) == 0
        assert lib.walq_try_lock(b) == 1
        assert lib.walq_unlock(a) == 0
        assert lib.walq_try_lock(b) == 0
        assert lib.walq_try_lock(-1) == -errno.EBADF
    finally:
        os.close(a)
        os.close(b)


# -- followers wait on the futex ------------------------------------------------------


def test_a_follower_is_woken_by_the_release_not_by_its_timeout(tmp_path):
    log = Log.open(tmp_path, ALWAYS)
    log._SYNC_WAIT_MS = NEVER_MS
    holder = open(tmp_path / "lock.sync", "a+b")  # another open file description: a rival syncer
    fcntl.flock(holder, fcntl.LOCK_EX)
    done = threading.Event()
    t = threading.Thread(target=lambda: (log.append(b"x"), done.set()))
    t.start()
    try:
        assert not done.wait(0.3), "append returned while another syncer held lock.sync"
        fcntl.flock(holder, fcntl.LOCK_UN)
        t0 = time.monotonic()
        lib.walq_durable_publish(log.ctl, 0)  # what a syncer does after releasing
        assert done.wait(10)
        assert time.monotonic() - t0 < 5
        assert durable_seq(log) >= 1
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        holder.close()
        t.join(timeout=NEVER_MS / 1000)
        log.close()


def test_closing_a_log_while_a_thread_waits_to_be_durable_raises_broker_closed(tmp_path):
    log = Log.open(tmp_path, ALWAYS)
    holder = open(tmp_path / "lock.sync", "a+b")  # a rival syncer that never finishes
    fcntl.flock(holder, fcntl.LOCK_EX)
    outcome: list[BaseException | None] = []

    def append() -> None:
        try:
            log.append(b"x")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001  (checked below)
            outcome.append(exc)

    t = threading.Thread(target=append)
    t.start()
    try:
        time.sleep(0.1)
        assert not outcome, "append returned while another syncer held lock.sync"
        log.close()
        t.join(timeout=10)
        assert not t.is_alive(), "the waiter never noticed the close"
        assert isinstance(outcome[0], BrokerClosed)
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        holder.close()
        t.join(timeout=10)


class GatedIO(OsIO):
    """fdatasync waits for the test's go once ``gate`` is set."""

    def __init__(self):
        self.gate = False
        self.entered = threading.Event()
        self.go = threading.Event()

    def fdatasync(self, fd, path):
        if self.gate:
            self.entered.set()
            self.go.wait(10)
        super().fdatasync(fd, path)


def test_close_waits_for_a_sync_another_thread_is_running(tmp_path):
    io = GatedIO()
    log = Log.open(tmp_path, ALWAYS, io=io)
    io.gate = True
    got: list[int] = []
    appender = threading.Thread(target=lambda: got.append(log.append(b"x")))
    appender.start()
    try:
        assert io.entered.wait(10)
        closer = threading.Thread(target=log.close)
        closer.start()
        closer.join(0.3)
        assert closer.is_alive(), "close did not wait for the thread syncing through lock.sync"
        io.go.set()
        closer.join(10)
        appender.join(10)
        assert not closer.is_alive() and got == [0], "the sync finished, then the close"
    finally:
        io.go.set()
        appender.join(10)
        log.close()


def syncs_of(log: Log) -> int:
    """fdatasyncs this handle ran: through its I/O shim, or natively."""
    return log.io.syncs if isinstance(log.io, CountingIO) else log._syncer.syncs


@pytest.mark.parametrize("sync", ["native", "python"])
def test_threads_of_one_and_of_two_handles_all_return_durable(tmp_path, sync):
    """Threads share their handle's claim on lock.sync (``walq_syncer.held``:
    flock does not exclude threads sharing a descriptor); two handles in one
    process compete on
    the flock like processes.  Every append returns with its record durable,
    and none waits for the futex timeout (a lost wake-up).  Both ways of
    syncing: walq_make_durable's (plain OsIO) and Log._sync_locked's (a shim)."""
    logs = [Log.open(tmp_path, ALWAYS, io=CountingIO() if sync == "python" else None) for _ in range(2)]
    for log in logs:
        log._SYNC_WAIT_MS = NEVER_MS
    per_thread = 150
    errors: list[str] = []
    worst = [0.0]

    def appender(log: Log, n: int) -> None:
        try:
            for i in range(n):
                t0 = time.monotonic()
                if i % 10 == 9:
                    got = log.append_batch([b"b%d" % i] * 3)
                    last = got[-1]
                else:
                    last = log.append(b"t%d" % i)
                worst[0] = max(worst[0], time.monotonic() - t0)
                if durable_seq(log) <= last:
                    errors.append(f"record {last} returned before it was durable")
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(repr(exc))

    threads = [threading.Thread(target=appender, args=(logs[k % 2] if k < 4 else logs[0], per_thread))
               for k in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors[:5]
        assert worst[0] < 5, f"an append took {worst[0]:.1f} s: a follower waited for the timeout"
        end = logs[0].end
        assert end == 8 * (per_thread + per_thread // 10 * 2)
        assert durable_seq(logs[0]) >= end
        syncs = sum(syncs_of(log) for log in logs)
        assert 0 < syncs < end, f"{syncs} fdatasyncs for {end} records"
    finally:
        for log in logs:
            log.close()


APPENDER = r"""
import sys, time
from walq.log import Log, LogOptions
from walq.log._native import ffi, lib

path, writer, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
Log._SYNC_WAIT_MS = int(sys.argv[4])
log = Log.open(path, LogOptions(durability="always"))
durable = ffi.addressof(log.ctl, "durable_seq")
print("ready", flush=True)
sys.stdin.readline()
worst = 0.0
for i in range(count):
    t0 = time.monotonic()
    if i % 25 == 24:
        seq = log.append_batch([b"w%d-%d" % (writer, i)] * 4)[-1]
    else:
        seq = log.append(b"w%d-%d" % (writer, i))
    worst = max(worst, time.monotonic() - t0)
    assert lib.walq_load(durable) > seq, (seq, lib.walq_load(durable))
log.close()
print("done %.3f" % worst, flush=True)
"""


def start_appenders(path: str, n: int, count: int, wait_ms: int) -> list[subprocess.Popen]:
    """Starts ``n`` APPENDER processes and waits until each has the log open."""
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, path, str(w), str(count), str(wait_ms)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for w in range(n)]
    for p in procs:
        line = p.stdout.readline()
        assert line == b"ready\n", (line, p.stderr.read().decode()[-2000:])
    return procs


def finish(procs: list[subprocess.Popen], timeout: float) -> list[float]:
    """Waits for the appenders; returns each one's slowest append (seconds)."""
    worst = []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"appenders did not finish within {timeout} s")
        assert p.returncode == 0, err.decode()[-3000:]
        worst.append(float(out.split()[-1]))
    return worst


def go(procs: list[subprocess.Popen]) -> None:
    """Releases the appenders together."""
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()


def test_processes_appending_under_always_all_return_durable(tmp_path):
    path = str(tmp_path)
    writers, count = 4, 150
    with Log.open(path, ALWAYS):
        procs = start_appenders(path, writers, count, NEVER_MS)
        go(procs)
        worst = finish(procs, 60)
    assert max(worst) < 5, f"an append took {max(worst):.1f} s: a follower waited for the timeout"
    with Log.open(path, LogOptions(durability="os")) as log:
        assert log.end == writers * (count + count // 25 * 3)
        assert sorted(r.payload for r in log.iter_from() if r.payload.endswith(b"-0")) == \
            [b"w%d-0" % w for w in range(writers)]


STUCK_SYNCER = r"""
import sys, time
from walq.log import Log, LogOptions
from walq.log.fileio import OsIO

class StuckIO(OsIO):
    stuck = False
    def fdatasync(self, fd, path):
        if self.stuck:
            print("syncing", flush=True)
            time.sleep(600)
        super().fdatasync(fd, path)

io = StuckIO()
log = Log.open(sys.argv[1], LogOptions(durability="always"), io=io)
io.stuck = True
log.append(b"the syncer's own record")
"""


def test_a_syncer_killed_while_holding_the_sync_lock_does_not_strand_the_others(tmp_path):
    """SIGKILL during the fdatasync: the kernel drops the flock, nobody
    publishes, and the followers' bounded wait lets the next one sync."""
    path = str(tmp_path)
    main = Log.open(path, ALWAYS)
    syncer = subprocess.Popen([sys.executable, "-c", STUCK_SYNCER, path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    procs: list[subprocess.Popen] = []
    threads: list[threading.Thread] = []
    try:
        assert syncer.stdout.readline() == b"syncing\n", syncer.stderr.read().decode()[-2000:]
        procs = start_appenders(path, 2, 20, main._SYNC_WAIT_MS)
        done: list[int] = []
        threads = [threading.Thread(target=lambda: done.append(main.append(b"main"))) for _ in range(3)]
        for t in threads:
            t.start()
        go(procs)
        time.sleep(0.5)
        assert not done and all(p.poll() is None for p in procs), "an append returned while lock.sync was held"
        assert durable_seq(main) < main.end
        t_kill = time.monotonic()
        syncer.send_signal(signal.SIGKILL)
        syncer.wait(timeout=10)
        for t in threads:
            t.join(timeout=10)
        assert len(done) == 3
        finish(procs, 10)
        assert time.monotonic() - t_kill < 10
        assert durable_seq(main) >= main.end
        # The killed syncer's record was written before it died: synced since.
        assert b"the syncer's own record" in [r.payload for r in main.iter_from()]
    finally:
        for p in [syncer, *procs]:
            if p.poll() is None:
                p.kill()
                p.wait()
        for t in threads:
            t.join(timeout=10)
        main.close()


# -- a failed sync ----------------------------------------------------------------------


class BlockingFailIO(OsIO):
    """Once armed, the next fdatasync waits for ``release`` and then fails with EIO."""

    def __init__(self):
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def fdatasync(self, fd: int, path: str) -> None:
        if self.armed:
            self.entered.set()
            self.release.wait(30)
            check_sync(-errno.EIO, path)
        super().fdatasync(fd, path)


@pytest.mark.parametrize("sync", ["native", "python"])
def test_a_follower_reports_a_failed_sync_instead_of_syncing_over_it(tmp_path, sync):
    """After a failed fdatasync a second one can succeed without the lost
    pages reaching the disk: the waiting handle must raise, not sync, whether
    it would sync natively or through its shim."""
    bad_io = BlockingFailIO()
    failing = Log.open(tmp_path, ALWAYS, io=bad_io)
    other = Log.open(tmp_path, ALWAYS, io=CountingIO() if sync == "python" else None)
    other._SYNC_WAIT_MS = NEVER_MS
    results: dict[str, BaseException | None] = {}

    def run(name: str, log: Log) -> None:
        try:
            log.append(name.encode())
            results[name] = None
        except BaseException as exc:  # noqa: BLE001  (checked below)
            results[name] = exc

    bad_io.armed = True
    t_bad = threading.Thread(target=run, args=("failing", failing))
    t_bad.start()
    assert bad_io.entered.wait(10)
    syncs = syncs_of(other)
    t_other = threading.Thread(target=run, args=("other", other))
    t_other.start()
    time.sleep(0.2)
    assert "other" not in results
    bad_io.release.set()
    t_bad.join(10)
    t_other.join(10)
    assert isinstance(results["failing"], LogPoisoned)
    assert isinstance(results["other"], LogPoisoned)
    assert syncs_of(other) == syncs, "the follower fdatasynced after the failure"
    failing.close()
    other.close()


def test_an_append_left_unsettled_is_durable_only_once_settled(tmp_path):
    io = CountingIO()
    log = Log.open(tmp_path, ALWAYS, io=io)
    log.append(b"first")
    syncs = io.syncs
    seq = log.append(b"second", settle=False)
    seqs = log.append_packed(2, b"ab", ffi.new("uint32_t[]", [1, 1]), 1, settle=False)
    assert durable_seq(log) == seq and io.syncs == syncs
    log.settle(seqs.stop)
    assert durable_seq(log) == log.end == seqs.stop and io.syncs == syncs + 1
    log.close()


# -- the native sync -------------------------------------------------------------------


def test_the_usual_sync_runs_natively_and_one_across_a_roll_in_python(tmp_path, monkeypatch):
    """walq_make_durable syncs the active segment itself; a sync whose
    records span a segment roll (or a new segment's directory entry) is
    handed back to Log._sync_locked, which syncs every segment involved."""
    calls = []
    real = Log._sync_locked
    monkeypatch.setattr(Log, "_sync_locked", lambda self, upto: calls.append(upto) or real(self, upto))
    log = Log.open(tmp_path, LogOptions(durability="always", segment_size=64 * 1024, preallocate=16 * 1024))
    try:
        for i in range(5):
            log.append(b"x" * 100)
        assert calls == [] and log._syncer.syncs == 5
        assert durable_seq(log) == log.end
        base = log.active_base
        last = log.end
        while log.active_base == base:  # unsettled records up to and past a roll
            last = log.append(b"y" * 2000, settle=False)
        assert durable_seq(log) <= last
        log.settle(last + 1)
        assert calls, "a sync across a roll did not go through _sync_locked"
        assert durable_seq(log) >= last + 1
        n = len(calls)
        log.append(b"z")  # the new segment's directory entry is durable now
        assert len(calls) == n and durable_seq(log) == log.end
    finally:
        log.close()


def test_a_failed_native_fdatasync_poisons_the_log(tmp_path):
    """walq_make_durable's fdatasync fails (here: the descriptor is a pipe,
    EINVAL): the call raises LogPoisoned with the errno, the shared block
    says poisoned, and every handle refuses from then on."""
    log = Log.open(tmp_path, ALWAYS)
    other = Log.open(tmp_path, ALWAYS)
    r, w = os.pipe()
    try:
        log.append(b"first")
        real = log._writer_seg
        fake = type("FakeSegment", (), {"fd": w, "base": real.base, "path": real.path})()
        seq = log.append(b"second", settle=False)
        log._writer_seg = fake
        with pytest.raises(LogPoisoned) as info:
            log.settle(seq + 1)
        assert info.value.errno == errno.EINVAL
        assert lib.walq_load(ffi.addressof(log.ctl, "poisoned")) == 1
        assert durable_seq(log) <= seq
        log._writer_seg = real
        for handle in (log, other):
            with pytest.raises(LogPoisoned):
                handle.append(b"more")
    finally:
        os.close(r)
        os.close(w)
        log.close()
        other.close()
