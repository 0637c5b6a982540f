"""``walq worker`` as real processes: SIGTERM finishes the batch in hand and
exits 0, several workers share a queue without delivering a held message
twice, and a worker killed with SIGKILL mid-delivery loses nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import walq
from walq.worker import counters
from worker_helpers import (
    SUB_ARN, envelope, env_for, read_journal, read_journals, spawn_cli, spawn_delivery, wait_until,
)


class Stderr:
    """Collects a process's stderr lines in a thread."""

    def __init__(self, proc):
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._t.start()

    def _read(self, proc):
        for line in proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)


def _finish(proc, timeout=60) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_sigterm_finishes_the_batch_in_hand_and_exits_0(tmp_path):
    data, journal, gate = str(tmp_path / "data"), str(tmp_path / "journal"), str(tmp_path / "gate")
    with walq.open(data) as b:
        q = b.create_queue("jobs")
        ids = {q.send(t).message_id for t in ("a", "b", "c")}
    proc = spawn_cli(data, "jobs=worker_helpers:gated_batch", journal=journal, gate=gate)
    err = Stderr(proc)
    try:
        wait_until(lambda: read_journal(journal), what="the batch to start")
        [start] = read_journal(journal)
        assert start[0] == "start" and set(start[1:]) == ids
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "finishing the batches in hand" in err.text(), what="the worker to notice SIGTERM")
        assert proc.poll() is None  # still finishing the batch in hand
        open(gate, "w").close()
        assert _finish(proc) == 0, err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [line[0] for line in read_journal(journal)] == ["start", "end"]
    with walq.open(data) as b:
        assert b.get_queue("jobs").stats().total == 0  # the batch was acked before exit


def test_two_worker_processes_share_a_queue_without_duplicates(tmp_path):
    data = str(tmp_path / "data")
    n = 300
    with walq.open(data) as b:
        q = b.create_queue("jobs", visibility_timeout=120)
        ids = {r.message_id for _i, r in q.send_batch([f"m{i}" for i in range(100)]).successful}
        ids |= {r.message_id for _i, r in q.send_batch([f"m{i}" for i in range(100, 200)]).successful}
        ids |= {r.message_id for _i, r in q.send_batch([f"m{i}" for i in range(200, n)]).successful}
    journal = str(tmp_path / "journal-{pid}")
    procs = [spawn_cli(data, "jobs=worker_helpers:journal_batch", "--batch-size", "5", "--concurrency", "2",
                       journal=journal) for _ in range(2)]
    errs = [Stderr(p) for p in procs]
    try:
        for e in errs:
            wait_until(lambda: "SIGTERM or Ctrl-C stops" in e.text(), what="both workers to start")
        wait_until(lambda: len(read_journals(str(tmp_path), "journal-")) >= n, what="every message handled")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p, e in zip(procs, errs):
            assert _finish(p) == 0, e.text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    lines = read_journals(str(tmp_path), "journal-")
    got = [line[1] for line in lines]
    assert sorted(got) == sorted(ids)  # each exactly once: none was handed out while held
    assert all(line[2] == "1" for line in lines)
    with walq.open(data) as b:
        assert b.get_queue("jobs").stats().total == 0


def test_a_worker_killed_mid_batch_loses_nothing(tmp_path):
    data, gate = str(tmp_path / "data"), str(tmp_path / "gate")
    with walq.open(data) as b:
        q = b.create_queue("jobs", visibility_timeout=2)
        mid = q.send("precious").message_id
    first = spawn_cli(data, "jobs=worker_helpers:gated_once", journal=str(tmp_path / "j1"), gate=gate)
    try:
        wait_until(lambda: read_journal(str(tmp_path / "j1")), what="the first worker to start the batch")
        first.kill()  # SIGKILL mid-batch
        first.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
    open(gate, "w").close()
    second = spawn_cli(data, "jobs=worker_helpers:gated_once", journal=str(tmp_path / "j2"), gate=gate)
    err = Stderr(second)
    try:
        wait_until(lambda: read_journal(str(tmp_path / "j2")), what="redelivery after the lease ran out")
        wait_until(lambda: "SIGTERM or Ctrl-C stops" in err.text(), what="the banner")
        second.send_signal(signal.SIGTERM)
        assert _finish(second) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert read_journal(str(tmp_path / "j2")) == [["got", mid, "2"]]
    with walq.open(data) as b:
        assert b.get_queue("jobs").stats().total == 0


