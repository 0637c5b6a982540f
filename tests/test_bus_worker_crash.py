"""Workers killed with SIGKILL - at random instants, or by themselves at a
chosen step of a tick's firing or a replay's batch (``arm``) - while they
fire schedule ticks and run replays, then started again:

- schedules: every tick that fell due while a worker ran (or that a
  restarted worker finds due, less than STALE_S old), and every tick whose
  event was routed before the worker died, reaches the target queue exactly
  once; a tick the clock passed while no worker ran is never fired (missed
  ticks are not replayed);
- replays: once the replay is COMPLETED, every archived event of its range -
  those archived before it started and those archived while it ran - has
  reached the target queue exactly once with its ``replay-name``.

Workers run as ``python tests/test_bus_worker_crash.py worker <json>``: a
real ``walq.Worker`` on a broker whose clock is a file the test moves
(``FileClock``), polling its chores on every loop pass so that a tick or a
replay batch starts within milliseconds of being due.  The test waits for
what it can observe - the ticks and replayed events in the queue, the
replay's state - never for a length of time; only the kill instants are
random sleeps."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from worker_helpers import wait_until  # noqa: E402

import walq  # noqa: E402

HERE = os.path.abspath(__file__)
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PERIOD = 60  # rate(1 minute)


class FileClock:
    """A broker clock every process reads from one file (the test writes it)."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self) -> float:
        with open(self.path, "rb") as f:
            return float(f.read())

    def set(self, t: float) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(repr(float(t)))
        os.replace(tmp, self.path)  # readers see the old time or the new one, never a torn one


def arm(point: dict) -> None:
    """Makes this process kill itself with SIGKILL at a step of a tick's
    firing or a replay's batch, as a kill at a random instant rarely would:
    at the catalog record ``point["op"]`` ("fired" or "replay_state") that
    matches - the tick ``point["tick"]``, the COMPLETED state if
    ``point["completed"]``, else the ``point["nth"]``-th - just before it is
    written (``"where": "claim"``: routed, not claimed) or at the copy that
    follows it (``"copy"``: claimed, its copies not made)."""
    from walq.bus.catalog import BusCatalog
    from walq.bus.outbox import Outbox

    real_write, real_run = BusCatalog.write, Outbox.run
    count, claimed = [0], []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def matches(record) -> bool:
        if record["op"] != point["op"]:
            return False
        if "tick" in point:
            return record["tick"] == point["tick"]
        if point.get("completed"):
            return record["state"] == "COMPLETED"
        count[0] += 1
        return count[0] == point["nth"]

    def write(self, tx, record):
        if matches(record):
            if point["where"] == "claim":
                die()
            claimed.append(record)
        real_write(self, tx, record)

    def run(self, known=None):
        if claimed:
            die()
        return real_run(self, known)

    BusCatalog.write, Outbox.run = write, run


def worker(args) -> None:
    """A walq.Worker on the store; prints ``ready`` once the broker is open.
    Chores run on every loop pass; a replay moves ``batch`` archive records
    per pass, so that a kill lands between batches as often as within one."""
    import walq.bus.archive as archive
    import walq.worker.worker as W

    W.TARGETS_EVERY_S = 0.0
    W.IDLE_WAIT_S = 0.002
    archive.BATCH = args.get("batch", archive.BATCH)
    broker = walq.open(args["path"], durability=args["durability"], clock=FileClock(args["clock"]))
    if args.get("point"):
        arm(args["point"])  # after the open, whose completion must not die
    # A SIGTERM before run() has installed its own handler stops as cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    walq.Worker(broker, concurrency=1).run()


