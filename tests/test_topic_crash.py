"""Publishers killed with SIGKILL at random instants while they publish to a
topic with three subscribed queues: after the store is reopened, every
confirmed publish is in every queue whose filter matches exactly once, and
no queue holds a publish that another matching queue lacks (all or none).

Publishers run as ``python tests/test_topic_crash.py publisher <json>``; each
journals ``P <message>`` only after its publish returned (tests/queue_helpers.py's
Journal: one O_APPEND write per line, which a kill cannot tear).
"""

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
#: Queue "b" takes only the even messages (attribute k = "x").
FILTER_B = {"k": ["x"]}


def setup_store(path: str, fifo: bool = False) -> None:
    suffix = ".fifo" if fifo else ""
    with walq.open(path, durability="os") as b:
        t = b.create_topic("t" + suffix, content_based_dedup=fifo)
        t.subscribe(b.create_queue("a" + suffix))
        t.subscribe(b.create_queue("b" + suffix), filter_policy=FILTER_B)
        t.subscribe(b.create_queue("c" + suffix), raw=True)


def publisher(args) -> None:
    """Publishes ``<tag>:<k>`` for k from ``start`` (attribute k: "x" for even
    k, "y" for odd), singly or in batches; journals each that returned."""
    broker = walq.open(args["path"], durability=args.get("durability", "os"))
    t = broker.get_topic(args["topic"])
    journal = Journal(args["journal"])
    fifo = args["topic"].endswith(".fifo")
    k = args["start"]
    rng = random.Random(k)
    print("ready", flush=True)
    stop = k + args["count"] if args.get("count") else None
    while stop is None or k < stop:
        n = rng.choice((1, 1, 1, 4))
        entries = [{"message": f"{args['tag']}:{i}", "attributes": {"k": "x" if i % 2 == 0 else "y"},
                    **({"group": f"g{i % 3}"} if fifo else {})} for i in range(k, k + n)]
        if n == 1:
            e = entries[0]
            t.publish(e["message"], attributes=e["attributes"], group=e.get("group"))
        else:
            res = t.publish_batch(entries)
            assert not res.failed, res.failed
        journal.write_many(("P", e["message"]) for e in entries)
        k += n
    broker.close()


def _messages(q, raw: bool) -> list[str]:
    out = []
    while True:
        got = q.receive(10, visibility_timeout=600)
        if not got:
            return out
        out += [m.text if raw else json.loads(m.body)["Message"] for m in got]
        q.delete_batch([m.receipt for m in got])


def check_store(path: str, journal_paths: list[str], fifo: bool = False) -> int:
    """Reopens the store and checks the all-or-none, exactly-once rules;
    returns how many confirmed publishes it checked."""
    suffix = ".fifo" if fifo else ""
    confirmed = {row[1] for p in journal_paths for row in read_journal(p) if row[0] == "P"}
    with walq.open(path, durability="os") as b:
        b.get_topic("t" + suffix)  # opening the topic completes a cut-short fan-out too
        got = {name: _messages(b.get_queue(name + suffix), raw=(name == "c")) for name in "abc"}
    for name, msgs in got.items():
        assert len(msgs) == len(set(msgs)), f"queue {name} holds duplicates"
    a, bq, c = (set(got[n]) for n in "abc")
    assert confirmed <= a, f"confirmed publishes missing from a: {sorted(confirmed - a)[:5]}"
    assert confirmed <= c, f"confirmed publishes missing from c: {sorted(confirmed - c)[:5]}"
    assert a == c, f"a and c differ: {sorted(a ^ c)[:5]}"
    even = {m for m in a if int(m.split(':')[1]) % 2 == 0}
    assert bq == even, f"b is not a's even messages: {sorted(bq ^ even)[:5]}"
    if fifo:
        for name in "abc":
            per_group: dict = {}
            for m in got[name]:
                tag, k = m.split(":")
                per_group.setdefault((tag, int(k) % 3), []).append(int(k))
            for ks in per_group.values():
                assert ks == sorted(ks), f"queue {name}: group order broken"
    return len(confirmed)


def run_cycles(tmp_path, cycles: int, seed: int, fifo: bool = False, durability: str = "os") -> int:
    rng = random.Random(seed)
    path = str(tmp_path / "store")
    setup_store(path, fifo)
    journals = []
    topic = "t.fifo" if fifo else "t"
    start = 0
    for cycle in range(cycles):
        procs = []
        for w in range(2):
            j = str(tmp_path / f"journal-{cycle}-{w}")
            journals.append(j)
            args = {"path": path, "topic": topic, "journal": j, "tag": f"c{cycle}w{w}", "start": start,
                    "durability": durability}
            procs.append(subprocess.Popen([sys.executable, HERE, "publisher", json.dumps(args)],
                                          stdout=subprocess.PIPE))
        for p in procs:
            assert p.stdout.readline().strip() == b"ready", "a publisher failed to start"
        time.sleep(rng.uniform(0.02, 0.3))
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(timeout=60)
            assert p.returncode == -signal.SIGKILL, f"a publisher died on its own: {p.returncode}"
            p.stdout.close()
    return check_store(path, journals, fifo)


def test_killed_publishers_leave_each_publish_in_all_matching_queues_or_none_short(tmp_path):
    assert run_cycles(tmp_path, cycles=3, seed=1) > 0


def test_killed_fifo_publishers_keep_all_or_none_and_group_order_short(tmp_path):
    assert run_cycles(tmp_path, cycles=2, seed=2, fifo=True) > 0


@pytest.mark.crash
@pytest.mark.parametrize("seed", [11, 12])
def test_killed_publishers_leave_each_publish_in_all_matching_queues_or_none(tmp_path, seed):
    assert run_cycles(tmp_path, cycles=60, seed=seed) > 0


@pytest.mark.crash
def test_killed_fifo_publishers_keep_all_or_none_and_group_order(tmp_path):
    assert run_cycles(tmp_path, cycles=40, seed=13, fifo=True, durability="always") > 0


if __name__ == "__main__":
    {"publisher": publisher}[sys.argv[1]](json.loads(sys.argv[2]))
