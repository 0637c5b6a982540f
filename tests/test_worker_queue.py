"""walq.Worker running queue handlers, Lambda-style: batches, partial batch
failures, exceptions, lease extension, concurrency."""

from __future__ import annotations

import threading

import pytest

import walq
from worker_helpers import running, wait_until


def test_a_handler_gets_batches_and_returning_acks_them(broker):
    q = broker.create_queue("jobs")
    q.send_batch([f"m{i}" for i in range(25)])
    seen, mu = [], threading.Lock()

    def handler(messages):
        assert all(isinstance(m, walq.Message) for m in messages)
        assert 1 <= len(messages) <= 10
        with mu:
            seen.extend(m.text for m in messages)

    w = walq.Worker(broker, concurrency=2)
    w.consume(q, handler, batch_size=10)
    with running(w):
        wait_until(lambda: len(seen) == 25 and q.stats().total == 0, what="all 25 handled and acked")
    assert sorted(seen) == sorted(f"m{i}" for i in range(25))


def test_consume_takes_a_queue_name_and_an_import_path(broker):
    q = broker.create_queue("jobs")
    q.send("x")
    w = walq.Worker(broker)
    w.consume("jobs", "worker_helpers:note_fails")  # resolvable: checked at consume()
    with pytest.raises(walq.InvalidParameter, match="cannot import"):
        w.consume("jobs", "no_such_module_xyz:f")
    with pytest.raises(walq.InvalidParameter, match="no 'nope'"):
        w.consume("jobs", "worker_helpers:nope")
    with pytest.raises(walq.InvalidParameter):
        w.consume("jobs", "not a path")
    with pytest.raises(walq.QueueDoesNotExist):
        w.consume("missing", lambda ms: None)
    for bad in (0, 1001, "10", True):
        with pytest.raises(walq.InvalidParameter, match="batch_size"):
            w.consume("jobs", lambda ms: None, batch_size=bad)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(walq.InvalidParameter, match="concurrency"):
            walq.Worker(broker, concurrency=bad)


@pytest.mark.parametrize("shape", ["ids", "lambda"])
def test_a_partial_batch_response_leaves_only_the_failed_messages(broker, clock, shape):
    q = broker.create_queue("jobs", visibility_timeout=30)
    q.send_batch(["a", "b", "c"])
    calls, mu = [], threading.Lock()

    def handler(messages):
        with mu:
            calls.append([(m.text, m.receive_count) for m in messages])
        bad = [m.message_id for m in messages if m.text == "b" and m.receive_count == 1]
        if shape == "ids":
            return bad
        return {"batchItemFailures": [{"itemIdentifier": i} for i in bad]}

    w = walq.Worker(broker, concurrency=1)
    w.consume(q, handler, batch_size=10)
    with running(w):
        wait_until(lambda: q.stats().total == 1, what="a and c acked")
        assert sorted(t for t, _n in calls[0]) == ["a", "b", "c"]
        s = q.stats()
        assert (s.visible, s.in_flight) == (0, 1)  # b waits for its visibility timeout
        clock.advance(31)
        wait_until(lambda: q.stats().total == 0, what="b handled again")
    assert ("b", 2) in [c for batch in calls for c in batch]


def test_a_response_naming_a_message_not_in_the_batch_fails_the_whole_batch(broker, clock):
    q = broker.create_queue("jobs", visibility_timeout=30)
    q.send_batch(["a", "b"])
    calls = []

    def handler(messages):
        calls.append(len(messages))
        if messages[0].receive_count == 1:
            return {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}
        return None

    w = walq.Worker(broker, concurrency=1)
    w.consume(q, handler)
    with running(w):
        wait_until(lambda: len(calls) == 1, what="the first call")
        wait_until(lambda: q.stats().in_flight == 2 and not w.leases._held, what="the batch left in flight")
        clock.advance(31)
        wait_until(lambda: q.stats().total == 0, what="the batch handled again")


