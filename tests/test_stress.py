"""Stress tier (``--stress``): many processes mixing every queue operation -
send, send_batch, receive, delete, delete_batch, change_visibility, purge,
redrive from a dead-letter queue - on standard and FIFO queues, bodies up to
64 KB, small segments (so rolls, checkpoints and trims run all the time),
every durability mode, while a random worker is killed with SIGKILL every
0.2-1.5 s and restarted.

Then, with every worker killed: the store is opened (recovery) and drained,
``walq verify`` must find it clean, no worker may have died on its own (a
CorruptionError, a garbage body, a failed call), and from the workers'
journals (tests/stress_worker.py):

* every message whose send returned and was logged was delivered - by some
  receive or by the final drain - unless a purge of its queue ended after
  its send started;
* on the queues without a dead-letter policy, no receive that started after
  a delete of the message returned delivered it again.

Environment: WALQ_STRESS_SECONDS (default 180), WALQ_STRESS_WORKERS (14),
WALQ_STRESS_SEED (random; printed, so that a failing mix can be rerun).
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

import walq
from queue_helpers import read_journal
from stress_worker import QUEUES, body_ok, create_queues

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stress_worker.py")
SEGMENT = 256 * 1024


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class Slot:
    """One worker place: the current process and every incarnation's files."""

    def __init__(self, tmp_path, index: int):
        self.tmp_path = tmp_path
        self.index = index
        self.incarnation = 0
        self.proc: subprocess.Popen | None = None
        self.journals: list[str] = []
        self.errs: list[str] = []

    def start(self, path: str, rng: random.Random) -> None:
        self.incarnation += 1
        stem = self.tmp_path / f"w{self.index}-{self.incarnation}"
        args = dict(path=path, tag=f"w{self.index}i{self.incarnation}", seed=rng.randrange(1 << 30),
                    journal=f"{stem}.log", segment_size=SEGMENT,
                    durability=rng.choice(["os", "os", "batch", "always"]),
                    checkpoint_every=rng.choice([0, 200, 2000]))
        self.journals.append(args["journal"])
        self.errs.append(f"{stem}.err")
        with open(self.errs[-1], "wb") as err:
            self.proc = subprocess.Popen([sys.executable, WORKER, json.dumps(args)],
                                         stdout=subprocess.DEVNULL, stderr=err)

    def kill(self) -> None:
        """SIGKILLs the current process; fails if it had died on its own."""
        p = self.proc
        died = p.poll()
        if died is None:
            p.send_signal(signal.SIGKILL)
            died = p.wait(60)
            if died == -signal.SIGKILL:
                return
        raise AssertionError(f"worker {self.index} (incarnation {self.incarnation}) died on its own "
                             f"({died}):\n{open(self.errs[-1], errors='replace').read()[-3000:]}")


def drain(path: str) -> dict[str, list[str]]:
    """Opens the store (running recovery) and receives and deletes until
    every queue is empty; returns the message ids delivered, per queue."""
    out = {name: [] for name in QUEUES}
    with walq.open(path, durability="os", segment_size=SEGMENT) as b:
        queues = {name: b.get_queue(name) for name in QUEUES}
        # Until empty, or until nothing came for 180 s: the backlog grows
        # with the run's length and the drain with the machine's load, so
        # only a lack of progress is a failure.
        deadline = time.monotonic() + 180
        wait = 0.0  # long-poll only once a whole pass found nothing
        while time.monotonic() < deadline:
            left, got = 0, 0
            for name, q in queues.items():
                msgs = q.receive(1000, wait=wait, visibility_timeout=60)
                got += len(msgs)
                if msgs:
                    deadline = time.monotonic() + 180
                for m in msgs:
                    assert body_ok(m.body), f"garbage in {name} after recovery: {m.body[:80]!r}"
                out[name] += [m.message_id for m in msgs]
                if msgs:
                    res = q.delete_batch([m.receipt for m in msgs])
                    assert not res.failed, res.failed
                left += q.stats().total
            if left == 0:
                break
            wait = 0.0 if got else 0.2
        assert left == 0, f"{left} messages could not be drained (none came for 180 s)"
    return out


