"""The delivery engine: handler and HTTP subscriptions, retries with backoff
on the broker's clock, dead letters, drops, counters.

Each DeliveryTarget here is built over an ordinary queue holding SNS
envelopes, as a topic's internal queue does."""

from __future__ import annotations

import json
import threading

import pytest

import walq
from walq.worker import counters
from walq.worker.counters import DeliveryCounts
from worker_helpers import SUB_ARN, TOPIC_ARN, Endpoint, closed_port_url, envelope, running, target, wait_until

received: list = []  # what the module-level handler below was called with
_received_mu = threading.Lock()


def collect(note):
    """A handler subscription's function (imported by path)."""
    with _received_mu:
        received.append(note)


_fail_first: dict[str, int] = {}


def fail_twice(note):
    """Fails the first two attempts of each notification."""
    with _received_mu:
        received.append(note)
        n = _fail_first[note.message_id] = _fail_first.get(note.message_id, 0) + 1
    if n <= 2:
        raise KeyError(f"attempt {n}")


def fail_g0_twice(note):
    """Fails the first two attempts of the notification whose message is "g0"."""
    with _received_mu:
        received.append(note)
        if note.message != "g0":
            return
        n = _fail_first[note.message_id] = _fail_first.get(note.message_id, 0) + 1
    if n <= 2:
        raise KeyError(f"attempt {n}")


def always_fails(note):
    raise ValueError("the handler is broken\nfor good")


@pytest.fixture(autouse=True)
def _clear():
    received.clear()
    _fail_first.clear()


@pytest.fixture
def endpoint():
    e = Endpoint()
    yield e
    e.close()


def send_env(q, env) -> bytes:
    body = json.dumps(env).encode()
    q.send(body)
    return body


def test_a_handler_subscription_gets_a_notification_built_from_the_envelope(broker):
    q = broker.create_queue("sub-internal")
    env = envelope("hello", message_id="m-1", subject="greeting", sequence=7,
                   attributes={"store": {"Type": "String", "Value": "berlin"},
                               "n": {"Type": "Number", "Value": "12"},
                               "x": {"Type": "Number", "Value": "1.5"},
                               "b": {"Type": "Binary", "Value": "AAE="}})
    send_env(q, env)
    target(broker, q, "handler", f"{__name__}:collect")
    with running(walq.Worker(broker)):
        wait_until(lambda: q.stats().total == 0 and received, what="the delivery")
    [note] = received
    assert isinstance(note, walq.Notification)
    assert (note.message_id, note.topic_arn, note.subject, note.message) == ("m-1", TOPIC_ARN, "greeting", "hello")
    assert note.attributes == {"store": "berlin", "n": 12, "x": 1.5, "b": b"\x00\x01"}
    assert note.timestamp == 1_700_000_000.0  # 2023-11-14T22:13:20.000Z
    assert (note.group, note.sequence, note.receive_count) == (None, 7, 1)
    wait_until(lambda: counters.read(broker, SUB_ARN) == DeliveryCounts(delivered=1), what="the count")


def test_http_delivery_posts_the_envelope_with_sns_headers(broker, endpoint):
    q = broker.create_queue("sub-internal")
    env = envelope("hello", message_id="m-1", attributes={"a": {"Type": "String", "Value": "1"}})
    body = send_env(q, env)
    target(broker, q, "http", endpoint.url)
    with running(walq.Worker(broker)):
        wait_until(lambda: q.stats().total == 0, what="the delivery")
    [req] = endpoint.requests
    assert req["path"] == "/hook"
    assert req["body"] == body  # the envelope, byte for byte
    h = {k.lower(): v for k, v in req["headers"].items()}
    assert h["x-amz-sns-message-type"] == "Notification"
    assert h["x-amz-sns-message-id"] == "m-1"
    assert h["x-amz-sns-topic-arn"] == TOPIC_ARN
    assert h["x-amz-sns-subscription-arn"] == SUB_ARN
    assert h["content-type"] == "text/plain; charset=UTF-8"
    assert "x-amz-sns-rawdelivery" not in h
    wait_until(lambda: counters.read(broker, SUB_ARN) == DeliveryCounts(delivered=1), what="the count")