class Workers:
    """Starts worker subprocesses and kills them (their stderr goes to one
    file, which a pipe nobody reads could not be: it would fill and block)."""

    def __init__(self, path: str, clock: FileClock, durability: str, **extra):
        self.args = {"path": path, "clock": clock.path, "durability": durability, **extra}
        self.errors = os.path.join(os.path.dirname(path), "workers.err")
        self.proc = None

    def _stderr(self) -> str:
        with open(self.errors, "rb") as f:
            return f.read().decode(errors="replace")[-2000:]

    def start(self, point: dict | None = None) -> None:
        """Starts a worker (that kills itself at ``point``, see ``arm``)."""
        with open(self.errors, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, HERE, "worker", json.dumps(dict(self.args, point=point))],
                                         stdout=subprocess.PIPE, stderr=err)
        if self.proc.stdout.readline().strip() != b"ready":
            self.proc.kill()
            self.proc.wait(timeout=60)
            raise AssertionError(f"a worker failed to start: {self._stderr()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self._wait(-signal.SIGKILL)

    def died(self) -> bool:
        """Whether the worker killed itself (at its point)."""
        return self.proc.poll() is not None

    def wait_died(self, also=lambda: False) -> None:
        """Waits until the worker killed itself, or ``also()``; then makes sure it is dead."""
        wait_until(lambda: self.died() or also(), timeout=60, what="the worker to reach its kill point")
        self.kill()

    def stop(self) -> None:
        """SIGTERM: the worker finishes what it holds and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        self._wait(0)

    def _wait(self, code: int) -> None:
        self.proc.wait(timeout=60)
        self.proc.stdout.close()
        got, self.proc = self.proc.returncode, None
        assert got == code, f"a worker ended with {got}, not {code}: {self._stderr()}"


def drain(q) -> list[dict]:
    out = []
    while True:
        got = q.receive(10, visibility_timeout=3600)
        if not got:
            return out
        out += [json.loads(m.body) for m in got]
        q.delete_batch([m.receipt for m in got])


# -- schedules -------------------------------------------------------------------------


def run_schedule_cycles(tmp_path, cycles: int, seed: int, durability: str = "os") -> int:
    """Each cycle: a worker fires 0-3 ticks the test waits for, then the
    clock moves one more period and the worker dies: killed a random instant
    later (before, during or after that tick's firing), or by itself at a
    step of it (routed, not claimed; claimed, not copied).  Sometimes the
    clock then moves 2-3 periods while no worker runs.  Checks each tick
    fired at most once, every tick that must fire did, and no other did."""
    from walq.bus.bus import iso_time

    rng = random.Random(seed)
    path = str(tmp_path / "store")
    clock = FileClock(str(tmp_path / "clock"))
    clock.set(T0)
    now = T0
    with walq.open(path, durability="os", clock=clock) as b:
        q = b.create_queue("ticks")
        bus = b.get_bus("default")
        bus.put_rule("every", schedule="rate(1 minute)")  # ticks at T0 + k * PERIOD
        bus.put_targets("every", [walq.Target("q", q)])
    workers = Workers(path, clock, durability)
    must, may = set(), set()  # ticks that must have fired; ticks that may have (killed around them)
    seen: list[str] = []  # every tick the queue got, in order

    def take(b) -> None:
        for ev in drain(b.get_queue("ticks")):
            assert ev["detail-type"] == "Scheduled Event", ev
            seen.append(ev["time"])

    def wait_for(b, tick: float) -> None:
        want = iso_time(tick)
        wait_until(lambda: take(b) or want in seen, timeout=60, what=f"the tick at {want}")

    with walq.open(path, durability="os", clock=clock) as b:
        for _cycle in range(cycles):
            steps = rng.randint(0, 3)
            last = now + (steps + 1) * PERIOD  # the tick the worker dies around
            where = rng.choice(("instant", "instant", "claim", "copy"))
            workers.start(None if where == "instant" else {"op": "fired", "tick": last, "where": where})
            # A tick pending from the death before (the clock has not moved since): fired now.
            if must:
                wait_for(b, max(must))
            for _ in range(steps):
                now += PERIOD
                clock.set(now)
                must.add(now)
                wait_for(b, now)
            now += PERIOD
            clock.set(now)
            if where == "instant":
                time.sleep(rng.uniform(0, 0.03))  # the kill's instant: before, during or after this tick
                workers.kill()
            else:
                workers.wait_died()
            if rng.random() < 0.3:
                # No worker runs while these periods pass: a tick killed at a
                # random instant may have fired; one whose event was routed
                # must come (the next open copies it); those between never
                # fire; the latest is still fresh when the next worker starts.
                (may if where == "instant" else must).add(now)
                now += PERIOD * rng.randint(2, 3)
                clock.set(now)
            must.add(now)
        workers.start()
        wait_for(b, max(must))
        for t in must:
            wait_for(b, t)
        workers.stop()
        take(b)
    counts = collections.Counter(seen)
    doubled = sorted(t for t, n in counts.items() if n > 1)
    assert not doubled, f"ticks fired twice: {doubled[:5]}"
    fired = set(counts)
    must_iso, may_iso = {iso_time(t) for t in must}, {iso_time(t) for t in may}
    assert must_iso <= fired, f"ticks never fired: {sorted(must_iso - fired)[:5]}"
    stray = sorted(fired - must_iso - may_iso)
    assert not stray, f"ticks fired though no worker ran then: {stray[:5]}"
    return len(fired)


def test_killed_workers_fire_each_due_tick_once_short(tmp_path):
    assert run_schedule_cycles(tmp_path, cycles=3, seed=3) >= 3


@pytest.mark.crash
def test_killed_workers_fire_each_due_tick_once(tmp_path):
    assert run_schedule_cycles(tmp_path, cycles=120, seed=11, durability="always") >= 120


# -- replays ---------------------------------------------------------------------------


def put_keyed(bus, keys: list[int]) -> None:
    """Events with detail ``{"k": k}`` at time T0 - 10000 + k (whole seconds)."""
    for i in range(0, len(keys), 10):
        res = bus.put_events([{"source": "app", "detail_type": "t", "detail": {"k": k}, "time": _iso(T0 - 10_000 + k)}
                              for k in keys[i:i + 10]])
        assert not res.failed, res.failed


def _iso(secs: float) -> str:
    from walq.bus.bus import iso_time

    return iso_time(secs)


def run_replay_cycles(tmp_path, kills: int, seed: int, events: int = 150, batch: int = 7,
                      durability: str = "os") -> int:
    """For each replay: start it over a random range of the archive, then
    start a worker and kill it - a random instant after it moved the replay
    1-3 batches on (or soon after it started), or by itself at a step of a
    batch (see ``arm``) - until the replay is COMPLETED, archiving a few
    more events (some in the range) while no worker runs; more replays
    until ``kills`` workers died.  Checks
    the replayed events are exactly the archived ones in the range, each
    once.  Returns how many replays ran."""
    rng = random.Random(seed)
    path = str(tmp_path / "store")
    clock = FileClock(str(tmp_path / "clock"))
    clock.set(T0)
    with walq.open(path, durability="os", clock=clock) as b:
        bus = b.get_bus("default")
        bus.create_archive("all")
        put_keyed(bus, list(range(events)))  # archived before any rule: no queue has them
        bus.put_rule("r", pattern={"source": ["app"]})
        bus.put_targets("r", [walq.Target("q", b.create_queue("out"))])
    archived = list(range(events))
    workers = Workers(path, clock, durability, batch=batch)
    killed = n = 0
    while killed < kills:
        name = f"p{n}"
        n += 1
        lo = rng.randrange(0, len(archived) // 2)
        hi = rng.randrange(lo + 1, len(archived) + 20)  # past the end: events archived meanwhile count
        with walq.open(path, durability="os", clock=clock) as b:
            r = b.get_bus("default").start_replay(name, "all", T0 - 10_000 + lo, T0 - 10_000 + hi)
            while True:
                how = rng.choice(("instant", "instant", "instant", "nth", "completed"))
                if how == "instant":
                    workers.start()
                    if rng.random() < 0.8:
                        # Let it run 1-3 batches (its durable position says),
                        # then kill it somewhere in the next one.
                        target = r._entry()["pos"] + batch * rng.randint(1, 3)
                        wait_until(lambda: r.state == "COMPLETED" or r._entry()["pos"] >= target, timeout=60,
                                   what=f"replay {name} to reach {target}")
                    time.sleep(rng.uniform(0, 0.01))  # the kill's instant
                    workers.kill()
                else:
                    # It dies at a batch's step: routed, not recorded; or
                    # recorded, not copied - its 1st-3rd batch, or its last
                    # (the archive's end, which grows while no worker runs).
                    point = {"op": "replay_state", "where": rng.choice(("claim", "copy"))}
                    if how == "completed":
                        point["completed"] = True
                    else:
                        point["nth"] = rng.randint(1, 3)
                    workers.start(point)
                    workers.wait_died(also=lambda: r.state == "COMPLETED")
                killed += 1
                if r.state == "COMPLETED":
                    break
                # No worker runs: the replay is still RUNNING, so what is
                # archived now must be replayed too.
                more = list(range(len(archived), len(archived) + rng.randint(how == "completed", 3)))
                if more:
                    put_keyed(b.get_bus("default"), more)
                    archived += more
        # A fresh open completes the copies a killed worker left unmade.
        with walq.open(path, durability="os", clock=clock) as b:
            got = drain(b.get_queue("out"))
        replayed = collections.Counter(e["detail"]["k"] for e in got if e.get("replay-name") == name)
        doubled = sorted(k for k, c in replayed.items() if c > 1)
        assert not doubled, f"replay {name} sent events twice: {doubled[:5]}"
        want = {k for k in archived if lo <= k < hi}
        assert set(replayed) == want, (f"replay {name} [{lo}, {hi}): missing {sorted(want - set(replayed))[:5]}, "
                                       f"extra {sorted(set(replayed) - want)[:5]}")
        others = {e.get("replay-name") for e in got} - {name, None}
        assert not others, f"events of finished replays {others} came again"
    return n


def test_killed_workers_complete_each_replay_with_every_event_once_short(tmp_path):
    assert run_replay_cycles(tmp_path, kills=3, seed=5, events=60, batch=5) >= 1


@pytest.mark.crash
def test_killed_workers_complete_each_replay_with_every_event_once(tmp_path):
    assert run_replay_cycles(tmp_path, kills=120, seed=13, events=300, durability="always") >= 1


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(json.loads(sys.argv[2]))
