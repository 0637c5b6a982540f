"""Power loss over put_events (tests/crashsim.py): the default bus's log and
its three target queues' logs are recorded through ``RecordingIO`` (the
``Broker._log_io`` seam); every state a power cut could leave across all four
logs is rebuilt, the store reopened, and the rules checked: every event whose
put_events returned is in every queue its rules name exactly once, and no
queue holds an event another of its queues lacks.

The four recordings share one clock of operations, so that a crash point is
one instant for every log.  The outbox's ``mark`` is written with plain
``pwrite`` (never synced, so never trusted after a reboot) and is not
recorded: a rebuilt bus directory has none, as after a power cut's reboot it
would not count; the cursor file is recorded (written through the log's I/O).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil

import pytest

import crashsim
import walq
from walq.bus import outbox


@pytest.fixture
def recorded(monkeypatch):
    """``record(root)``: every bus and queue log of the store ``root`` is
    written through a RecordingIO whose operations carry global stamps."""
    recs: dict[str, crashsim.RecordingIO] = {}
    stamps: dict[str, list[int]] = {}
    clock = itertools.count()

    def record(root):
        root = os.path.abspath(root) + os.sep

        def log_io(self, directory):
            d = os.path.abspath(directory)
            parent = os.path.basename(os.path.dirname(d))
            if not d.startswith(root) or parent not in ("queues", "buses") or os.path.basename(d) == "catalog":
                return None
            if d not in recs:
                rec = crashsim.RecordingIO(d)
                mine = stamps[d] = []
                plain = rec._record

                def stamped(op, _plain=plain, _mine=mine):
                    _plain(op)
                    _mine.append(next(clock))

                rec._record = stamped
                recs[d] = rec
            return recs[d]

        monkeypatch.setattr(walq.Broker, "_log_io", log_io)
        return recs, stamps

    yield record
    for r in recs.values():
        r.close()


def _keys(q) -> list[str]:
    out = []
    while True:
        got = q.receive(10, visibility_timeout=600)
        if not got:
            return out
        out += [json.loads(m.body)["detail"]["key"] for m in got]
        q.delete_batch([m.receipt for m in got])


def _check(path: str, confirmed: set, clock) -> None:
    with walq.open(path, durability="os", clock=clock, segment_size=64 * 1024) as b:
        b.get_bus("default").list_rules()
        got = {n: _keys(b.get_queue(n)) for n in "abc"}
    for n, keys in got.items():
        assert len(keys) == len(set(keys)), f"queue {n} holds duplicates: {keys}"
    a, bq, c = (set(got[n]) for n in "abc")
    assert confirmed <= a and confirmed <= c, f"confirmed events lost: {sorted(confirmed - (a & c))}"
    assert a == c, f"a and c differ: {sorted(a ^ c)}"
    assert bq == {k for k in a if int(k[1:]) % 2 == 0}, f"b is not a's even events: {sorted(bq)} vs {sorted(a)}"


def _disk_point(ops, n: int) -> int:
    """The crash point with the same files as after ``n`` operations (a note changes nothing on disk)."""
    while n > 0 and ops[n - 1].kind == crashsim.NOTE:
        n -= 1
    return n


def _run(tmp_path, recorded, clock, monkeypatch, n_states: int | None, seed: int) -> int:
    monkeypatch.setattr(outbox, "CURSOR_EVERY", 3)  # cursors (and their syncs) inside the window
    monkeypatch.setattr(outbox, "CURSOR_PER_DEST", 0)
    root = str(tmp_path / "live")
    recs, stamps = recorded(root)
    b = walq.open(root, durability="always", clock=clock, segment_size=64 * 1024)
    bus = b.get_bus("default")
    qa, qb, qc = (b.create_queue(n) for n in "abc")
    bus.put_rule("all", pattern={"source": ["p"]})
    bus.put_targets("all", [walq.Target("a", qa), walq.Target("c", qc)])
    bus.put_rule("even", pattern={"source": ["p"], "detail": {"even": [True]}})
    bus.put_targets("even", [walq.Target("b", qb)])
    start = {d: len(r.ops) for d, r in recs.items()}

    def entry(k):
        return {"source": "p", "detail_type": "t", "detail": {"key": f"k{k}", "even": k % 2 == 0}}

    for k in range(8):
        keys = [k * 10, k * 10 + 1] if k % 3 == 2 else [k]
        res = bus.put_events([entry(j) for j in keys])
        assert not res.failed
        for r in recs.values():
            r.note(("returned", [f"k{j}" for j in keys]))  # also records what the C path appended meanwhile
    ops = {d: r.finish() for d, r in recs.items()}
    snaps = {d: r.ctl_snapshots for d, r in recs.items()}
    b.close()
    bus_dir = next(d for d in recs if os.path.basename(os.path.dirname(d)) == "buses")
    first = min(stamps[d][start[d]] for d in recs if len(stamps[d]) > start[d])
    last = max(s[-1] for s in stamps.values()) + 1
    rng = random.Random(seed)
    points = list(range(first, last + 1))
    if n_states is not None:
        points = sorted(rng.sample(points, min(n_states, len(points))))
    checked = 0
    for g in points:
        at = {d: _disk_point(ops[d], sum(1 for s in stamps[d] if s < g)) for d in recs}
        per_log = {d: list(crashsim.crash_states(ops[d], snaps[d], seed=g, points={at[d]})) for d in recs}
        bus_states = per_log[bus_dir]
        confirmed = {k for op in ops[bus_dir][:sum(1 for s in stamps[bus_dir] if s < g)]
                     if op.kind == crashsim.NOTE for k in op.note[1]}
        picks = bus_states if n_states is None else [rng.choice(bus_states)]
        for bs in picks:
            scratch = str(tmp_path / "scratch")
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.copytree(root, scratch)
            labels = []
            for d in recs:
                state = bs if d == bus_dir else rng.choice(per_log[d])
                target = os.path.join(scratch, os.path.relpath(d, root))
                shutil.rmtree(target)
                crashsim.materialize(state, target)
                labels.append(state.label)
            try:
                _check(scratch, confirmed, clock)
            except AssertionError as exc:
                raise AssertionError(f"crash at instant {g} ({labels}): {exc}") from None
            checked += 1
    return checked


def test_a_power_cut_over_put_events_leaves_each_event_in_all_its_queues_or_none_short(
        tmp_path, recorded, clock, monkeypatch):
    assert _run(tmp_path, recorded, clock, monkeypatch, n_states=25, seed=1) >= 20


@pytest.mark.crash
def test_a_power_cut_over_put_events_leaves_each_event_in_all_its_queues_or_none(
        tmp_path, recorded, clock, monkeypatch):
    assert _run(tmp_path, recorded, clock, monkeypatch, n_states=None, seed=2) > 100
