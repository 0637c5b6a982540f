"""walq crash-bench: kill -9 workers, recover, check the invariants.

A short run is part of the default tier; long runs (hundreds of kills, both
kill styles, every durability mode) are in the crash tier (``--crash``).
The checker is tested too: it must be able to fail.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import walq
from walq.tools import crashbench as cb
from walq.cli import main
from walq.tools.inspect import queue_dir


def bench(tmp_path, *args):
    report = tmp_path / "report.json"
    r = CliRunner().invoke(main, ["--data", str(tmp_path / "store"), "crash-bench", "--report", str(report),
                                  *map(str, args)])
    return r, report


def assert_held(r, report):
    assert r.exit_code == 0, r.output
    doc = json.loads(report.read_text())
    s = doc["summary"]
    assert doc["ok"] is True and doc["violations"] == []
    assert s["lost"] == s["duplicated"] == s["corrupt"] == 0
    return doc


# -- the pieces ------------------------------------------------------------------------------


def test_bodies_check_themselves():
    body = cb.make_body("3.1.42")
    assert cb.check_body(body) == "3.1.42"
    for bad in (body[:-1], body[:8] + b"?" + body[9:], b"no separator", b"\xff\xfe|x"):
        with pytest.raises(ValueError):
            cb.check_body(bad)


def test_the_ledger_flags_a_receive_that_started_after_the_delete_returned(tmp_path):
    rep = tmp_path / "r.log"
    rep.write_text("S\nC a b c\nR 1.0 a b\nA a b\nD 2.0 a b\nR 1.5 b\nR 2.5 a\nC d e")  # last line cut
    ledger = cb.Ledger()
    ledger.read(str(rep), "w")
    assert ledger.confirmed == {"a", "b", "c"}  # "d e" has no newline: never confirmed
    assert ledger.attempted == {"a", "b"} and ledger.deleted_at == {"a": 2.0, "b": 2.0}
    assert ledger.duplicated() == ["a"]  # b's second receive started before the delete returned
    assert ledger.deliveries == {"a": 2, "b": 2}


def test_the_final_check_reports_a_lost_send_and_a_redelivered_delete(tmp_path):
    data = str(tmp_path / "store")
    with walq.open(data) as b:
        q = b.create_queue(cb.QUEUE, visibility_timeout=2)
        for key in ("k1", "k2"):
            q.send(cb.make_body(key))
    ledger = cb.Ledger()
    ledger.confirmed = {"k1", "k2", "k3"}  # k3 was confirmed but is not stored
    ledger.deleted_at = {"k2": 0.0}  # k2's delete "returned" yet it is still there
    result = cb.BenchResult(config={})
    cb._drain(data, ledger, result, {"durability": "always", "segment_size": 1 << 20}, 2)
    assert result.lost == ["k3"]
    assert result.duplicated == ["k2"]
    assert result.drained == 2


def test_replay_finds_the_live_messages_of_a_queue_log(tmp_path):
    data = str(tmp_path / "store")
    with walq.open(data) as b:
        q = b.create_queue(cb.QUEUE)
        for key in ("a", "b", "c"):
            q.send(cb.make_body(key))
        [m] = q.receive(1)
        m.ack()
    live, records, nbytes, segments, bad = cb.replay(queue_dir(data, cb.QUEUE))
    assert sorted(live.values()) == ["b", "c"] and records == 5 and segments == 1 and bad == []


# -- short runs (default tier) ------------------------------------------------------------------


def test_a_short_crash_bench_holds_every_invariant(tmp_path):
    # Small segments and frequent checkpoints (compaction under the kills)
    # are the crash tier's job.
    r, report = bench(tmp_path, "--cycles", 3, "--producers", 1, "--consumers", 2, "--run-time", 0.4,
                      "--seed", 11)
    doc = assert_held(r, report)
    s = doc["summary"]
    assert s["cycles"] == 3 and s["open_s"]["n"] == 3 and s["open_s"]["p50"] > 0
    assert s["messages_checked"] > 0 and s["confirmed_sends"] > 0
    assert len(doc["cycles"]) == 3 and all(len(c["kills"]) == 3 for c in doc["cycles"])
    assert "recovery (open) time: p50" in r.stdout and "OK: every invariant held" in r.stdout
    assert doc["config"]["seed"] == 11 and doc["config"]["kill_group"] is False


def test_crash_bench_as_a_process_killing_the_whole_group(tmp_path):
    report = tmp_path / "report.json"
    p = subprocess.run([sys.executable, "-m", "walq", "--data", str(tmp_path / "store"), "crash-bench",
                        "--cycles", "2", "--producers", "1", "--consumers", "1", "--run-time", "0.3",
                        "--kill-group", "--durability", "os", "--report", str(report)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(report.read_text())
    assert doc["ok"] and doc["config"]["kill_group"] is True
    assert all(c["group_kill"] for c in doc["cycles"])
    assert "killed all at once (killpg)" in p.stdout


def test_plot_without_matplotlib_fails_before_running(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    r, report = bench(tmp_path, "--cycles", 1, "--plot", tmp_path / "p.png")
    assert r.exit_code == 4
    assert "--plot needs matplotlib" in r.stderr and "pip install 'walq[plot]'" in r.stderr
    assert not report.exists() and not (tmp_path / "store").exists()


def test_plot_draws_recovery_time_against_log_size(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    r, report = bench(tmp_path, "--cycles", 2, "--producers", 1, "--consumers", 1, "--run-time", 0.3,
                      "--plot", png)
    assert_held(r, report)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_crash_bench_needs_a_worker(tmp_path):
    r, _ = bench(tmp_path, "--producers", 0, "--consumers", 0)
    assert r.exit_code == 2


# -- long runs (crash tier) ------------------------------------------------------------------------


@pytest.mark.crash
@pytest.mark.parametrize("durability,producers,consumers", [("always", 2, 2), ("os", 1, 3)])
def test_long_crash_bench_each_worker_killed_at_its_own_moment(tmp_path, durability, producers, consumers):
    # In "os" mode producers outrun consumers by far; one producer keeps the
    # store (and the per-cycle checks, which read all of it) small.
    r, report = bench(tmp_path, "--cycles", 60, "--producers", producers, "--consumers", consumers,
                      "--run-time", 0.8, "--durability", durability, "--segment-size", 262144,
                      "--checkpoint-every", 100)
    doc = assert_held(r, report)
    assert doc["summary"]["cycles"] == 60


@pytest.mark.crash
def test_crash_bench_compacting_often_under_the_kills(tmp_path):
    r, report = bench(tmp_path, "--cycles", 40, "--producers", 1, "--consumers", 2, "--run-time", 0.4,
                      "--segment-size", 65536, "--checkpoint-every", 20)
    assert_held(r, report)


@pytest.mark.crash
def test_long_crash_bench_whole_group_killed_small_segments(tmp_path):
    r, report = bench(tmp_path, "--cycles", 50, "--producers", 2, "--consumers", 3, "--run-time", 1.0,
                      "--kill-group", "--durability", "batch", "--segment-size", 65536, "--checkpoint-every", 30)
    doc = assert_held(r, report)
    assert doc["summary"]["cycles"] == 50
