"""Power loss over publishes (tests/crashsim.py): a topic's log and its three
subscribed queues' logs are recorded through ``RecordingIO`` (the
``Broker._log_io`` seam); every state a power cut could leave across all four
logs is rebuilt, the store reopened, and the rules checked: every publish
that returned is in every queue whose filter matches exactly once, and no
queue holds a publish another matching queue lacks.

The four recordings share one clock of operations (each recorded operation
is stamped), so that a crash point is one instant for every log: a log's
state at that instant is one of crashsim's variants for the operations it
had recorded by then.  The fan-out mark (``fanout.ctl``) is never recorded,
as a power cut's reboot makes it untrusted; the cursor file is (written
through the log's I/O object).
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
from walq.topic import fanout


@pytest.fixture
def recorded(monkeypatch):
    """``record(root)``: every topic and queue log of the store ``root`` is
    written through a RecordingIO whose operations carry global stamps."""
    recs: dict[str, crashsim.RecordingIO] = {}
    stamps: dict[str, list[int]] = {}
    clock = itertools.count()

    def record(root):
        root = os.path.abspath(root) + os.sep

        def log_io(self, directory):
            d = os.path.abspath(directory)
            parent = os.path.basename(os.path.dirname(d))
            if not d.startswith(root) or parent not in ("queues", "topics") or os.path.basename(d) == "catalog":
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


def _messages(q, raw):
    out = []
    while True:
        got = q.receive(10, visibility_timeout=600)
        if not got:
            return out
        out += [m.text if raw else json.loads(m.body)["Message"] for m in got]
        q.delete_batch([m.receipt for m in got])


def _check(path: str, confirmed: set, clock) -> None:
    with walq.open(path, durability="os", clock=clock, segment_size=64 * 1024) as b:
        b.get_topic("t")
        got = {n: _messages(b.get_queue(n), raw=(n == "c")) for n in "abc"}
    for n, msgs in got.items():
        assert len(msgs) == len(set(msgs)), f"queue {n} holds duplicates: {msgs}"
    a, bq, c = (set(got[n]) for n in "abc")
    assert confirmed <= a and confirmed <= c, f"confirmed publishes lost: {sorted(confirmed - (a & c))}"
    assert a == c, f"a and c differ: {sorted(a ^ c)}"
    assert bq == {m for m in a if int(m[1:]) % 2 == 0}, f"b is not a's even messages: {sorted(bq)} vs {sorted(a)}"


def _disk_point(ops, n: int) -> int:
    """The crash point with the same files as after ``n`` operations: crashsim
    gives no state right after a note (a note changes nothing on disk)."""
    while n > 0 and ops[n - 1].kind == crashsim.NOTE:
        n -= 1
    return n


def _run(tmp_path, recorded, clock, monkeypatch, n_states: int | None, seed: int) -> int:
    monkeypatch.setattr(fanout, "CURSOR_EVERY", 3)  # cursors (and their syncs) inside the window
    monkeypatch.setattr(fanout, "CURSOR_PER_TARGET", 0)
    root = str(tmp_path / "live")
    recs, stamps = recorded(root)
    b = walq.open(root, durability="always", clock=clock, segment_size=64 * 1024)
    t = b.create_topic("t")
    t.subscribe(b.create_queue("a"))
    t.subscribe(b.create_queue("b"), filter_policy={"k": ["x"]})
    t.subscribe(b.create_queue("c"), raw=True)
    start = {d: len(r.ops) for d, r in recs.items()}
    for k in range(8):
        if k % 3 == 2:
            t.publish_batch([{"message": f"m{j}", "attributes": {"k": "x" if j % 2 == 0 else "y"}}
                             for j in (k * 10, k * 10 + 1)])
            done = [f"m{k * 10}", f"m{k * 10 + 1}"]
        else:
            t.publish(f"m{k}", attributes={"k": "x" if k % 2 == 0 else "y"})
            done = [f"m{k}"]
        for r in recs.values():
            r.note(("returned", done))  # also records what the C path appended meanwhile
    ops = {d: r.finish() for d, r in recs.items()}
    snaps = {d: r.ctl_snapshots for d, r in recs.items()}
    b.close()
    topic_dir = next(d for d in recs if os.path.basename(os.path.dirname(d)) == "topics")
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
        topic_states = per_log[topic_dir]
        # Notes change nothing on disk: those made by the instant count, wherever the state was taken.
        confirmed = {m for op in ops[topic_dir][:sum(1 for s in stamps[topic_dir] if s < g)]
                     if op.kind == crashsim.NOTE for m in op.note[1]}
        picks = topic_states if n_states is None else [rng.choice(topic_states)]
        for ts in picks:
            scratch = str(tmp_path / "scratch")
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.copytree(root, scratch)
            labels = []
            for d in recs:
                state = ts if d == topic_dir else rng.choice(per_log[d])
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


def test_a_power_cut_over_publishes_leaves_each_in_all_matching_queues_or_none_short(
        tmp_path, recorded, clock, monkeypatch):
    assert _run(tmp_path, recorded, clock, monkeypatch, n_states=25, seed=1) >= 20


@pytest.mark.crash
def test_a_power_cut_over_publishes_leaves_each_in_all_matching_queues_or_none(
        tmp_path, recorded, clock, monkeypatch):
    assert _run(tmp_path, recorded, clock, monkeypatch, n_states=None, seed=2) > 100
