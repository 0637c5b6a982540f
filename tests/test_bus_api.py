"""The event bus: buses, rules, queue targets, put_events routing, the
EventBridge envelope, per-entry failures, input shaping, and refusals that
write nothing."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

import walq


def bodies(q) -> list:
    out = []
    while True:
        got = q.receive(10, visibility_timeout=600)
        if not got:
            return out
        out += [json.loads(m.body) for m in got]
        q.delete_batch([m.receipt for m in got])


def ends(broker) -> tuple:
    """Every bus log's end and the bus catalog's end (to prove a refusal wrote nothing)."""
    svc = broker._bus_service()
    return (svc.catalog.log.end,) + tuple(b._log.end for b in svc._handles.values())


@pytest.fixture
def bus(broker):
    return broker.get_bus("default")


def test_default_bus_exists_and_buses_are_listed_created_and_deleted(broker):
    assert broker.list_buses() == ["default"]
    assert broker.get_bus("default").arn == "arn:aws:events:us-east-1:000000000000:event-bus/default"
    with pytest.raises(walq.BusDoesNotExist):
        broker.get_bus("orders")
    orders = broker.create_bus("orders")
    assert broker.create_bus("orders").name == "orders"
    assert broker.list_buses() == ["default", "orders"]
    assert orders.put_rule("r", pattern={"source": ["x"]}).arn == \
        "arn:aws:events:us-east-1:000000000000:rule/orders/r"
    assert broker.get_bus("default").put_rule("r", pattern={"source": ["x"]}).arn == \
        "arn:aws:events:us-east-1:000000000000:rule/r"
    broker.delete_bus("orders")
    assert broker.list_buses() == ["default"]
    with pytest.raises(walq.BusDoesNotExist):
        broker.delete_bus("orders")
    with pytest.raises(walq.InvalidParameter):
        broker.delete_bus("default")
    assert issubclass(walq.BusDoesNotExist, LookupError) and issubclass(walq.RuleDoesNotExist, LookupError)


def test_events_route_through_matching_enabled_rules_only(broker, bus):
    qa, qb = broker.create_queue("a"), broker.create_queue("b")
    bus.put_rule("orders", pattern={"source": ["shop"], "detail-type": ["order"]})
    bus.put_rule("big", pattern={"detail": {"total": [{"numeric": [">", 100]}]}})
    bus.put_targets("orders", [walq.Target("ta", qa)])
    bus.put_targets("big", [walq.Target("tb", qb)])
    res = bus.put_events([
        {"source": "shop", "detail_type": "order", "detail": {"total": 5}},
        {"source": "shop", "detail_type": "order", "detail": {"total": 500}},
        {"source": "other", "detail_type": "x", "detail": {"total": 7}},
    ])
    assert [i for i, _ in res.successful] == [0, 1, 2] and res.failed == []
    assert sorted(e["detail"]["total"] for e in bodies(qa)) == [5, 500]
    assert [e["detail"]["total"] for e in bodies(qb)] == [500]
    bus.disable_rule("orders")
    assert [r.state for r in bus.list_rules()] == ["ENABLED", "DISABLED"]
    bus.put_events([{"source": "shop", "detail_type": "order", "detail": {"total": 1}}])
    assert bodies(qa) == []
    bus.enable_rule("orders")
    bus.put_events([{"source": "shop", "detail_type": "order", "detail": {"total": 2}}])
    assert [e["detail"]["total"] for e in bodies(qa)] == [2]


def test_the_envelope_is_eventbridge_s(broker, bus, clock):
    q = broker.create_queue("q")
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target("t", q)])
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    res = bus.put_events([{"source": "s", "detail_type": "d", "detail": '{"k": [1, 2]}',
                           "resources": ["arn:aws:s3:::b"], "time": when},
                          {"source": "s", "detail_type": "d", "detail": {}}])
    first, second = bodies(q)
    assert set(first) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert first == {"version": "0", "id": res.successful[0][1], "detail-type": "d", "source": "s",
                     "account": "000000000000", "time": "2024-05-06T07:08:09Z", "region": "us-east-1",
                     "resources": ["arn:aws:s3:::b"], "detail": {"k": [1, 2]}}
    now = dt.datetime.fromtimestamp(clock(), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert second["time"] == now and second["resources"] == [] and second["id"] != first["id"]


def test_bad_entries_fail_alone(broker, bus):
    q = broker.create_queue("q")
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target("t", q)])
    res = bus.put_events([
        {"detail_type": "d", "detail": {}},
        {"source": "s", "detail_type": "d", "detail": {"ok": 1}},
        {"source": "s", "detail": {}},
        {"source": "s", "detail_type": "d"},
        {"source": "s", "detail_type": "d", "detail": "{not json"},
        {"source": "s", "detail_type": "d", "detail": "[1]"},
    ])
    assert [i for i, _ in res.successful] == [1]
    assert [i for i, _ in res.failed] == [0, 2, 3, 4, 5]
    assert "source" in str(res.failed[0][1]) and "detail_type" in str(res.failed[1][1])
    assert "JSON" in str(res.failed[3][1])
    assert all(isinstance(e, walq.InvalidParameter) for _, e in res.failed)
    assert [e["detail"] for e in bodies(q)] == [{"ok": 1}]
    with pytest.raises(walq.BatchError):
        bus.put_events([])
    with pytest.raises(walq.BatchError):
        bus.put_events([{"source": "s", "detail_type": "d", "detail": {}}] * 11)


def test_input_input_path_and_transformer(broker, bus):
    qs = [broker.create_queue(n) for n in ("c", "p", "j", "s")]
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [
        walq.Target("const", qs[0], input={"fixed": True}),
        walq.Target("path", qs[1], input_path="$.detail.items[1]"),
        walq.Target("json", qs[2], input_transformer=walq.InputTransformer(
            paths={"name": "$.detail.name", "n": "$.detail.n", "missing": "$.detail.nope"},
            template='{"who": <name>, "count": <n>, "text": "<name> has <n>", "gone": <missing>, '
                     '"rule": "<aws.events.rule-name>", "arn": "<aws.events.rule-arn>", '
                     '"ev": <aws.events.event>}')),
    ])
    bus.put_targets("r", [walq.Target("text", qs[3], input_transformer=walq.InputTransformer(
        paths={"name": "$.detail.name"}, template='<name> is "here"'))])
    bus.put_events([{"source": "s", "detail_type": "d",
                     "detail": {"name": 'Ann "A"', "n": 3, "items": [{"a": 1}, {"b": 2}]}}])
    assert bodies(qs[0]) == [{"fixed": True}]
    assert bodies(qs[1]) == [{"b": 2}]
    (j,) = bodies(qs[2])
    assert j["who"] == 'Ann "A"' and j["count"] == 3 and j["text"] == 'Ann "A" has 3' and j["gone"] is None
    assert j["rule"] == "r" and j["arn"] == "arn:aws:events:us-east-1:000000000000:rule/r"
    assert j["ev"]["source"] == "s" and "detail" not in j["ev"]
    got = qs[3].receive(1)
    assert got[0].text == 'Ann "A" is "here"'


@pytest.mark.parametrize("make, says", [
    (lambda q: walq.Target("t", q, input="{}", input_path="$.detail"), "at most one"),
    (lambda q: walq.Target("t", q, input="{bad"), "valid JSON"),
    (lambda q: walq.Target("t", q, input_path="detail.x"), "JSON path"),
    (lambda q: walq.Target("bad id!", q), "target id"),
    (lambda q: walq.Target("t", q, retry=walq.RetryPolicy(max_retries=3, max_age=30)), "max_age"),
    (lambda q: walq.Target("t", q, input_transformer=walq.InputTransformer(paths={}, template="<x>")), "<x>"),
    (lambda q: walq.Target("t", q, input_transformer=walq.InputTransformer(
        paths={"aws.events.rule-name": "$.a"}, template="x")), "reserved"),
    (lambda q: walq.Target("t", q, input_transformer=walq.InputTransformer(
        paths={"a": "$.a"}, template='{"<a>": 1}')), "object key"),
    (lambda q: walq.Target("t", "ftp://nowhere"), "endpoint"),
])
def test_refused_targets_write_nothing(broker, bus, make, says):
    q = broker.create_queue("q")
    bus.put_rule("r", pattern={"source": ["s"]})
    before = ends(broker)
    with pytest.raises(walq.InvalidParameter, match=says):
        bus.put_targets("r", [walq.Target("ok", q), make(q)])
    assert ends(broker) == before
    assert bus.list_rules()[0].targets() == []


def test_refused_rules_write_nothing(broker, bus):
    q = broker.create_queue("q")
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target("t", q)])
    before = ends(broker)
    with pytest.raises(walq.InvalidPattern):
        bus.put_rule("bad", pattern={"source": "not-a-list"})
    with pytest.raises(walq.InvalidParameter):
        bus.put_rule("bad name!", pattern={"source": ["s"]})
    with pytest.raises(walq.InvalidParameter):
        bus.put_rule("empty")
    with pytest.raises(walq.InvalidParameter, match="targets"):
        bus.delete_rule("r")  # EventBridge: remove the targets first
    with pytest.raises(walq.RuleDoesNotExist):
        bus.put_targets("nope", [walq.Target("t", q)])
    with pytest.raises(walq.InvalidParameter, match="at most 5"):
        bus.put_targets("r", [walq.Target(f"t{i}", q) for i in range(5)])
    assert ends(broker) == before
    res = bus.remove_targets("r", ["t", "nope"])
    assert res.successful == [(0, "t")] and [i for i, _ in res.failed] == [1]
    bus.delete_rule("r")
    with pytest.raises(walq.RuleDoesNotExist):
        bus.enable_rule("r")


def test_a_rule_change_applies_to_the_next_put_in_another_broker(store, tmp_path):
    one = store()
    two = walq.open(tmp_path / "data", durability="os", clock=one._clock)
    try:
        q = one.create_queue("q")
        bus1, bus2 = one.get_bus("default"), two.get_bus("default")
        bus2.put_events([{"source": "s", "detail_type": "d", "detail": {"n": 0}}])  # caches the routing
        bus1.put_rule("r", pattern={"source": ["s"]})
        bus1.put_targets("r", [walq.Target("t", q)])
        bus2.put_events([{"source": "s", "detail_type": "d", "detail": {"n": 1}}])
        bus1.disable_rule("r")
        bus2.put_events([{"source": "s", "detail_type": "d", "detail": {"n": 2}}])
        assert [e["detail"]["n"] for e in bodies(q)] == [1]
        assert [r.name for r in bus2.list_rules()] == ["r"]
    finally:
        two.close()


def test_events_survive_reopen_and_one_record_per_call(store):
    b = store()
    qs = [b.create_queue(n) for n in "abc"]
    bus = b.get_bus("default")
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target(f"t{i}", q) for i, q in enumerate(qs)])
    start = bus._log.end
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": n}} for n in range(4)])
    assert bus._log.end == start + 1  # one outbox record for the whole call, whatever the targets
    b.close()
    b2 = store()
    for name in "abc":
        assert sorted(e["detail"]["n"] for e in bodies(b2.get_queue(name))) == [0, 1, 2, 3]


def test_pattern_rules_use_one_matcher(broker, bus, monkeypatch):
    from walq.match import policy

    q = broker.create_queue("q")
    for i in range(50):
        bus.put_rule(f"r{i}", pattern={"detail": {"n": [i]}})
        bus.put_targets(f"r{i}", [walq.Target("t", q)])
    calls = []
    real = policy.Policy.matches
    monkeypatch.setattr(policy.Policy, "matches", lambda self, ev: calls.append(1) or real(self, ev))
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": 7}}])
    assert [e["detail"]["n"] for e in bodies(q)] == [7]
    assert len(calls) == 0  # the indexed Matcher, not one evaluation per rule


def test_the_cursor_syncs_every_queue_its_records_name(store, monkeypatch):
    from walq.bus import outbox
    from walq.log import Log

    monkeypatch.setattr(outbox, "CURSOR_EVERY", 4)
    monkeypatch.setattr(outbox, "CURSOR_PER_DEST", 1)
    one = store(durability="batch")  # under "os" a cursor syncs nothing
    qs = {n: one.create_queue(n) for n in "abcd"}
    bus = one.get_bus("default")
    for n, q in qs.items():
        bus.put_rule(n, pattern={"detail": {"to": [n]}})
        bus.put_targets(n, [walq.Target("t", q)])
    synced = []
    real = Log.sync_to
    monkeypatch.setattr(Log, "sync_to", lambda log, upto: synced.append(log.path) or real(log, upto))

    def put(b, to):
        b.get_bus("default").put_events([{"source": "s", "detail_type": "d", "detail": {"to": to}}])

    for to in "abca":  # copied by this broker alone: the fourth writes the cursor
        put(one, to)
    assert {qs[n]._log.path for n in "abc"} <= set(synced) and qs["d"]._log.path not in synced
    # Records another broker copied (as another process would): the cursor
    # must still sync their queues.
    two = store(durability="batch")
    put(two, "d")
    synced.clear()
    for to in "bbbb":
        put(one, to)
    assert {qs["b"]._log.path, qs["d"]._log.path} <= set(synced)
    assert bus._outbox.read_cursor() == bus._log.end


def test_copies_into_one_queue_from_several_rules_keep_distinct_ids_the_record_names(broker, bus):
    from walq.queue import records as R

    q, q2 = broker.create_queue("q"), broker.create_queue("q2")
    for name in ("r1", "r2", "r3", "r4"):
        bus.put_rule(name, pattern={"source": ["s"]})
    bus.put_targets("r1", [walq.Target("t", q)])
    bus.put_targets("r2", [walq.Target("t", q), walq.Target("u", q2)])
    bus.put_targets("r3", [walq.Target("t", q, input_path="$.detail")])
    bus.put_targets("r4", [walq.Target("t", q)])
    start = q._log.end
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": n}} for n in range(2)])
    (rec,) = [json.loads(r.payload) for r in bus._log.iter_from(bus._log.end - 1)]
    named = {}
    for name, _uid, cid, body, _kind in rec["c"]:
        named.setdefault(name, []).append(cid)
    held = [r.payload[:16].hex() for r in q._log.iter_from(start) if r.type == R.SEND]
    assert sorted(held) == sorted(named["q"]) and len(set(held)) == 8
    assert len(set(named["q2"])) == 2
    got = bodies(q)
    assert sorted(e["n"] if "n" in e else e["detail"]["n"] for e in got) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert sum("n" in e for e in got) == 2  # the input_path copies


def test_cursors_come_less_often_when_records_name_many_queues(store, monkeypatch):
    from walq.bus import outbox

    monkeypatch.setattr(outbox, "CURSOR_EVERY", 4)
    monkeypatch.setattr(outbox, "CURSOR_PER_DEST", 2)
    b = store()
    bus = b.get_bus("default")
    for n in "abcd":
        bus.put_rule(n, pattern={"source": ["s"]})
        bus.put_targets(n, [walq.Target("t", b.create_queue(n))])
    for i in range(7):
        bus.put_events([{"source": "s", "detail_type": "d", "detail": {}}])
        assert bus._outbox.read_cursor() == 0  # 4 queues: one cursor per 8 calls
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {}}])
    assert bus._outbox.read_cursor() == bus._log.end


def test_a_copy_the_native_append_refuses_goes_the_python_way_and_the_rest_natively(broker, bus):
    from walq.queue import records as R

    qs = [broker.create_queue(n) for n in "abc"]
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target(f"t{i}", q) for i, q in enumerate(qs)])
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": -1}}])  # opens the queues' writers
    starts = [q._log.end for q in qs]
    # As after a roll elsewhere: b's native writer no longer aimed, so its
    # first copy fails natively (the ones before it are written) and goes
    # the Python way, which aims it again.
    qs[1]._log._writer.fd = -1
    qs[1]._log._writer_seg = None
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": n}} for n in range(3)])
    (rec,) = [json.loads(r.payload) for r in bus._log.iter_from(bus._log.end - 1)]
    for q, start in zip(qs, starts):
        held = [r.payload[:16].hex() for r in q._log.iter_from(start) if r.type == R.SEND]
        assert held == [c[2] for c in rec["c"] if c[0] == q.name]
    assert [sorted(e["detail"]["n"] for e in bodies(q)) for q in qs] == [[-1, 0, 1, 2]] * 3
