"""SNS topics: names, ARNs, subscriptions, the envelope, raw delivery, FIFO
rules and dedup, filter policies, publish_batch, and refusals that write
nothing (API.md, "Identity" and "Topics (SNS)")."""

from __future__ import annotations

import base64
import hashlib
import os
import json
import re

import pytest

import walq
from walq.worker.retry import RetryPolicy

import topic_handlers


def drain(q, n=100):
    out = []
    while True:
        got = q.receive(10)
        if not got:
            return out
        out += got
        q.delete_batch([m.receipt for m in got])
        if len(out) >= n:
            return out


def ends(broker, *queues, topics=()):
    """Where every log a refused call could touch ends: equal before and after = nothing written."""
    svc = broker._topic_service()
    return ((broker._catalog.log.end, svc.catalog.log.end)
            + tuple(q._log.end for q in queues) + tuple(t._log.end for t in topics))


# -- names and identity ---------------------------------------------------------------

def test_arns_name_region_account_and_ids(tmp_path):
    with walq.open(tmp_path / "d", durability="os", region="eu-west-3", account="123456789012") as b:
        q = b.create_queue("orders")
        t = b.create_topic("events")
        sub = t.subscribe(q)
        assert q.arn == "arn:aws:sqs:eu-west-3:123456789012:orders"
        assert t.arn == "arn:aws:sns:eu-west-3:123456789012:events"
        assert re.fullmatch(r"arn:aws:sns:eu-west-3:123456789012:events:[0-9a-f]{32}", sub.arn)
        assert sub.endpoint == q.arn and sub.protocol == "sqs"
        t.publish("hi")
        [m] = q.receive()
        assert json.loads(m.body)["TopicArn"] == t.arn


@pytest.mark.parametrize("region,account", [("", "000000000000"), ("us-east-1", "12"), ("US", "000000000000")])
def test_open_refuses_a_bad_region_or_account(tmp_path, region, account):
    with pytest.raises(walq.InvalidParameter):
        walq.open(tmp_path / "d", region=region, account=account)


def test_topic_names_follow_sns_rules(broker):
    broker.create_topic("a" * 256)
    broker.create_topic("b" * 251 + ".fifo")
    for bad in ("", "a" * 257, "c" * 252 + ".fifo", "has space", "dot.ted", "~x", 5):
        with pytest.raises(walq.InvalidParameter):
            broker.create_topic(bad)
    with pytest.raises(walq.InvalidParameter):
        broker.create_topic("std", fifo=True)
    with pytest.raises(walq.InvalidParameter):
        broker.create_topic("x.fifo", fifo=False)
    with pytest.raises(walq.InvalidParameter):
        broker.create_topic("std", content_based_dedup=True)
    assert broker.list_topics() == sorted(["a" * 256, "b" * 251 + ".fifo"])


def test_create_get_list_delete(broker):
    t = broker.create_topic("t1")
    assert broker.create_topic("t1") is t
    f = broker.create_topic("t2.fifo", content_based_dedup=True)
    assert f.fifo and f.content_based_dedup
    with pytest.raises(walq.InvalidParameter):
        broker.create_topic("t2.fifo")  # exists with different attributes
    assert broker.get_topic("t1") is t
    assert broker.list_topics() == ["t1", "t2.fifo"] and broker.list_topics("t2") == ["t2.fifo"]
    broker.delete_topic("t1")
    with pytest.raises(walq.TopicDoesNotExist):
        broker.get_topic("t1")
    with pytest.raises(walq.TopicDoesNotExist):
        t.publish("x")
    with pytest.raises(walq.TopicDoesNotExist):
        broker.delete_topic("t1")
    assert isinstance(walq.TopicDoesNotExist("x"), LookupError)


def test_a_refused_create_writes_nothing(broker):
    broker.create_topic("t")
    before = ends(broker)
    for bad in ("bad name", "t.fifo-no"):
        with pytest.raises(walq.InvalidParameter):
            broker.create_topic(bad)
    assert ends(broker) == before


# -- the envelope and raw delivery ------------------------------------------------------

