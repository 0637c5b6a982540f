"""RetryPolicy, Notification, Lambda batch responses and the delivery counters."""

from __future__ import annotations

import multiprocessing
import os

import pytest

import walq
from walq.worker import counters
from walq.worker.counters import DeliveryCounts
from walq.worker.handlers import BadBatchResponse, failed_ids
from walq.worker.notification import EnvelopeError, from_envelope, parse_envelope
from worker_helpers import envelope


def test_retry_policy_defaults_and_sns_ranges():
    p = walq.RetryPolicy()
    assert (p.max_retries, p.max_age) == (3, 3600)
    walq.RetryPolicy(max_retries=0, max_age=60)
    walq.RetryPolicy(max_retries=100, max_age=3600)
    for bad in ({"max_retries": -1}, {"max_retries": 101}, {"max_retries": 1.0}, {"max_retries": True},
                {"max_age": 59}, {"max_age": 3601}, {"max_age": "60"}):
        with pytest.raises(walq.InvalidParameter):
            walq.RetryPolicy(**bad)


def test_retry_policy_eventbridge_defaults_and_ranges():
    p = walq.RetryPolicy.eventbridge()
    assert (p.max_retries, p.max_age) == (185, 86_400)
    walq.RetryPolicy.eventbridge(max_retries=0, max_age=60)
    for bad in ({"max_retries": 186}, {"max_age": 59}, {"max_age": 86_401}):
        with pytest.raises(walq.InvalidParameter):
            walq.RetryPolicy.eventbridge(**bad)
    with pytest.raises(walq.InvalidParameter):
        walq.RetryPolicy(max_retries=185)  # beyond SNS's range


def test_retry_delay_grows_exponentially_from_one_second_to_sixty():
    p = walq.RetryPolicy()
    assert [p.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert p.delay(1000) == 60
    with pytest.raises(walq.InvalidParameter):
        p.delay(0)


def test_notification_from_an_envelope():
    env = parse_envelope(b'{"Type": "Notification", "MessageId": "m", "TopicArn": "arn:t", "Message": "x",'
                         b' "Timestamp": "2024-01-01T00:00:00.500Z", "MessageAttributes": {}}')
    n = from_envelope(env, group="g", receive_count=3)
    assert n == walq.Notification(message_id="m", topic_arn="arn:t", subject=None, message="x", attributes={},
                                  timestamp=1_704_067_200.5, group="g", sequence=None, receive_count=3)


@pytest.mark.parametrize("body", [b"nope", b"[1]", b'{"MessageId": "m"}',
                                  b'{"MessageId": "m", "TopicArn": "t", "Message": 5}'])
def test_a_body_that_is_not_an_envelope_is_refused(body):
    with pytest.raises(EnvelopeError):
        parse_envelope(body)


def test_an_envelope_with_a_bad_timestamp_is_refused():
    env = envelope("x", timestamp="yesterday")
    with pytest.raises(EnvelopeError, match="ISO-8601"):
        from_envelope(env)


def test_failed_ids_reads_both_lambda_shapes():
    ids = {"a", "b", "c"}
    assert failed_ids(None, ids) == set()
    assert failed_ids({}, ids) == set()
    assert failed_ids({"batchItemFailures": []}, ids) == set()
    assert failed_ids(["b"], ids) == {"b"}
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "c"}]}, ids) == {"a", "c"}
    assert failed_ids("ok", ids) == set()  # no batchItemFailures: all succeeded, as Lambda reads it
    for bad in (["zzz"], [""], [None], {"batchItemFailures": [{"id": "a"}]}, {"batchItemFailures": "a"}):
        with pytest.raises(BadBatchResponse):
            failed_ids(bad, ids)


def test_counters_add_and_read_survive_reopening(store):
    b = store()
    assert counters.read(b, "arn:x") == DeliveryCounts()
    counters.add(b, "arn:x", delivered=2, failed=1)
    counters.add(b, "arn:x", delivered=1, dead_lettered=1)
    counters.add(b, "arn:y", dropped=4)
    b.close()
    b = store()
    assert counters.read(b, "arn:x") == DeliveryCounts(delivered=3, failed=1, dead_lettered=1)
    assert counters.read_all(b) == {"arn:x": DeliveryCounts(3, 1, 1, 0), "arn:y": DeliveryCounts(0, 0, 0, 4)}
    counters.forget(b, "arn:y")
    assert counters.read(b, "arn:y") == DeliveryCounts()


def test_a_damaged_counters_file_is_reported_not_read_as_zeros(broker):
    counters.add(broker, "arn:x", delivered=1)
    path = os.path.join(broker.path, "workers", "counters")
    data = bytearray(open(path, "rb").read())
    data[-2] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(walq.CorruptionError, match="counters"):
        counters.read(broker, "arn:x")


def _add_many_times(path, n):
    with walq.open(path, durability="os") as b:
        for _ in range(n):
            counters.add(b, "arn:shared", delivered=1, failed=2)


def test_counters_from_concurrent_processes_all_count(tmp_path):
    path = str(tmp_path / "data")
    walq.open(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many_times, args=(path, 50)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with walq.open(path) as b:
        assert counters.read(b, "arn:shared") == DeliveryCounts(delivered=150, failed=300)


def test_a_tally_writes_its_counts_on_flush(broker):
    t = counters.Tally(broker)
    t.count("arn:x", delivered=1)
    t.count("arn:x", delivered=1, failed=1)
    assert counters.read(broker, "arn:x") == DeliveryCounts()
    t.flush()
    assert counters.read(broker, "arn:x") == DeliveryCounts(delivered=2, failed=1)


def test_counter_keys_must_be_text(broker):
    with pytest.raises(walq.InvalidParameter):
        counters.add(broker, "", delivered=1)
    with pytest.raises(walq.InvalidParameter):
        counters.read(broker, None)