def test_http_deliveries_reuse_one_pooled_connection(broker, endpoint):
    q = broker.create_queue("sub-internal")
    target(broker, q, "http", endpoint.url)
    with running(walq.Worker(broker, concurrency=1)):
        for i in range(3):
            send_env(q, envelope(f"n{i}"))
            wait_until(lambda: q.stats().total == 0, what=f"delivery {i}")
    assert endpoint.count() == 3
    assert len({r["peer"] for r in endpoint.requests}) == 1  # keep-alive: one connection for all


def test_raw_http_delivery_posts_the_message_alone(broker, endpoint):
    q = broker.create_queue("sub-internal")
    send_env(q, envelope('{"order": 1, "text": "caf\u00e9"}', message_id="m-2"))
    target(broker, q, "http", endpoint.url, raw=True)
    with running(walq.Worker(broker)):
        wait_until(lambda: q.stats().total == 0, what="the delivery")
    [req] = endpoint.requests
    assert req["body"] == '{"order": 1, "text": "caf\u00e9"}'.encode()
    h = {k.lower(): v for k, v in req["headers"].items()}
    assert h["x-amz-sns-message-id"] == "m-2" and h["x-amz-sns-rawdelivery"] == "true"


def test_http_failures_are_retried_with_backoff_on_the_broker_clock(broker, clock, endpoint):
    # 500, then a timeout, then 503, then success: three retries, waiting
    # 1 s, 2 s, 4 s on the broker's clock.
    q = broker.create_queue("sub-internal")
    send_env(q, envelope("hi"))
    endpoint.script.extend([500, "hang", 503])
    target(broker, q, "http", endpoint.url, retry=walq.RetryPolicy(max_retries=3))
    other = broker.get_queue("sub-internal")
    # The timeout leaves the answered requests seconds to spare on a loaded machine.
    with running(walq.Worker(broker, http_timeout=2.0)) as w:
        for attempt, wait in ((1, 1.0), (2, 2.0), (3, 4.0)):
            wait_until(lambda: endpoint.count() == attempt, what=f"attempt {attempt}")
            wait_until(lambda: counters.read(broker, SUB_ARN).failed == attempt and not w.leases._held,
                       what=f"failure {attempt} counted")
            clock.advance(wait * 0.9)
            assert other.receive(1, wait=0) == []  # still waiting out the backoff
            assert endpoint.count() == attempt
            clock.advance(wait * 0.2)
        wait_until(lambda: q.stats().total == 0, what="the successful attempt")
    assert endpoint.count() == 4
    wait_until(lambda: counters.read(broker, SUB_ARN) == DeliveryCounts(delivered=1, failed=3),
               what="the counts")


def test_connection_refused_is_a_failure_that_dead_letters_with_error_attributes(broker):
    q = broker.create_queue("sub-internal")
    dlq = broker.create_queue("sub-dlq")
    body = send_env(q, envelope("hi"))
    url = closed_port_url()
    target(broker, q, "http", url, retry=walq.RetryPolicy(max_retries=0), dead_letter=dlq)
    with running(walq.Worker(broker)):
        wait_until(lambda: q.stats().total == 0 and dlq.stats().visible == 1, what="the dead letter")
    [m] = dlq.receive(1)
    assert m.body == body
    assert m.attributes["ERROR_CODE"] == "ConnectionError"
    assert url in m.attributes["ERROR_MESSAGE"]
    wait_until(lambda: counters.read(broker, SUB_ARN) == DeliveryCounts(failed=1, dead_lettered=1),
               what="the counts")


def test_an_http_timeout_is_dead_lettered_as_timeout(broker, endpoint):
    q = broker.create_queue("sub-internal")
    dlq = broker.create_queue("sub-dlq")
    send_env(q, envelope("hi"))
    endpoint.script.append("hang")
    target(broker, q, "http", endpoint.url, retry=walq.RetryPolicy(max_retries=0), dead_letter=dlq)
    with running(walq.Worker(broker, http_timeout=0.5)):
        wait_until(lambda: dlq.stats().visible == 1, what="the dead letter")
    [m] = dlq.receive(1)
    assert m.attributes["ERROR_CODE"] == "Timeout"
    assert endpoint.count() == 1