def test_the_envelope_carries_snss_fields(broker, clock):
    clock.now = 1_700_000_000.123
    q = broker.create_queue("q")
    t = broker.create_topic("t")
    sub = t.subscribe(q)
    r = t.publish("héllo", subject="Greeting", attributes={"s": "v", "n": 12, "f": 1.5, "b": b"\x00\xff"})
    [m] = q.receive()
    env = json.loads(m.body)
    assert env["Type"] == "Notification"
    assert env["MessageId"] == r.message_id and r.sequence is None
    assert env["TopicArn"] == t.arn and env["Subject"] == "Greeting" and env["Message"] == "héllo"
    assert env["Timestamp"] == "2023-11-14T22:13:20.123Z"
    assert env["MessageAttributes"] == {"s": {"Type": "String", "Value": "v"}, "n": {"Type": "Number", "Value": "12"},
                                        "f": {"Type": "Number", "Value": "1.5"},
                                        "b": {"Type": "Binary", "Value": base64.b64encode(b"\x00\xff").decode()}}
    for key in ("SignatureVersion", "Signature", "SigningCertURL", "UnsubscribeURL"):
        assert env[key], key
    assert sub.arn in env["UnsubscribeURL"]
    assert m.attributes == {}  # the attributes travel in the envelope


def test_subject_only_when_given_and_no_attributes_key_without_attributes(broker):
    q = broker.create_queue("q")
    t = broker.create_topic("t")
    t.subscribe(q)
    t.publish("plain")
    [m] = q.receive()
    env = json.loads(m.body)
    assert "Subject" not in env and "MessageAttributes" not in env


def test_raw_delivery_puts_the_message_and_its_attributes(broker):
    q = broker.create_queue("q")
    t = broker.create_topic("t")
    t.subscribe(q, raw=True)
    t.publish("just this", subject="ignored", attributes={"color": "red", "size": 3, "bin": b"\x01"})
    [m] = q.receive()
    assert m.body == b"just this"
    assert m.attributes == {"color": "red", "size": 3, "bin": b"\x01"}


# -- FIFO --------------------------------------------------------------------------------

def test_fifo_topics_deliver_to_fifo_queues_only_and_refusals_write_nothing(broker):
    std_q, fifo_q = broker.create_queue("s"), broker.create_queue("f.fifo")
    std_t, fifo_t = broker.create_topic("st"), broker.create_topic("ft.fifo")
    before = ends(broker, std_q, fifo_q, topics=(std_t, fifo_t))
    with pytest.raises(walq.InvalidParameter):
        std_t.subscribe(fifo_q)
    with pytest.raises(walq.InvalidParameter):
        fifo_t.subscribe(std_q)
    assert ends(broker, std_q, fifo_q, topics=(std_t, fifo_t)) == before
    assert std_t.subscriptions() == [] and fifo_t.subscriptions() == []


def test_fifo_publish_needs_a_group_and_a_dedup_id(broker):
    t = broker.create_topic("t.fifo")
    t.subscribe(broker.create_queue("q.fifo"))
    before = ends(broker, topics=(t,))
    with pytest.raises(walq.InvalidParameter):
        t.publish("m", dedup_id="d")
    with pytest.raises(walq.InvalidParameter):
        t.publish("m", group="g")
    assert ends(broker, topics=(t,)) == before
    with pytest.raises(walq.InvalidParameter):
        broker.create_topic("s").publish("m", dedup_id="d")