def test_a_worker_killed_mid_delivery_is_redelivered_after_its_lease(tmp_path):
    data, gate = str(tmp_path / "data"), str(tmp_path / "gate")
    with walq.open(data) as b:
        q = b.create_queue("sub-internal", visibility_timeout=2)
        q.send(json.dumps(envelope("precious", message_id="n-1")))
    first = spawn_delivery(data, "sub-internal", "worker_helpers:note_gated_once", journal=str(tmp_path / "j1"),
                           gate=gate)
    try:
        wait_until(lambda: read_journal(str(tmp_path / "j1")) == [["start", "n-1"]], what="the first attempt")
        first.kill()
        first.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
    second = spawn_delivery(data, "sub-internal", "worker_helpers:note_gated_once", journal=str(tmp_path / "j2"),
                            gate=gate)
    try:
        wait_until(lambda: read_journal(str(tmp_path / "j2")), what="the redelivery")
        with walq.open(data) as b:
            q = b.get_queue("sub-internal")
            wait_until(lambda: q.stats().total == 0, what="the delivery acked")
            wait_until(lambda: counters.read(b, SUB_ARN).delivered == 1, what="the count")
        second.send_signal(signal.SIGTERM)
        assert _finish(second) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert read_journal(str(tmp_path / "j2")) == [["got", "n-1", "2"]]


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "walq", "worker", *args], env=env_for(str(tmp_path / "j")),
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_codes(tmp_path):
    data = str(tmp_path / "data")
    r = _cli(tmp_path, "--data", data, "jobs=worker_helpers:journal_batch")
    assert r.returncode == 3 and "jobs" in r.stderr  # no store, so no queue
    r = _cli(tmp_path, "--data", data)
    assert r.returncode == 4 and "no walq store" in r.stderr
    walq.open(data).close()
    r = _cli(tmp_path, "--data", data, "jobs=worker_helpers:journal_batch")
    assert r.returncode == 3 and "'jobs' does not exist" in r.stderr
    r = _cli(tmp_path, "--data", data, "jobs")
    assert r.returncode == 2 and "QUEUE=HANDLER" in r.stderr
    r = _cli(tmp_path, "--data", data, "jobs=no_such_module_xyz:f")
    assert r.returncode == 2 and "cannot import" in r.stderr
    r = _cli(tmp_path, "--data", data, "--concurrency", "0")
    assert r.returncode == 2 and "--concurrency" in r.stderr
    r = _cli(tmp_path, "--data", data, "--batch-size", "5000")
    assert r.returncode == 2 and "--batch-size" in r.stderr


@pytest.mark.stress
def test_workers_killed_and_restarted_at_random_lose_nothing(tmp_path):
    rng = random.Random(int(os.environ.get("WORKER_STRESS_SEED", "0")) or None)
    data = str(tmp_path / "data")
    n = 2000
    with walq.open(data) as b:
        q = b.create_queue("jobs", visibility_timeout=2)
        ids = set()
        for start in range(0, n, 500):
            ids |= {r.message_id for _i, r in q.send_batch([f"m{i}" for i in range(start, start + 500)]).successful}
    journal = str(tmp_path / "journal-{pid}")
    args = ("jobs=worker_helpers:slow_journal_batch", "--batch-size", "7", "--concurrency", "3")
    procs = [spawn_cli(data, *args, journal=journal) for _ in range(3)]
    try:
        for _cycle in range(8):
            time.sleep(rng.uniform(0.2, 1.5))
            victim = rng.randrange(len(procs))
            procs[victim].kill()
            procs[victim].wait(60)
            procs[victim] = spawn_cli(data, *args, journal=journal)
        with walq.open(data) as b:
            q = b.get_queue("jobs")
            wait_until(lambda: q.stats().total == 0, timeout=300, what="the queue to drain")
        errs = [Stderr(p) for p in procs]
        for e in errs:
            wait_until(lambda: "SIGTERM or Ctrl-C stops" in e.text(), what="the workers to start")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p, e in zip(procs, errs):
            assert _finish(p) == 0, e.text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    lines = read_journals(str(tmp_path), "journal-")
    got = {line[1] for line in lines}
    assert got == ids  # every message handled at least once; none lost to a kill
