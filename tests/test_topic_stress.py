"""Four publishing and four consuming processes on one topic with three
subscribed queues (one filtered): every publish reaches every matching queue
exactly once, and each queue's consumers see each of its messages once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from queue_helpers import read_journal, spawn  # noqa: E402

import walq  # noqa: E402

CRASH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_topic_crash.py")


def run(tmp_path, per_publisher: int) -> None:
    path = str(tmp_path / "store")
    with walq.open(path, durability="os") as b:
        t = b.create_topic("t")
        for name in "abc":
            t.subscribe(b.create_queue(name), raw=True, filter_policy={"k": ["x"]} if name == "b" else None)
    done = str(tmp_path / "done")
    consumers = []
    for i, name in enumerate("abca"):  # two consumers share queue a
        consumers.append((name, str(tmp_path / f"c{i}"), spawn("consumer", path=path, queue=name,
                                                               journal=str(tmp_path / f"c{i}"), done=done,
                                                               vt=120, wait=0.5, durability="os")))
    publishers = []
    for w in range(4):
        args = {"path": path, "topic": "t", "journal": str(tmp_path / f"p{w}"), "tag": f"w{w}", "start": 0,
                "count": per_publisher, "durability": "always" if w % 2 else "os"}
        publishers.append(subprocess.Popen([sys.executable, CRASH, "publisher", json.dumps(args)],
                                           stdout=subprocess.DEVNULL))
    for p in publishers:
        assert p.wait(timeout=600) == 0, "a publisher failed"
    open(done, "w").close()
    for _name, _j, p in consumers:
        assert p.wait(timeout=600) == 0, "a consumer failed"
    published = set()
    for w in range(4):
        published |= {row[1] for row in read_journal(str(tmp_path / f"p{w}")) if row[0] == "P"}
    assert len(published) >= 4 * per_publisher
    received: dict[str, list] = {n: [] for n in "abc"}
    for name, journal, _p in consumers:
        received[name] += [row[1] for row in read_journal(journal) if row[0] == "R"]
    for name, got in received.items():
        assert len(got) == len(set(got)), f"queue {name}: a message was received twice"
    assert set(received["a"]) == published and set(received["c"]) == published
    assert set(received["b"]) == {m for m in published if int(m.split(":")[1]) % 2 == 0}


def test_four_publishers_and_four_consumers_short(tmp_path):
    run(tmp_path, per_publisher=60)


@pytest.mark.stress
def test_four_publishers_and_four_consumers(tmp_path):
    run(tmp_path, per_publisher=10000)
