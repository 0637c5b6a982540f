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

import json
import os

import pytest

import walq
from powerloss import StampedRecordings, check_every_instant
from walq.bus import outbox


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


def _run(tmp_path, clock, monkeypatch, n_states: int | None, seed: int) -> int:
    monkeypatch.setattr(outbox, "CURSOR_EVERY", 3)  # cursors (and their syncs) inside the window
    monkeypatch.setattr(outbox, "CURSOR_PER_DEST", 0)
    root = str(tmp_path / "live")
    rec = StampedRecordings(monkeypatch, root, ("queues", "buses"))
    try:
        b = walq.open(root, durability="always", clock=clock, segment_size=64 * 1024)
        bus = b.get_bus("default")
        qa, qb, qc = (b.create_queue(n) for n in "abc")
        bus.put_rule("all", pattern={"source": ["p"]})
        bus.put_targets("all", [walq.Target("a", qa), walq.Target("c", qc)])
        bus.put_rule("even", pattern={"source": ["p"], "detail": {"even": [True]}})
        bus.put_targets("even", [walq.Target("b", qb)])
        start = {d: len(r.ops) for d, r in rec.recs.items()}
        for k in range(8):
            keys = [k * 10, k * 10 + 1] if k % 3 == 2 else [k]
            res = bus.put_events([{"source": "p", "detail_type": "t", "detail": {"key": f"k{j}", "even": j % 2 == 0}}
                                  for j in keys])
            assert not res.failed
            rec.note(("returned", [f"k{j}" for j in keys]))
        rec.finish()
        b.close()
        bus_dir = next(d for d in rec.recs if os.path.basename(os.path.dirname(d)) == "buses")
        return check_every_instant(tmp_path, root, rec, start, bus_dir,
                                   lambda path, confirmed: _check(path, confirmed, clock), n_states, seed)
    finally:
        rec.close()


def test_a_power_cut_over_put_events_leaves_each_event_in_all_its_queues_or_none_short(
        tmp_path, clock, monkeypatch):
    assert _run(tmp_path, clock, monkeypatch, n_states=25, seed=1) >= 20


@pytest.mark.crash
def test_a_power_cut_over_put_events_leaves_each_event_in_all_its_queues_or_none(
        tmp_path, clock, monkeypatch):
    assert _run(tmp_path, clock, monkeypatch, n_states=None, seed=2) > 100