def test_an_exception_leaves_the_whole_batch_until_its_visibility_timeout(broker, clock):
    q = broker.create_queue("jobs", visibility_timeout=20)
    q.send_batch(["a", "b"])
    counts = []

    def handler(messages):
        counts.append(sorted(m.receive_count for m in messages))
        if messages[0].receive_count == 1:
            raise RuntimeError("boom")

    w = walq.Worker(broker, concurrency=1)
    w.consume(q, handler)
    with running(w):
        wait_until(lambda: len(counts) == 1 and not w.leases._held, what="the failing call")
        s = q.stats()
        assert (s.visible, s.in_flight, s.total) == (0, 2, 2)
        clock.advance(21)
        wait_until(lambda: q.stats().total == 0, what="the batch handled again")
    assert counts == [[1, 1], [2, 2]]


def test_leases_are_extended_while_a_slow_handler_runs(broker, clock):
    q = broker.create_queue("jobs", visibility_timeout=10)
    q.send("slow")
    started, release = threading.Event(), threading.Event()

    def handler(messages):
        started.set()
        assert release.wait(60)

    w = walq.Worker(broker, concurrency=1)
    w.consume(q, handler)
    other = broker.get_queue("jobs")
    with running(w):
        assert started.wait(60)
        renewed = w.leases.renewed
        for _ in range(6):  # 36 s on the broker's clock: more than three timeouts
            clock.advance(6)  # past half the timeout, never past a whole one
            assert w.leases.wait_renewed(renewed + 1, 60)
            renewed = w.leases.renewed
            assert other.receive(10, wait=0) == []  # never visible to anyone else
        release.set()
        wait_until(lambda: q.stats().total == 0, what="the ack")


def test_concurrency_runs_that_many_batches_at_once(broker):
    q = broker.create_queue("jobs")
    q.send_batch(["a", "b", "c"])
    barrier = threading.Barrier(3, timeout=60)  # passes only with three calls at once
    done = []

    def handler(messages):
        barrier.wait()
        done.append(messages[0].text)

    w = walq.Worker(broker, concurrency=3)
    w.consume(q, handler, batch_size=1)
    with running(w):
        wait_until(lambda: q.stats().total == 0, what="three concurrent batches")
    assert sorted(done) == ["a", "b", "c"]


def test_concurrency_one_runs_one_batch_at_a_time(broker):
    q = broker.create_queue("jobs")
    q.send_batch([str(i) for i in range(6)])
    active, peak, mu = [0], [0], threading.Lock()

    def handler(messages):
        with mu:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        with mu:
            active[0] -= 1

    w = walq.Worker(broker, concurrency=1)
    w.consume(q, handler, batch_size=1)
    w.consume(broker.create_queue("other"), handler, batch_size=1)
    with running(w):
        wait_until(lambda: q.stats().total == 0, what="all handled")
    assert peak[0] == 1
    # Nothing was leased while waiting for the one thread.
    assert q.stats().in_flight == 0


def test_stop_finishes_the_batch_in_hand(broker):
    q = broker.create_queue("jobs")
    q.send_batch(["a", "b"])
    started, release, finished = threading.Event(), threading.Event(), []

    def handler(messages):
        started.set()
        assert release.wait(60)
        finished.append(len(messages))

    w = walq.Worker(broker, concurrency=1)
    w.consume(q, handler)
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,))
    t.start()
    assert started.wait(60)
    stop.set()
    release.set()
    t.join(60)
    assert not t.is_alive()
    assert finished == [2] and q.stats().total == 0


def test_run_twice_at_once_is_refused_and_consume_after_run_is_refused(broker):
    q = broker.create_queue("jobs")
    w = walq.Worker(broker)
    w.consume(q, lambda ms: None)
    with running(w):
        with pytest.raises(walq.InvalidParameter, match="already running"):
            w.run(threading.Event())
        with pytest.raises(walq.InvalidParameter, match="before run"):
            w.consume(q, lambda ms: None)
