"""Schedule rules fired by workers on the broker's clock: each due tick once
with two workers running, the first rate tick one period after the rule,
missed ticks not replayed, a killed claimer's tick neither lost nor doubled."""

from __future__ import annotations

import json

import pytest

import walq
from walq.bus import scheduler
from worker_helpers import running, wait_until


def drain(q) -> list:
    out = []
    while True:
        got = q.receive(10, visibility_timeout=600)
        if not got:
            return out
        out += [json.loads(m.body) for m in got]
        q.delete_batch([m.receipt for m in got])


def test_rate_ticks_fire_once_with_two_workers(store, clock):
    one, two = store(), store()
    q = one.create_queue("ticks")
    bus = one.get_bus("default")
    rule = bus.put_rule("every5", schedule="rate(5 minutes)")
    bus.put_targets("every5", [walq.Target("q", q)])
    start = clock()
    with running(walq.Worker(one)), running(walq.Worker(two)):
        clock.advance(299)
        assert scheduler.fire_due(one._bus_service()) == 0  # not yet: one period after the rule
        for n in range(1, 4):
            clock.advance(300 if n > 1 else 1)
            wait_until(lambda: q.stats().visible >= n, what=f"tick {n}")
        got = drain(q)
    assert len(got) == 3
    assert [e["time"] for e in got] == sorted(e["time"] for e in got)
    e = got[0]
    assert e["source"] == "aws.events" and e["detail-type"] == "Scheduled Event" and e["detail"] == {}
    assert e["resources"] == [rule.arn]
    assert len({x["id"] for x in got}) == 3
    assert scheduler.fire_due(two._bus_service()) == 0  # each tick is claimed once
    assert clock() - start == 900


def test_missed_ticks_are_not_replayed(broker, clock):
    q = broker.create_queue("ticks")
    bus = broker.get_bus("default")
    bus.put_rule("m", schedule="rate(1 minute)")
    bus.put_targets("m", [walq.Target("q", q)])
    clock.advance(3600 + 61 + 30)  # an hour and more with no worker: only the latest tick fires, if fresh
    assert scheduler.fire_due(broker._bus_service()) == 1
    assert scheduler.fire_due(broker._bus_service()) == 0
    assert len(drain(q)) == 1
    bus.disable_rule("m")
    clock.advance(60)
    assert scheduler.fire_due(broker._bus_service()) == 0


def test_cron_rule_fires_at_its_minute(broker, clock):
    import datetime as dt

    q = broker.create_queue("ticks")
    bus = broker.get_bus("default")
    bus.put_rule("c", schedule="cron(0/10 * * * ? *)", pattern=None)
    bus.put_targets("c", [walq.Target("q", q, input_transformer=walq.InputTransformer(
        paths={"t": "$.time"}, template='{"at": <t>}'))])
    now = dt.datetime.fromtimestamp(clock(), dt.timezone.utc)
    clock.advance(600 - (now.minute % 10) * 60 - now.second - now.microsecond / 1e6 + 5)
    assert scheduler.fire_due(broker._bus_service()) == 1
    (got,) = drain(q)
    assert got["at"].endswith("0:00Z")


def test_a_claimer_killed_after_routing_leaves_its_tick_fired_once(broker, clock, monkeypatch):
    q = broker.create_queue("ticks")
    bus = broker.get_bus("default")
    bus.put_rule("r", schedule="rate(1 minute)")
    bus.put_targets("r", [walq.Target("q", q)])
    clock.advance(61)
    svc = broker._bus_service()
    real = svc.catalog.write

    def die(tx, record):
        if record["op"] == "fired":
            raise KeyboardInterrupt("killed between the event and its claim")
        real(tx, record)

    monkeypatch.setattr(svc.catalog, "write", die)
    with pytest.raises(KeyboardInterrupt):
        scheduler.fire_due(svc)
    monkeypatch.setattr(svc.catalog, "write", real)
    assert scheduler.fire_due(svc) == 1
    assert scheduler.fire_due(svc) == 0
    assert len(drain(q)) == 1


def test_a_claimer_killed_after_its_claim_before_routing_leaves_its_tick_to_the_next(broker, clock, monkeypatch):
    q = broker.create_queue("ticks")
    bus = broker.get_bus("default")
    bus.put_rule("r", schedule="rate(1 minute)")
    bus.put_targets("r", [walq.Target("q", q)])
    clock.advance(61)
    svc = broker._bus_service()

    def die(*_a, **_k):
        raise KeyboardInterrupt("killed after the claim, before the event")

    real = bus._route
    monkeypatch.setattr(bus, "_route", die)
    with pytest.raises(KeyboardInterrupt):
        scheduler.fire_due(svc)
    monkeypatch.setattr(bus, "_route", real)
    assert svc.catalog.buses["default"].firing["r"][0] == clock() - 1  # claimed, not fired
    assert scheduler.fire_due(svc) == 1
    assert scheduler.fire_due(svc) == 0
    assert len(drain(q)) == 1
    assert svc.catalog.buses["default"].firing == {}


def test_firing_a_tick_reads_the_bus_log_only_after_a_claimer_died(broker, clock, monkeypatch):
    q = broker.create_queue("ticks")
    bus = broker.get_bus("default")
    bus.put_rule("all", pattern={"source": ["s"]})
    bus.put_targets("all", [walq.Target("q", q)])
    bus.put_rule("r", schedule="rate(1 minute)")
    bus.put_targets("r", [walq.Target("q", q)])
    for i in range(50):
        bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": i}}])
    scans = []
    real = scheduler._already_routed
    monkeypatch.setattr(scheduler, "_already_routed", lambda *a: scans.append(a) or real(*a))
    svc = broker._bus_service()
    for _ in range(3):
        clock.advance(60)
        assert scheduler.fire_due(svc) == 1
    assert scans == []  # a tick's cost does not grow with the bus log
    assert len(drain(q)) == 53


def test_schedule_refusals_write_nothing(broker):
    bus = broker.get_bus("default")
    end = broker._bus_service().catalog.log.end
    with pytest.raises(walq.InvalidParameter):
        bus.put_rule("r", schedule="rate(1 minutes)")
    with pytest.raises(walq.InvalidParameter, match="default bus"):
        broker.create_bus("other").put_rule("r", schedule="rate(1 minute)")
    assert broker._bus_service().catalog.log.end == end + 1  # the create_bus record only
