"""Crash tier for queues: producers and consumers are
killed with SIGKILL at random moments, cycle after cycle, while checkpoints,
compaction and segment rolls run often (small segments, a small
CHECKPOINT_EVERY).  Afterwards:

* every message whose send returned was delivered (by some receive, or by
  the final drain) - none is lost;
* no message whose delete returned was delivered by a receive that started
  after that;
* nothing delivered is garbage.

The default run does a few cycles; ``--crash`` runs 120.
"""

from __future__ import annotations

import random
import re
import signal
import time

import pytest

import walq
from queue_helpers import read_journal, spawn

VT = 1.5  # consumers' visibility timeout: a killed consumer's leases come back soon
SEGMENT = 64 * 1024
BODY = re.compile(r"^c\d+p\d+:\d+$")
BOUND = 120  # seconds: generous bounds for a loaded machine


def wait_until_working(working: dict[str, str], procs, bound: float = BOUND) -> None:
    """Waits until each journal has a line of its kind (a producer's send,
    a consumer's delete returned), failing if a worker exits or ``bound``
    seconds pass."""
    deadline = time.monotonic() + bound
    while not all(any(row[0] == kind for row in read_journal(j)) for j, kind in working.items()):
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"a worker exited before it got going: {dead}"
        assert time.monotonic() < deadline, f"the workers did not get going within {bound} s"
        time.sleep(0.01)  # polling the journals, not a timing check


def run_crash_cycles(tmp_path, cycles: int, seed: int, fifo: bool = False) -> dict:
    rng = random.Random(seed)
    path = str(tmp_path / "data")
    name = "q.fifo" if fifo else "q"
    with walq.open(path, durability="os", segment_size=SEGMENT) as b:
        b.create_queue(name, visibility_timeout=2, **({"content_based_dedup": True} if fifo else {}))
    journals = []
    for cycle in range(cycles):
        durability = rng.choice(["os", "batch", "always"])
        common = dict(path=path, queue=name, durability=durability, segment_size=SEGMENT,
                      checkpoint_every=rng.choice([50, 200, 1000]))
        procs = []
        working = {}  # journal -> the line kind that shows its worker at work
        for i in range(rng.randint(1, 2)):
            j = str(tmp_path / f"c{cycle}p{i}.log")
            journals.append(j)
            extra = {"group": f"g{rng.randint(0, 3)}"} if fifo else {}
            procs.append(spawn("producer", journal=j, tag=f"c{cycle}p{i}", count=10**9,
                               batch=rng.choice([1, 1, 5, 20]), pause=0.004, **extra, **common))
            working[j] = "S"
        for i in range(rng.randint(1, 2)):
            j = str(tmp_path / f"c{cycle}c{i}.log")
            journals.append(j)
            procs.append(spawn("consumer", journal=j, vt=VT, wait=0.2, max_messages=rng.choice([1, 10, 50]),
                               **common))
            working[j] = "D"
        # Half the cycles (the first always) kill the workers at work: once
        # each has journaled a send or a delete, however slowly they started
        # on a loaded machine.  The others kill at a random moment from the
        # start, which may fall while a worker still opens or recovers.
        if cycle == 0 or rng.random() < 0.5:
            wait_until_working(working, procs)
            time.sleep(rng.uniform(0, 0.5))  # a random moment, not a timing check
        else:
            time.sleep(rng.uniform(0.05, 0.9))
        rng.shuffle(procs)
        for p in procs:
            p.send_signal(signal.SIGKILL)
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.05))
        for p in procs:
            p.wait(BOUND)
            assert p.returncode == -signal.SIGKILL, f"a worker died on its own: {p.args} -> {p.returncode}"

    # Drain what is left: leases of killed consumers run out within VT.
    drained = []
    with walq.open(path, durability="os", segment_size=SEGMENT) as b:
        q = b.get_queue(name)
        deadline = time.monotonic() + BOUND
        while q.stats().total and time.monotonic() < deadline:
            msgs = q.receive(1000, wait=1)
            drained += [(m.message_id, m.text) for m in msgs]
            if msgs:
                q.delete_batch([m.receipt for m in msgs])
        assert q.stats().total == 0, "the queue could not be drained"

    sent, receives, deleted = {}, [], {}
    for j in journals:
        for row in read_journal(j):
            if row[0] == "S":
                sent[row[2]] = row[1]
            elif row[0] == "R":
                receives.append((row[2], row[1], float(row[3])))
            elif row[0] == "D":
                deleted[row[1]] = min(float(row[2]), deleted.get(row[1], float("inf")))
    delivered = {mid for mid, _, _ in receives} | {mid for mid, _ in drained}
    lost = set(sent) - delivered
    assert not lost, f"{len(lost)} messages whose send returned were never delivered: {sorted(lost)[:5]}"
    for mid, body, t_before in receives:
        assert BODY.match(body), f"garbage delivered: {body!r}"
        assert sent.get(mid, body) == body, f"{mid} delivered with another body"
        assert not (body in deleted and t_before > deleted[body]), \
            f"{body} was delivered by a receive that started after its delete returned"
    for mid, body in drained:
        assert BODY.match(body) and body not in deleted, f"{body} came back after its delete returned"
    assert len(sent) > 0 and len(deleted) > 0, "the workers never got going"
    return {"cycles": cycles, "sent": len(sent), "deleted": len(deleted), "drained": len(drained)}


def test_killing_producers_and_consumers_loses_nothing_short(tmp_path):
    stats = run_crash_cycles(tmp_path, cycles=4, seed=1)
    print(stats)


@pytest.mark.crash
@pytest.mark.parametrize("seed", [11, 12])
def test_killing_producers_and_consumers_loses_nothing(tmp_path, seed):
    stats = run_crash_cycles(tmp_path, cycles=120, seed=seed)
    print(stats)


@pytest.mark.crash
def test_killing_fifo_producers_and_consumers_loses_nothing(tmp_path):
    stats = run_crash_cycles(tmp_path, cycles=100, seed=21, fifo=True)
    print(stats)
