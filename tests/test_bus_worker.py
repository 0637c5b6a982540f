"""HTTP and handler targets of the event bus, delivered by a walq.Worker:
each gets the event (or its shaped input); an exhausted delivery goes to the
target's dead-letter queue with EventBridge's four attributes."""

from __future__ import annotations

import json
import threading

import pytest

import walq
from worker_helpers import Endpoint, running, wait_until

got: list = []
_mu = threading.Lock()


def take(event):
    """A handler target: records what it was called with."""
    with _mu:
        got.append(event)


def broken(event):
    raise ValueError("the handler is broken")


@pytest.fixture(autouse=True)
def _clear():
    got.clear()


def test_handler_and_http_targets_get_the_event(broker):
    bus = broker.get_bus("default")
    bus.put_rule("r", pattern={"source": ["s"]})
    endpoint = Endpoint()
    try:
        bus.put_targets("r", [walq.Target("h", take),
                              walq.Target("w", endpoint.url, input_path="$.detail")])
        res = bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": 1}}])
        assert broker.list_queues() == []  # the targets' internal queues are not the user's
        with running(walq.Worker(broker)):
            wait_until(lambda: len(got) == 1 and endpoint.count() == 1, what="both deliveries")
        assert got[0]["id"] == res.successful[0][1] and got[0]["detail"] == {"n": 1}
        assert json.loads(endpoint.requests[0]["body"]) == {"n": 1}
    finally:
        endpoint.close()


def test_an_exhausted_delivery_is_dead_lettered_with_eventbridge_attributes(broker):
    bus = broker.create_bus("orders")
    dlq = broker.create_queue("dlq")
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target("h", broken, retry=walq.RetryPolicy.eventbridge(max_retries=0),
                                      dead_letter=dlq)])
    bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": 2}}])
    with running(walq.Worker(broker)):
        wait_until(lambda: dlq.stats().visible == 1, what="the dead letter")
    [m] = dlq.receive(1)
    assert json.loads(m.body)["detail"] == {"n": 2}
    assert m.attributes["ERROR_CODE"] == "ValueError"
    assert "broken" in m.attributes["ERROR_MESSAGE"]
    assert m.attributes["RULE_ARN"] == "arn:aws:events:us-east-1:000000000000:rule/orders/r"
    assert m.attributes["TARGET_ARN"] == f"{__name__}:broken"


def test_removing_a_target_drops_its_internal_queue(broker):
    bus = broker.get_bus("default")
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target("h", take)])
    (t,) = bus.list_rules()[0].targets()
    assert t["kind"] == "handler" and broker.get_queue(t["queue"])
    bus.remove_targets("r", ["h"])
    with pytest.raises(walq.QueueDoesNotExist):
        broker.get_queue(t["queue"])
    assert bus.list_rules()[0].targets() == []
