"""Many processes, one log: every record lands whole, exactly once; sequence
numbers are dense and increase in file order; each process's records keep
the order it appended them in - also as seen by a reader tailing the log
while the appenders run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from helpers import parse_payload, segment_paths
from walq.log import Log, LogOptions

TESTS = os.path.dirname(os.path.abspath(__file__))

APPENDER = r"""
import random, sys
sys.path.insert(0, sys.argv[1])
from helpers import payload_for
from walq.log import Log, LogOptions

path, writer, count, mode, segment_size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
rng = random.Random(writer)
log = Log.open(path, LogOptions(durability=mode, segment_size=segment_size, sync_interval=0.005))
sys.stdin.readline()  # start together
i = 0
while i < count:
    if rng.random() < 0.1:
        k = min(rng.randint(2, 20), count - i)
        got = log.append_batch([payload_for(writer, i + j, rng.randint(20, 120)) for j in range(k)])
        assert len(got) == k
        i += k
    else:
        log.append(payload_for(writer, i, rng.randint(20, 120)))
        i += 1
log.close()
print("done", flush=True)
"""


def run_appenders(path: str, writers: int, count: int, mode: str, segment_size: int = 1 << 20, tail: bool = True) -> None:
    """Runs ``writers`` appender processes of ``count`` records each; while
    they run, this process tails the log and checks every record as it
    arrives.  Then checks the whole log after a reopen."""
    total = writers * count
    opts = LogOptions(durability="os", segment_size=segment_size)
    reader = Log.open(path, opts)  # first: creates the log
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, TESTS, path, str(w), str(count), mode, str(segment_size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(writers)
    ]
    try:
        for p in procs:
            p.stdin.write(b"go\n")
            p.stdin.flush()
        next_index = [0] * writers
        seq = 0
        deadline = time.monotonic() + 600  # a guard against hanging, not a timing check
        while tail and seq < total:
            token = reader.change_token()
            batch = reader.read_batch(seq)
            if not batch:
                failed = [p for p in procs if p.poll() not in (None, 0)]
                assert not failed, failed[0].stderr.read().decode()[-3000:]
                assert time.monotonic() < deadline, f"stuck at {seq} of {total}"
                reader.wait_for_change(token, 0.2)
                continue
            for r in batch:
                assert r.seq == seq
                w, i = parse_payload(r.payload)  # intact, or it raises
                assert i == next_index[w], f"writer {w}: record {i} at seq {seq}, expected {next_index[w]}"
                next_index[w] += 1
                seq += 1
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0 and out.strip() == b"done", err.decode()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        reader.close()
    with Log.open(path, opts) as log:  # alone again: recovery runs, changes nothing
        recs = list(log.iter_from())
    assert [r.seq for r in recs] == list(range(total))
    next_index = [0] * writers
    for r in recs:
        w, i = parse_payload(r.payload)
        assert i == next_index[w], f"writer {w}: record {i} at seq {r.seq}, expected {next_index[w]}"
        next_index[w] += 1
    assert next_index == [count] * writers


@pytest.mark.parametrize("mode", ["os", "batch"])
def test_four_processes_append_20000_records_each_exactly_once_in_order(tmp_path, mode):
    run_appenders(str(tmp_path), writers=4, count=20_000, mode=mode)
    assert len(segment_paths(str(tmp_path))) > 1, "the run crossed segment rolls"


def test_four_processes_under_always_share_the_log(tmp_path):
    run_appenders(str(tmp_path), writers=4, count=400, mode="always", segment_size=16384)


def test_threads_and_processes_append_together(tmp_path):
    """Two processes, while this one appends from two threads too."""
    import threading

    from helpers import payload_for

    path = str(tmp_path)
    errors = []

    def local(writer):
        try:
            with Log.open(path, LogOptions(durability="os", segment_size=65536)) as log:
                for i in range(3000):
                    log.append(payload_for(writer, i, 60))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    Log.open(path, LogOptions(durability="os")).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, TESTS, path, str(w), "3000", "os", "65536"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in (0, 1)
    ]
    threads = [threading.Thread(target=local, args=(w,)) for w in (2, 3)]
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    assert not errors, errors
    with Log.open(path, LogOptions(durability="os")) as log:
        recs = list(log.iter_from())
    assert [r.seq for r in recs] == list(range(12000))
    seen = {}
    for r in recs:
        w, i = parse_payload(r.payload)
        assert i == seen.get(w, -1) + 1
        seen[w] = i
    assert seen == {0: 2999, 1: 2999, 2: 2999, 3: 2999}


@pytest.mark.stress
@pytest.mark.parametrize("mode", ["os", "batch", "always"])
def test_eight_processes_append_exactly_once_in_order_under_stress(tmp_path, mode):
    count = 2_000 if mode == "always" else 50_000
    run_appenders(str(tmp_path), writers=8, count=count, mode=mode, segment_size=65536)