def test_the_broker_lists_no_delivery_targets_of_its_own(broker):
    assert broker._delivery_targets() == []


def test_http_status_becomes_the_error_code(broker, clock, endpoint):
    q = broker.create_queue("sub-internal")
    dlq = broker.create_queue("sub-dlq")
    send_env(q, envelope("hi"))
    endpoint.script.extend([404, 404])
    target(broker, q, "http", endpoint.url, retry=walq.RetryPolicy(max_retries=1), dead_letter=dlq)
    with running(walq.Worker(broker)) as w:
        wait_until(lambda: counters.read(broker, SUB_ARN).failed == 1 and not w.leases._held, what="attempt 1")
        clock.advance(1.1)
        wait_until(lambda: dlq.stats().visible == 1, what="the dead letter")
    [m] = dlq.receive(1)
    assert m.attributes["ERROR_CODE"] == "404"
    assert "404" in m.attributes["ERROR_MESSAGE"]


def test_a_failing_handler_is_retried_then_dead_lettered_with_its_exception(broker, clock):
    q = broker.create_queue("sub-internal")
    dlq = broker.create_queue("sub-dlq")
    body = send_env(q, envelope("order 7"))
    target(broker, q, "handler", f"{__name__}:always_fails", retry=walq.RetryPolicy(max_retries=2),
           dead_letter=dlq)
    with running(walq.Worker(broker)) as w:
        for n, wait in ((1, 1.0), (2, 2.0)):
            wait_until(lambda: counters.read(broker, SUB_ARN).failed == n and not w.leases._held,
                       what=f"failure {n}")
            clock.advance(wait + 0.1)
        wait_until(lambda: dlq.stats().visible == 1 and q.stats().total == 0, what="the dead letter")
    [m] = dlq.receive(1)
    assert m.body == body
    assert m.attributes == {"ERROR_CODE": "ValueError", "ERROR_MESSAGE": "the handler is broken for good"}
    wait_until(lambda: counters.read(broker, SUB_ARN) == DeliveryCounts(failed=3, dead_lettered=1),
               what="the counts")


def test_without_a_dead_letter_queue_an_exhausted_delivery_is_dropped(broker, clock):
    q = broker.create_queue("sub-internal")
    send_env(q, envelope("x"))
    target(broker, q, "handler", f"{__name__}:always_fails", retry=walq.RetryPolicy(max_retries=1))
    with running(walq.Worker(broker)) as w:
        wait_until(lambda: counters.read(broker, SUB_ARN).failed == 1 and not w.leases._held, what="attempt 1")
        clock.advance(1.1)
        wait_until(lambda: q.stats().total == 0, what="the drop")
    wait_until(lambda: counters.read(broker, SUB_ARN) == DeliveryCounts(failed=2, dropped=1), what="the counts")


def test_a_delivery_past_max_age_is_not_retried(broker, clock):
    q = broker.create_queue("sub-internal")
    dlq = broker.create_queue("sub-dlq")
    send_env(q, envelope("x"))
    clock.advance(61)  # the notification is older than max_age before its first attempt fails
    target(broker, q, "handler", f"{__name__}:always_fails", retry=walq.RetryPolicy(max_retries=5, max_age=60),
           dead_letter=dlq)
    with running(walq.Worker(broker)):
        wait_until(lambda: dlq.stats().visible == 1 and q.stats().total == 0, what="the dead letter")
    assert counters.read(broker, SUB_ARN) == DeliveryCounts(failed=1, dead_lettered=1)