def test_fifo_order_per_group_sequences_and_dedup_id_on_the_copies(broker):
    q = broker.create_queue("q.fifo")
    t = broker.create_topic("t.fifo")
    t.subscribe(q, raw=True)
    results = [t.publish(f"m{i}", group=f"g{i % 2}", dedup_id=f"d{i}") for i in range(6)]
    seqs = [r.sequence for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    got = []
    while True:
        msgs = q.receive(10)
        if not msgs:
            break
        got += [(m.group, m.text, m.dedup_id) for m in msgs]
        q.delete_batch([m.receipt for m in msgs])
    for g in ("g0", "g1"):
        mine = [(text, d) for gg, text, d in got if gg == g]
        assert [text for text, _ in mine] == [f"m{i}" for i in range(6) if f"g{i % 2}" == g]
        assert all(d == "d" + text[1:] for text, d in mine)


def test_fifo_dedup_window_is_five_minutes_on_the_brokers_clock(broker, clock):
    q = broker.create_queue("q.fifo")
    t = broker.create_topic("t.fifo")
    t.subscribe(q)
    first = t.publish("a", group="g", dedup_id="same")
    clock.advance(299)
    dup = t.publish("b", group="g", dedup_id="same")
    assert dup == first
    assert len(drain(q)) == 1
    clock.advance(2)
    again = t.publish("c", group="g", dedup_id="same")
    assert again.message_id != first.message_id and again.sequence > first.sequence
    [m] = drain(q)
    assert json.loads(m.body)["Message"] == "c"


def test_content_based_dedup_uses_sha256_of_the_message(broker):
    q = broker.create_queue("q.fifo")
    t = broker.create_topic("t.fifo", content_based_dedup=True)
    t.subscribe(q, raw=True)
    a = t.publish("same", group="g")
    b = t.publish("same", group="other")
    assert a == b
    [m] = drain(q)
    assert m.dedup_id == hashlib.sha256(b"same").hexdigest()


def test_fifo_dedup_is_seen_by_another_broker(store, clock):
    a, b = store(), store()
    q = a.create_queue("q.fifo")
    ta = a.create_topic("t.fifo")
    ta.subscribe(q)
    first = ta.publish("x", group="g", dedup_id="d")
    assert b.get_topic("t.fifo").publish("y", group="g", dedup_id="d") == first
    assert len(drain(q)) == 1


def test_the_envelope_of_a_fifo_topic_has_its_sequence_number(broker):
    q = broker.create_queue("q.fifo")
    t = broker.create_topic("t.fifo")
    t.subscribe(q)
    r = t.publish("x", group="g", dedup_id="d")
    [m] = q.receive()
    assert int(json.loads(m.body)["SequenceNumber"]) == r.sequence


# -- subscriptions -----------------------------------------------------------------------

def test_subscribing_again_returns_the_same_subscription_or_refuses_a_different_one(broker):
    q = broker.create_queue("q")
    t = broker.create_topic("t")
    s1 = t.subscribe(q)
    assert t.subscribe(q) == s1
    before = ends(broker, q, topics=(t,))
    with pytest.raises(walq.InvalidParameter):
        t.subscribe(q, raw=True)
    assert ends(broker, q, topics=(t,)) == before
    assert t.subscriptions() == [s1]


def test_unsubscribe_stops_delivery(broker):
    q1, q2 = broker.create_queue("a"), broker.create_queue("b")
    t = broker.create_topic("t")
    s1 = t.subscribe(q1)
    t.subscribe(q2)
    s1.unsubscribe()
    s1.unsubscribe()  # idempotent
    t.publish("m")
    assert drain(q1) == [] and len(drain(q2)) == 1


def test_a_subscription_change_in_one_broker_applies_to_the_next_publish_in_another(store):
    a, b = store(), store()
    qa = a.create_queue("q")
    ta = a.create_topic("t")
    tb = b.get_topic("t")
    tb.publish("before")  # b's handle is open before the subscription exists
    sub = ta.subscribe(qa, filter_policy={"k": ["yes"]})
    tb.publish("dropped", attributes={"k": "no"})
    tb.publish("kept", attributes={"k": "yes"})
    assert [json.loads(m.body)["Message"] for m in drain(qa)] == ["kept"]
    [seen] = tb.subscriptions()
    assert seen.arn == sub.arn and seen.filter_policy == {"k": ["yes"]}
    sub.set_attributes(filter_policy=None, raw=True)
    tb.publish("all now", attributes={"k": "no"})
    assert [m.body for m in drain(qa)] == [b"all now"]
    sub.unsubscribe()
    tb.publish("nobody")
    assert drain(qa) == [] and tb.subscriptions() == []


def test_endpoint_kinds(broker, tmp_path):
    t = broker.create_topic("t")
    http = t.subscribe("https://example.com/hook?x=1")
    assert http.protocol == "https" and http.endpoint == "https://example.com/hook?x=1"
    assert t.subscribe("http://127.0.0.1:8080/").protocol == "http"
    h1 = t.subscribe(topic_handlers.on_notification)
    assert h1.protocol == "handler" and h1.endpoint == "topic_handlers:on_notification"
    assert t.subscribe("topic_handlers:on_notification") == h1
    before = ends(broker, topics=(t,))
    n_queues = len(broker._catalog.queues)

    def nested(n):
        return n

    for bad in (lambda n: n, nested, "topic_handlers:missing", "no_such_module_xyz:f",
                "topic_handlers:NOT_A_FUNCTION", "ftp://example.com/", "https://", "http://exa mple.com/",
                "https://example.com:99999/", 42, print.__self__, "just words"):
        with pytest.raises(walq.InvalidParameter):
            t.subscribe(bad)
    other = walq.open(tmp_path / "other", durability="os")
    try:
        with pytest.raises(walq.InvalidParameter):
            t.subscribe(other.create_queue("elsewhere"))
    finally:
        other.close()
    assert ends(broker, topics=(t,)) == before and len(broker._catalog.queues) == n_queues


def test_http_and_handler_subscriptions_get_a_hidden_internal_queue_with_the_envelope(broker):
    t = broker.create_topic("t")
    user_q = broker.create_queue("mine")
    sub = t.subscribe("https://example.com/x", raw=True, retry=RetryPolicy(max_retries=5, max_age=60),
                      dead_letter=user_q)
    assert broker.list_queues() == ["mine"]
    [target] = broker._delivery_targets()
    assert target.key == sub.arn and target.kind == "https" and target.endpoint == "https://example.com/x"
    assert target.raw is True and target.retry == RetryPolicy(5, 60) and target.dead_letter.name == "mine"
    assert target.topic_arn == t.arn
    t.publish("payload", attributes={"a": "b"})
    [m] = target.queue.receive()
    env = json.loads(m.body)  # the envelope always, whatever raw says
    assert env["Message"] == "payload" and env["MessageAttributes"] == {"a": {"Type": "String", "Value": "b"}}
    assert sub.stats().pending == 1
    with pytest.raises(walq.InvalidParameter):
        broker.create_queue(target.queue.name)  # not a name a user can give
    sub.unsubscribe()
    assert broker._delivery_targets() == []
    assert not any(n.startswith("~") for n in broker._catalog.queues)


def test_deleting_a_topic_deletes_its_internal_queues(broker):
    t = broker.create_topic("t")
    t.subscribe(topic_handlers.on_notification)
    assert any(n.startswith("~") for n in broker._catalog.queues)
    broker.delete_topic("t")
    assert not any(n.startswith("~") for n in broker._catalog.queues)
    assert broker._delivery_targets() == []


def test_a_fifo_topics_handler_gets_a_fifo_internal_queue(broker):
    t = broker.create_topic("t.fifo")
    t.subscribe("topic_handlers:on_notification")
    t.publish("x", group="g", dedup_id="1")
    [target] = broker._delivery_targets()
    assert target.queue.attributes.fifo
    [m] = target.queue.receive()
    assert m.group == "g"


# -- filter policies ------------------------------------------------------------------------

def test_filter_policies_route_messages(broker):
    qs = {name: broker.create_queue(name) for name in ("red", "big", "any", "body", "nored")}
    t = broker.create_topic("t")
    t.subscribe(qs["red"], filter_policy={"color": ["red"]}, raw=True)
    t.subscribe(qs["big"], filter_policy=json.dumps({"size": [{"numeric": [">", 10]}]}), raw=True)
    t.subscribe(qs["any"], raw=True)
    t.subscribe(qs["body"], filter_policy={"order": {"kind": [{"prefix": "exp"}]}}, filter_scope="body", raw=True)
    t.subscribe(qs["nored"], filter_policy={"color": [{"anything-but": "red"}], "size": [{"exists": True}]},
                raw=True)
    t.publish("1", attributes={"color": "red", "size": 5})
    t.publish("2", attributes={"color": "blue", "size": 50})
    t.publish(json.dumps({"order": {"kind": "express"}}))
    t.publish("3", attributes={"size": "50"})  # a String never matches numeric
    got = {name: sorted(m.body for m in drain(q)) for name, q in qs.items()}
    assert got["red"] == [b"1"]
    assert got["big"] == [b"2"]
    assert got["nored"] == [b"2"]
    assert got["body"] == [json.dumps({"order": {"kind": "express"}}).encode()]
    assert len(got["any"]) == 4


def test_an_invalid_filter_policy_is_refused_and_writes_nothing(broker):
    q = broker.create_queue("q")
    t = broker.create_topic("t")
    sub = t.subscribe(q)
    r = broker.create_queue("r")
    before = ends(broker, q, topics=(t,))
    for bad in ("{not json", [], {"a": "notalist"}, {"a": [{"numeric": [">"]}]}, {"a": [{"bogus": 1}]},
                {k: ["x"] for k in "abcdef"}):
        with pytest.raises(walq.InvalidPattern):
            sub.set_attributes(filter_policy=bad)
    with pytest.raises(walq.InvalidParameter):
        sub.set_attributes(filter_scope="everything")
    with pytest.raises(walq.InvalidParameter):
        t.subscribe(r, filter_policy={"a": ["x"]}, filter_scope="nope")
    assert ends(broker, q, topics=(t,)) == before
    assert sub.filter_policy is None


# -- publish and publish_batch ------------------------------------------------------------------

def test_publish_refusals_write_nothing(broker):
    q = broker.create_queue("q")
    t = broker.create_topic("t")
    t.subscribe(q)
    before = ends(broker, q, topics=(t,))
    for kwargs in ({"message": ""}, {"message": 5}, {"message": b"\xff"}, {"message": "x", "subject": ""},
                   {"message": "x", "subject": "a\nb"}, {"message": "x", "subject": "s" * 100},
                   {"message": "x", "attributes": {"AWS.x": "y"}},
                   {"message": "x", "attributes": {f"a{i}": "v" for i in range(11)}}):
        with pytest.raises(walq.InvalidParameter):
            t.publish(**kwargs)
    with pytest.raises(walq.MessageTooLarge):
        t.publish("x" * 262_145)
    assert ends(broker, q, topics=(t,)) == before


def test_publish_batch_fails_entries_alone(broker):
    q = broker.create_queue("q")
    t = broker.create_topic("t")
    t.subscribe(q, raw=True)
    res = t.publish_batch(["a", "", {"message": "b", "subject": "S"}, {"nope": 1}, {"message": "c",
                                                                                   "attributes": {"k": "v"}}])
    assert [i for i, _ in res.successful] == [0, 2, 4]
    assert [i for i, _ in res.failed] == [1, 3]
    assert all(isinstance(e, walq.InvalidParameter) for _, e in res.failed)
    assert all(isinstance(r, walq.PublishResult) for _, r in res.successful)
    assert sorted(m.body for m in drain(q)) == [b"a", b"b", b"c"]
    with pytest.raises(walq.BatchError):
        t.publish_batch([])


def test_fifo_publish_batch_dedups_within_the_batch(broker):
    q = broker.create_queue("q.fifo")
    t = broker.create_topic("t.fifo")
    t.subscribe(q, raw=True)
    res = t.publish_batch([{"message": "a", "group": "g", "dedup_id": "1"},
                           {"message": "b", "group": "g", "dedup_id": "1"},
                           {"message": "c", "group": "g", "dedup_id": "2"},
                           {"message": "d"}])
    ok = dict(res.successful)
    assert ok[0] == ok[1] and ok[2].sequence > ok[0].sequence and [i for i, _ in res.failed] == [3]
    assert [m.body for m in drain(q)] == [b"a", b"c"]


def test_a_deleted_subscribed_queue_is_skipped(broker):
    a, b = broker.create_queue("a"), broker.create_queue("b")
    t = broker.create_topic("t")
    t.subscribe(a)
    t.subscribe(b)
    broker.delete_queue("a")
    t.publish("m")
    assert len(drain(b)) == 1


def test_list_queues_never_shows_internal_queues(broker):
    broker.create_topic("t").subscribe("https://example.com/")
    broker.create_queue("visible")
    assert broker.list_queues() == ["visible"]
    assert broker.list_queues("~") == []


def test_looking_up_topics_in_a_store_without_any_creates_nothing(broker):
    assert broker.list_topics() == [] and broker._delivery_targets() == []
    with pytest.raises(walq.TopicDoesNotExist):
        broker.get_topic("t")
    with pytest.raises(walq.TopicDoesNotExist):
        broker.delete_topic("t")
    assert not os.path.exists(os.path.join(broker.path, "topics"))
