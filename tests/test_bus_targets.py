"""Topic and bus targets: an event routed to a topic reaches its subscribed
queues, one routed to another bus goes through that bus's rules - both
held when put_events returns."""

from __future__ import annotations

import json

import pytest

import walq


def bodies(q) -> list:
    return [json.loads(m.body) for m in q.receive(10, visibility_timeout=600)]


def test_topic_target_publishes_the_shaped_event(broker):
    t = broker.create_topic("alerts")
    sq = broker.create_queue("sub")
    t.subscribe(sq)
    bus = broker.get_bus("default")
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target("t", t, input_path="$.detail")])
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": 1}}])
    (env,) = bodies(sq)
    assert env["Type"] == "Notification" and env["TopicArn"] == t.arn
    assert json.loads(env["Message"]) == {"n": 1}


def test_bus_target_routes_through_the_other_bus_s_rules(broker):
    other = broker.create_bus("other")
    q = broker.create_queue("q")
    other.put_rule("take", pattern={"detail": {"n": [2]}})
    other.put_targets("take", [walq.Target("q", q, input_transformer=walq.InputTransformer(
        paths={"n": "$.detail.n"}, template='{"n": <n>, "rule": "<aws.events.rule-arn>"}'))])
    bus = broker.get_bus("default")
    bus.put_rule("fwd", pattern={"source": ["s"]})
    bus.put_targets("fwd", [walq.Target("b", other)])
    res = bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": n}} for n in (1, 2, 3)])
    assert len(res.successful) == 3
    assert bodies(q) == [{"n": 2, "rule": "arn:aws:events:us-east-1:000000000000:rule/other/take"}]


def test_refused_topic_and_bus_targets(broker):
    bus = broker.get_bus("default")
    bus.put_rule("r", pattern={"source": ["s"]})
    with pytest.raises(walq.InvalidParameter, match="its own bus"):
        bus.put_targets("r", [walq.Target("b", bus)])
    with pytest.raises(walq.InvalidParameter, match="event itself"):
        bus.put_targets("r", [walq.Target("b", broker.create_bus("x"), input="{}")])
    with pytest.raises(walq.InvalidParameter, match="FIFO topic"):
        bus.put_targets("r", [walq.Target("t", broker.create_topic("f.fifo"))])
    with pytest.raises(walq.InvalidParameter, match="FIFO queue"):
        bus.put_targets("r", [walq.Target("q", broker.create_queue("f.fifo"))])
    assert bus.list_rules()[0].targets() == []