def test_a_handler_that_recovers_is_delivered_with_its_receive_count(broker, clock):
    q = broker.create_queue("sub-internal")
    send_env(q, envelope("x", message_id="m-9"))
    target(broker, q, "handler", f"{__name__}:fail_twice")
    with running(walq.Worker(broker)) as w:
        for n, wait in ((1, 1.0), (2, 2.0)):
            wait_until(lambda: counters.read(broker, SUB_ARN).failed == n and not w.leases._held,
                       what=f"failure {n}")
            clock.advance(wait + 0.1)
        wait_until(lambda: q.stats().total == 0, what="the delivery")
    assert [n.receive_count for n in received] == [1, 2, 3]
    wait_until(lambda: counters.read(broker, SUB_ARN) == DeliveryCounts(delivered=1, failed=2), what="counts")


def test_a_body_that_is_not_an_envelope_is_dead_lettered_at_once(broker):
    q = broker.create_queue("sub-internal")
    dlq = broker.create_queue("sub-dlq")
    q.send("not json")
    target(broker, q, "handler", f"{__name__}:collect", dead_letter=dlq)
    with running(walq.Worker(broker)):
        wait_until(lambda: dlq.stats().visible == 1, what="the dead letter")
    [m] = dlq.receive(1)
    assert m.attributes["ERROR_CODE"] == "InvalidEnvelope" and m.text == "not json"
    assert received == []


def test_an_envelope_with_a_bad_timestamp_is_dead_lettered_not_retried(broker):
    q = broker.create_queue("sub-internal")
    dlq = broker.create_queue("sub-dlq")
    send_env(q, envelope("x", timestamp="not a time"))
    target(broker, q, "handler", f"{__name__}:collect", dead_letter=dlq)
    with running(walq.Worker(broker)):
        wait_until(lambda: dlq.stats().visible == 1 and q.stats().total == 0, what="the dead letter")
    [m] = dlq.receive(1)
    assert m.attributes["ERROR_CODE"] == "InvalidEnvelope" and "ISO-8601" in m.attributes["ERROR_MESSAGE"]
    assert received == []


def test_a_fifo_target_keeps_group_order_across_a_failure(broker, clock):
    q = broker.create_queue("sub-internal.fifo")
    for i in range(3):
        q.send(json.dumps(envelope(f"g{i}", sequence=i + 1)), group="g", dedup_id=str(i))
    target(broker, q, "handler", f"{__name__}:fail_g0_twice")
    with running(walq.Worker(broker)) as w:
        for n, wait in ((1, 1.0), (2, 2.0)):
            wait_until(lambda: counters.read(broker, SUB_ARN).failed == n and not w.leases._held,
                       what=f"failure {n}")
            clock.advance(wait + 0.1)
        wait_until(lambda: counters.read(broker, SUB_ARN).delivered == 3, what="all three")
    # g0 fails twice; g1 and g2 wait behind it and are never attempted first.
    assert [n.message for n in received] == ["g0", "g0", "g0", "g1", "g2"]
    assert [n.sequence for n in received][-3:] == [1, 2, 3]
    assert all(n.group == "g" for n in received)


def test_a_delivery_that_outlasts_its_lease_keeps_it(broker, clock):
    q = broker.create_queue("sub-internal", visibility_timeout=10)
    send_env(q, envelope("slow"))
    gate, started = threading.Event(), threading.Event()
    import sys
    mod = sys.modules[__name__]
    mod.slow = lambda note: (started.set(), gate.wait(60))
    try:
        target(broker, q, "handler", f"{__name__}:slow")
        with running(walq.Worker(broker)) as w:
            assert started.wait(60)
            for _ in range(4):
                r = w.leases.renewed
                clock.advance(6)
                assert w.leases.wait_renewed(r + 1, 60)
                assert broker.get_queue("sub-internal").receive(1, wait=0) == []
            gate.set()
            wait_until(lambda: q.stats().total == 0, what="the delivery")
    finally:
        del mod.slow


def test_a_target_listed_after_run_started_is_delivered(broker):
    q = broker.create_queue("sub-internal")
    with running(walq.Worker(broker)):
        send_env(q, envelope("late"))
        target(broker, q, "handler", f"{__name__}:collect")  # listed after run() started
        wait_until(lambda: q.stats().total == 0 and len(received) == 1, what="the new target's delivery")