def check_journals(slots: list[Slot], drained: dict[str, list[str]]) -> dict:
    sent: dict[str, tuple[str, float]] = {}
    delivered: set[str] = set()
    receives: list[tuple[str, str, float]] = []
    deleted: dict[tuple[str, str], float] = {}
    purges: dict[str, list[float]] = {}
    moved = 0
    for slot in slots:
        for j in slot.journals:
            for row in read_journal(j):
                kind = row[0]
                if kind == "S":
                    sent[row[2]] = (row[1], float(row[3]))
                elif kind == "R":
                    delivered.add(row[2])
                    receives.append((row[1], row[2], float(row[3])))
                elif kind == "D":
                    key = (row[1], row[2])
                    deleted[key] = min(float(row[3]), deleted.get(key, float("inf")))
                elif kind == "P":
                    purges.setdefault(row[1], []).append(float(row[3]))
                elif kind == "M":
                    moved += int(row[2])
    for ids in drained.values():
        delivered.update(ids)
    lost = []
    for mid, (queue, t_send) in sent.items():
        if mid in delivered:
            continue
        if any(t_end >= t_send for t_end in purges.get(queue, ())):
            continue  # a purge may have taken it
        lost.append((queue, mid))
    assert not lost, f"{len(lost)} messages whose send returned were never delivered: {lost[:5]}"
    # The dead-letter pair is left out: a delete of a receipt whose message
    # moved to the DLQ meanwhile succeeds and leaves the moved copy.
    again = [(q, mid) for q, mid, t0 in receives
             if q in ("std", "q.fifo") and t0 > deleted.get((q, mid), float("inf"))]
    assert not again, f"delivered again after its delete returned: {again[:5]}"
    for name, ids in drained.items():
        if name in ("std", "q.fifo"):
            back = [mid for mid in ids if (name, mid) in deleted]
            assert not back, f"{name}: came back after its delete returned: {back[:5]}"
    assert len(sent) > 100 and len(deleted) > 100, "the workers never got going"
    return {"sent": len(sent), "delivered": len(delivered), "deleted": len(deleted),
            "purges": sum(map(len, purges.values())), "moved back": moved,
            "drained": sum(map(len, drained.values()))}


@pytest.mark.stress
def test_killing_workers_that_mix_every_operation_loses_and_corrupts_nothing(tmp_path):
    seconds = _env_int("WALQ_STRESS_SECONDS", 180)
    workers = _env_int("WALQ_STRESS_WORKERS", 14)
    seed = _env_int("WALQ_STRESS_SEED", random.randrange(1 << 30))
    print(f"stress: {seconds} s, {workers} workers, WALQ_STRESS_SEED={seed}")
    rng = random.Random(seed)
    path = str(tmp_path / "data")
    with walq.open(path, durability="always", segment_size=SEGMENT) as b:
        create_queues(b)
    slots = [Slot(tmp_path, i) for i in range(workers)]
    kills = 0
    try:
        for slot in slots:
            slot.start(path, rng)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.2, 1.5))
            slot = rng.choice(slots)
            slot.kill()
            kills += 1
            slot.start(path, rng)
    finally:
        failures = []
        for slot in slots:
            try:
                slot.kill()
            except AssertionError as exc:
                failures.append(str(exc))
    assert not failures, "\n\n".join(failures)

    drained = drain(path)
    verify = subprocess.run([sys.executable, "-m", "walq", "verify", "--data", path],
                            capture_output=True, text=True, timeout=600)
    assert verify.returncode == 0, f"walq verify: {verify.stdout[-3000:]}{verify.stderr[-3000:]}"
    stats = check_journals(slots, drained)
    stats["kills"] = kills
    print(stats)
