"""Producers killed with SIGKILL at random instants while they put events on
a bus whose rules target three queues: after the store is reopened, every
confirmed event is in every queue its rules route it to exactly once, and
no queue holds an event another routed queue lacks (all or none).

Producers run as ``python tests/test_bus_crash.py producer <json>``; each
journals ``P <tag:k>`` only after its put_events returned."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from queue_helpers import Journal, read_journal  # noqa: E402

import walq  # noqa: E402

HERE = os.path.abspath(__file__)


def setup_store(path: str) -> None:
    with walq.open(path, durability="os") as b:
        bus = b.get_bus("default")
        bus.put_rule("all", pattern={"source": ["crash"]})
        bus.put_rule("even", pattern={"source": ["crash"], "detail": {"even": [True]}})
        bus.put_targets("all", [walq.Target("a", b.create_queue("a")),
                                walq.Target("b", b.create_queue("b"), input_path="$.detail")])
        bus.put_targets("even", [walq.Target("c", b.create_queue("c"))])


def producer(args) -> None:
    """Puts events ``<tag>:<k>`` (1-4 per call); journals each call that returned."""
    broker = walq.open(args["path"], durability=args.get("durability", "os"))
    bus = broker.get_bus("default")
    journal = Journal(args["journal"])
    k = 0
    rng = random.Random(args["tag"])
    print("ready", flush=True)
    while True:
        n = rng.choice((1, 1, 4))
        keys = [f"{args['tag']}:{i}" for i in range(k, k + n)]
        res = bus.put_events([{"source": "crash", "detail_type": "t", "detail": {"key": key, "even": i % 2 == 0}}
                              for i, key in zip(range(k, k + n), keys)])
        assert not res.failed, res.failed
        journal.write_many(("P", key) for key in keys)
        k += n


def _drain(q) -> list[dict]:
    out = []
    while True:
        got = q.receive(10, visibility_timeout=600)
        if not got:
            return out
        out += [json.loads(m.body) for m in got]
        q.delete_batch([m.receipt for m in got])


def check_store(path: str, journals: list[str]) -> int:
    confirmed = {row[1] for p in journals for row in read_journal(p) if row[0] == "P"}
    with walq.open(path, durability="os") as b:
        b.get_bus("default")  # opening the bus completes what a killed producer left
        a = [e["detail"]["key"] for e in _drain(b.get_queue("a"))]
        bq = [d["key"] for d in _drain(b.get_queue("b"))]
        c = [e["detail"]["key"] for e in _drain(b.get_queue("c"))]
    for name, keys in (("a", a), ("b", bq), ("c", c)):
        assert len(keys) == len(set(keys)), f"queue {name} holds duplicates"
    assert confirmed <= set(a), f"confirmed events missing from a: {sorted(confirmed - set(a))[:5]}"
    assert set(a) == set(bq), f"a and b differ: {sorted(set(a) ^ set(bq))[:5]}"
    even = {k for k in a if int(k.split(":")[1]) % 2 == 0}
    assert set(c) == even, f"c is not a's even events: {sorted(set(c) ^ even)[:5]}"
    return len(confirmed)


def run_cycles(tmp_path, cycles: int, seed: int, durability: str = "os") -> int:
    rng = random.Random(seed)
    path = str(tmp_path / "store")
    setup_store(path)
    journals = []
    for cycle in range(cycles):
        procs = []
        for w in range(2):
            j = str(tmp_path / f"journal-{cycle}-{w}")
            journals.append(j)
            args = {"path": path, "journal": j, "tag": f"c{cycle}w{w}", "durability": durability}
            procs.append(subprocess.Popen([sys.executable, HERE, "producer", json.dumps(args)],
                                          stdout=subprocess.PIPE))
        for p in procs:
            assert p.stdout.readline().strip() == b"ready", "a producer failed to start"
        time.sleep(rng.uniform(0.02, 0.3))
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(timeout=60)
            assert p.returncode == -signal.SIGKILL, f"a producer died on its own: {p.returncode}"
            p.stdout.close()
    return check_store(path, journals)


def test_killed_producers_leave_each_event_in_all_its_queues_or_none_short(tmp_path):
    assert run_cycles(tmp_path, cycles=3, seed=1) > 0


@pytest.mark.crash
def test_killed_producers_leave_each_event_in_all_its_queues_or_none(tmp_path):
    assert run_cycles(tmp_path, cycles=100, seed=7, durability="always") > 0


def killed_mid_put(args) -> None:
    """Puts one event routed to queues a, b and c and kills itself with
    SIGKILL once its ROUTED record is durable: ``"before-copy"`` before any
    copy (the mark still says everything was copied), ``"mid-copy"`` after
    the copy into queue a (the mark says a copy is under way)."""
    from walq.bus.outbox import Outbox

    broker = walq.open(args["path"], durability="always")
    bus = broker.get_bus("default")
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if args["point"] == "before-copy":
        Outbox.run = die
    else:
        real = Outbox._copy_into_queues

        def copy_a_then_die(self, queues):
            real(self, [(q, copies) for q, copies in queues if q.name == "a"])
            die()

        Outbox._copy_into_queues = copy_a_then_die
    bus.put_events([{"source": "crash", "detail_type": "t", "detail": {"key": "k:0", "even": True}}])
    raise SystemExit("put_events returned: the kill never came")


def opened_fresh(args) -> None:
    """Opens the store (no get_bus, no put_events) and prints what queues
    a, b and c hold, and whether the broker opened its buses."""
    with walq.open(args["path"], durability="os", readonly=args.get("readonly", False)) as b:
        opened = b._buses is not None
        held = {n: b.get_queue(n).stats().total for n in "abc"}
    print(json.dumps({"held": held, "opened_buses": opened}), flush=True)


def _run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, HERE, *argv], capture_output=True, timeout=120)


@pytest.mark.parametrize("point", ["before-copy", "mid-copy"])
def test_a_put_events_killed_after_its_record_is_completed_when_a_broker_opens_the_store(tmp_path, point):
    path = str(tmp_path / "store")
    setup_store(path)
    died = _run("killed-mid-put", json.dumps({"path": path, "point": point}))
    assert died.returncode == -signal.SIGKILL, died.stderr.decode()[-2000:]
    # A reader cannot copy: it opens, changes nothing, and sees the copies missing.
    ro = _run("opened-fresh", json.dumps({"path": path, "readonly": True}))
    assert ro.returncode == 0, ro.stderr.decode()[-2000:]
    before = json.loads(ro.stdout)["held"]
    assert before["b"] == 0 and before["c"] == 0
    # Any writer's open completes it, without get_bus or put_events.
    first = _run("opened-fresh", json.dumps({"path": path}))
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    assert json.loads(first.stdout) == {"held": {"a": 1, "b": 1, "c": 1}, "opened_buses": True}
    # Nothing left to do: the next open reads two small files per bus and opens none.
    again = _run("opened-fresh", json.dumps({"path": path}))
    assert json.loads(again.stdout) == {"held": {"a": 1, "b": 1, "c": 1}, "opened_buses": False}


def test_an_open_leaves_a_copy_to_the_live_process_that_appended_it(tmp_path):
    path = str(tmp_path / "store")
    setup_store(path)
    live = walq.open(path, durability="os")
    bus = live.get_bus("default")
    bus._outbox.run = lambda *a, **k: None  # appended, its copy not yet made (as between the two steps)
    bus.put_events([{"source": "crash", "detail_type": "t", "detail": {"key": "k:0", "even": True}}])
    with walq.open(path, durability="os") as other:
        assert other._buses is None  # the appender has the bus open: its copy is its own to make
        assert other.get_queue("a").stats().total == 0
    live.close()  # gone, its copy never made (the kill -9 case is the test above)
    with walq.open(path, durability="os") as after:
        assert after._buses is not None
        assert [after.get_queue(n).stats().total for n in "abc"] == [1, 1, 1]


if __name__ == "__main__":
    if sys.argv[1] == "producer":
        producer(json.loads(sys.argv[2]))
    elif sys.argv[1] == "killed-mid-put":
        killed_mid_put(json.loads(sys.argv[2]))
    elif sys.argv[1] == "opened-fresh":
        opened_fresh(json.loads(sys.argv[2]))
