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

import json
import os

import pytest

import walq
from powerloss import StampedRecordings, check_every_instant
from walq.topic import fanout


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


def _run(tmp_path, clock, monkeypatch, n_states: int | None, seed: int) -> int:
    monkeypatch.setattr(fanout, "CURSOR_EVERY", 3)  # cursors (and their syncs) inside the window
    monkeypatch.setattr(fanout, "CURSOR_PER_TARGET", 0)
    root = str(tmp_path / "live")
    rec = StampedRecordings(monkeypatch, root, ("queues", "topics"))
    try:
        b = walq.open(root, durability="always", clock=clock, segment_size=64 * 1024)
        t = b.create_topic("t")
        t.subscribe(b.create_queue("a"))
        t.subscribe(b.create_queue("b"), filter_policy={"k": ["x"]})
        t.subscribe(b.create_queue("c"), raw=True)
        start = {d: len(r.ops) for d, r in rec.recs.items()}
        for k in range(8):
            if k % 3 == 2:
                t.publish_batch([{"message": f"m{j}", "attributes": {"k": "x" if j % 2 == 0 else "y"}}
                                 for j in (k * 10, k * 10 + 1)])
                done = [f"m{k * 10}", f"m{k * 10 + 1}"]
            else:
                t.publish(f"m{k}", attributes={"k": "x" if k % 2 == 0 else "y"})
                done = [f"m{k}"]
            rec.note(("returned", done))
        rec.finish()
        b.close()
        topic_dir = next(d for d in rec.recs if os.path.basename(os.path.dirname(d)) == "topics")
        return check_every_instant(tmp_path, root, rec, start, topic_dir,
                                   lambda path, confirmed: _check(path, confirmed, clock), n_states, seed)
    finally:
        rec.close()


def test_a_power_cut_over_publishes_leaves_each_in_all_matching_queues_or_none_short(
        tmp_path, clock, monkeypatch):
    assert _run(tmp_path, clock, monkeypatch, n_states=25, seed=1) >= 20


@pytest.mark.crash
def test_a_power_cut_over_publishes_leaves_each_in_all_matching_queues_or_none(
        tmp_path, clock, monkeypatch):
    assert _run(tmp_path, clock, monkeypatch, n_states=None, seed=2) > 100
