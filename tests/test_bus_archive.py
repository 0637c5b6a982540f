"""Archives and replays: an archive keeps the bus's matching events; a
replay run by a worker sends those of a time range again, with
``replay-name``, RUNNING then COMPLETED, and resumes after a kill."""

from __future__ import annotations

import datetime as dt
import json

import pytest

import walq
from walq.bus import archive as A
from worker_helpers import running, wait_until


def drain(q) -> list:
    out = []
    while True:
        got = q.receive(10, visibility_timeout=600)
        if not got:
            return out
        out += [json.loads(m.body) for m in got]
        q.delete_batch([m.receipt for m in got])


def at(h: int) -> dt.datetime:
    return dt.datetime(2026, 1, 1, h, tzinfo=dt.timezone.utc)


@pytest.fixture
def setup(broker):
    bus = broker.get_bus("default")
    q = broker.create_queue("q")
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target("q", q)])
    arch = bus.create_archive("keep", pattern={"detail": {"keep": [True]}})
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": h, "keep": h != 3}, "time": at(h)}
                    for h in range(1, 7)])
    assert len(drain(q)) == 6
    return broker, bus, q, arch


def test_a_replay_sends_the_archived_range_again_with_replay_name(setup):
    broker, bus, q, arch = setup
    assert arch.arn == "arn:aws:events:us-east-1:000000000000:archive/keep"
    assert [a.name for a in bus.list_archives()] == ["keep"]
    r = bus.start_replay("again", arch, at(2), at(5))
    assert r.state == "RUNNING"
    with running(walq.Worker(broker)):
        wait_until(lambda: r.state == "COMPLETED", what="the replay to complete")
    got = drain(q)
    assert sorted(e["detail"]["n"] for e in got) == [2, 4]  # 3 was not archived; 5 is the end
    assert {e["replay-name"] for e in got} == {"again"}
    # Replayed events are not archived again.
    r2 = bus.start_replay("twice", "keep", 0, at(23).timestamp())
    assert A.run_replays(broker._bus_service()) == 1 and r2.state == "COMPLETED"
    assert sorted(e["detail"]["n"] for e in drain(q)) == [1, 2, 4, 5, 6]


def test_a_replay_killed_between_its_two_steps_resumes_without_doubles(setup, monkeypatch):
    broker, bus, q, arch = setup
    monkeypatch.setattr(A, "BATCH", 2)
    r = bus.start_replay("again", arch, 0, at(23).timestamp(), rules=["r"])
    svc = broker._bus_service()
    real = svc.catalog.write
    calls = []

    def die(tx, record):
        if record["op"] == "replay_state":
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt("killed after routing, before its position")
        real(tx, record)

    monkeypatch.setattr(svc.catalog, "write", die)
    A.run_replays(svc)
    with pytest.raises(KeyboardInterrupt):
        A.run_replays(svc)
    monkeypatch.setattr(svc.catalog, "write", real)
    while r.state == "RUNNING":
        A.run_replays(svc)
    assert sorted(e["detail"]["n"] for e in drain(q)) == [1, 2, 4, 5, 6]


def test_a_replay_killed_after_claiming_a_batch_before_routing_it_routes_it_once(setup, monkeypatch):
    broker, bus, q, arch = setup
    r = bus.start_replay("again", arch, 0, at(23).timestamp(), rules=["r"])
    svc = broker._bus_service()

    def die(*_a, **_k):
        raise KeyboardInterrupt("killed after the claim, before routing")

    real = bus._route
    monkeypatch.setattr(bus, "_route", die)
    with pytest.raises(KeyboardInterrupt):
        A.run_replays(svc)
    monkeypatch.setattr(bus, "_route", real)
    assert svc.catalog.replays["again"]["claim"][0] == 0
    while r.state == "RUNNING":
        A.run_replays(svc)
    assert sorted(e["detail"]["n"] for e in drain(q) if e.get("replay-name") == "again") == [1, 2, 4, 5, 6]


def test_a_replay_reads_the_bus_log_only_after_a_worker_died(setup, monkeypatch):
    broker, bus, q, arch = setup
    monkeypatch.setattr(A, "BATCH", 2)  # several batches
    scans = []
    real = A._routed_next
    monkeypatch.setattr(A, "_routed_next", lambda *a: scans.append(a) or real(*a))
    r = bus.start_replay("again", arch, 0, at(23).timestamp(), rules=["r"])
    svc = broker._bus_service()
    batches = 0
    while r.state == "RUNNING":
        batches += A.run_replays(svc)
    assert batches > 2 and scans == []  # a replay's cost grows with its archive, not its square
    assert sorted(e["detail"]["n"] for e in drain(q) if e.get("replay-name") == "again") == [1, 2, 4, 5, 6]


def test_archive_and_replay_refusals(setup):
    broker, bus, q, arch = setup
    with pytest.raises(walq.InvalidParameter, match="already exists"):
        bus.create_archive("keep")
    with pytest.raises(walq.InvalidPattern):
        bus.create_archive("bad", pattern={"source": "x"})
    with pytest.raises(walq.InvalidParameter, match="after start"):
        bus.start_replay("p", arch, at(5), at(2))
    with pytest.raises(walq.RuleDoesNotExist):
        bus.start_replay("p", arch, at(1), at(2), rules=["nope"])
    with pytest.raises(walq.InvalidParameter, match="does not exist"):
        bus.start_replay("p", "ghost", at(1), at(2))


def test_a_replay_killed_after_routing_a_short_batch_misses_nothing_archived_meanwhile(setup, monkeypatch):
    # The first batch ends at the archive's end; the worker dies before
    # recording its position; more events are archived; the next worker must
    # not take the longer batch it now reads for the one already routed.
    broker, bus, q, arch = setup
    r = bus.start_replay("again", arch, 0, at(23).timestamp(), rules=["r"])
    svc = broker._bus_service()
    real = svc.catalog.write

    def die(tx, record):
        if record["op"] == "replay_state":
            raise KeyboardInterrupt("killed after routing, before its position")
        real(tx, record)

    monkeypatch.setattr(svc.catalog, "write", die)
    with pytest.raises(KeyboardInterrupt):
        A.run_replays(svc)
    monkeypatch.setattr(svc.catalog, "write", real)
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": h, "keep": True}, "time": at(h)}
                    for h in (7, 8)])
    while r.state == "RUNNING":
        A.run_replays(svc)
    got = drain(q)
    assert sorted(e["detail"]["n"] for e in got if "replay-name" not in e) == [7, 8]  # put just now
    assert sorted(e["detail"]["n"] for e in got if e.get("replay-name") == "again") == [1, 2, 4, 5, 6, 7, 8]
