"""FIFO queues: one test per FIFO rule (order within a group, one
group in flight at a time, batches from one group first, the 5-minute dedup
window, sequence numbers, dedup scope, no per-message delay)."""

from __future__ import annotations

import hashlib

import pytest

import walq
from queue_helpers import log_ends

@pytest.fixture
def q(broker):
    return broker.create_queue("jobs.fifo", content_based_dedup=True)


def texts(msgs):
    return [m.text for m in msgs]


def test_a_name_ending_in_fifo_makes_a_fifo_queue(broker):
    assert broker.create_queue("a.fifo").attributes.fifo is True
    assert broker.create_queue("b.fifo", fifo=True).attributes.fifo is True
    assert broker.create_queue("c").attributes.fifo is False
    assert broker.create_queue("d", fifo=False).attributes.fifo is False


def test_fifo_message_fields(q, clock):
    r = q.send("hello", group="g1", attributes={"k": "v"})
    [m] = q.receive()
    assert m.group == "g1"
    assert m.dedup_id == hashlib.sha256(b"hello").hexdigest()
    assert m.sequence == r.sequence and isinstance(m.sequence, int)
    assert m.message_id == r.message_id and m.attributes == {"k": "v"}


def test_order_is_kept_within_a_group(q):
    for i in range(20):
        q.send(f"a{i}", group="a")
        q.send(f"b{i}", group="b")
    got = {"a": [], "b": []}
    while msgs := q.receive(3):
        for m in msgs:
            got[m.group].append(m.text)
        q.delete_batch([m.receipt for m in msgs])
    assert got == {"a": [f"a{i}" for i in range(20)], "b": [f"b{i}" for i in range(20)]}


def test_a_group_with_a_message_in_flight_hands_out_nothing_more(q, clock):
    q.send_batch([{"body": f"a{i}", "group": "a"} for i in range(3)])
    [first] = q.receive()
    assert first.text == "a0"
    assert q.receive(10) == []
    first.ack()
    assert texts(q.receive(10)) == ["a1", "a2"]


def test_other_groups_are_delivered_while_one_is_in_flight(q):
    q.send("a0", group="a")
    q.send("a1", group="a")
    q.send("b0", group="b")
    assert texts(q.receive()) == ["a0"]
    assert texts(q.receive(10)) == ["b0"]


def test_a_message_whose_lease_ran_out_is_redelivered_before_the_rest_of_its_group(q, clock):
    q.send_batch([{"body": f"a{i}", "group": "a"} for i in range(3)])
    assert texts(q.receive()) == ["a0"]
    clock.advance(30)
    [again, nxt, last] = q.receive(10)
    assert (again.text, again.receive_count) == ("a0", 2)
    assert (nxt.text, last.text) == ("a1", "a2")


def test_change_visibility_zero_returns_the_message_to_the_head_of_its_group(q):
    q.send_batch([{"body": f"a{i}", "group": "a"} for i in range(3)])
    a0, a1 = q.receive(2)
    a0.change_visibility(0)
    assert q.receive(10) == []  # a1 still in flight holds the group
    a1.change_visibility(0)
    assert texts(q.receive(10)) == ["a0", "a1", "a2"]


def test_a_receive_fills_its_batch_from_one_group_first(q):
    for i in range(3):
        q.send(f"a{i}", group="a")
        q.send(f"b{i}", group="b")
        q.send(f"c{i}", group="c")
    assert texts(q.receive(4)) == ["a0", "a1", "a2", "b0"]
    assert texts(q.receive(10)) == ["c0", "c1", "c2"]  # b is in flight


def test_groups_are_served_oldest_head_first(q, clock):
    q.send("b0", group="b")
    q.send("a0", group="a")
    q.send("b1", group="b")
    assert texts(q.receive(1)) == ["b0"]
    assert texts(q.receive(1)) == ["a0"]


def test_sequence_numbers_increase_within_the_queue(q):
    seqs = [q.send(f"m{i}", group=f"g{i % 3}").sequence for i in range(30)]
    seqs += [r.sequence for _, r in q.send_batch([{"body": f"x{i}", "group": "g"} for i in range(10)]).successful]
    assert all(isinstance(s, int) for s in seqs)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_sequence_numbers_keep_increasing_after_reopening(store):
    b = store()
    q = b.create_queue("q.fifo", content_based_dedup=True)
    s1 = q.send("one", group="g").sequence
    b.close()
    s2 = store().get_queue("q.fifo").send("two", group="g").sequence
    assert s2 > s1


# -- deduplication ---------------------------------------------------------------------------


def test_duplicate_by_explicit_dedup_id_is_accepted_but_not_delivered(broker, clock):
    q = broker.create_queue("q.fifo")
    r1 = q.send("first", group="g", dedup_id="d1")
    before = log_ends(broker, q)
    r2 = q.send("second body, same id", group="g", dedup_id="d1")
    assert log_ends(broker, q) == before  # nothing stored
    assert r2.message_id == r1.message_id and r2.sequence == r1.sequence
    assert r2.duplicate and not r1.duplicate
    assert texts(q.receive(10)) == ["first"]


def test_duplicate_by_content_uses_the_sha256_of_the_body(q):
    r1 = q.send("same", group="g")
    r2 = q.send("same", group="other-group")  # scope "queue": any group
    r3 = q.send(b"same", group="g")
    assert r1.message_id == r2.message_id == r3.message_id
    [m] = q.receive(10)
    assert m.dedup_id == hashlib.sha256(b"same").hexdigest()


def test_explicit_dedup_id_wins_over_content_based_dedup(q):
    q.send("same", group="g", dedup_id="x")
    q.send("same", group="g", dedup_id="y")
    assert len(q.receive(10)) == 2


def test_dedup_window_is_five_minutes(q, clock):
    r1 = q.send("body", group="g")
    clock.advance(299.9)
    assert q.send("body", group="g").message_id == r1.message_id
    clock.advance(0.1)
    r3 = q.send("body", group="g")
    assert r3.message_id != r1.message_id and not r3.duplicate


def test_window_counts_from_the_first_send_not_the_duplicate(q, clock):
    r1 = q.send("body", group="g")
    clock.advance(200)
    q.send("body", group="g")
    clock.advance(100)
    assert q.send("body", group="g").message_id != r1.message_id


def test_dedup_is_remembered_after_the_message_is_deleted(q, clock):
    r1 = q.send("body", group="g")
    [m] = q.receive()
    m.ack()
    clock.advance(60)
    r2 = q.send("body", group="g")
    assert r2.message_id == r1.message_id and r2.duplicate
    assert q.receive(10) == [] and q.stats().total == 0


def test_dedup_is_remembered_across_reopening_the_broker(store, clock):
    b = store()
    q = b.create_queue("q.fifo")
    r1 = q.send("a", group="g", dedup_id="d")
    [m] = q.receive()
    m.ack()
    b.close()
    clock.advance(100)
    q = store().get_queue("q.fifo")
    assert q.send("b", group="g", dedup_id="d").message_id == r1.message_id
    assert q.receive(10) == []
    clock.advance(200)
    assert q.send("c", group="g", dedup_id="d").message_id != r1.message_id


def test_a_dedup_id_reused_after_its_window_is_remembered_across_reopening(store, clock):
    """Replaying the log (no sweep between records) must let the second
    send's window replace the first's, not keep the expired one."""
    b = store()
    q = b.create_queue("q.fifo")
    q.send("first", group="g", dedup_id="d")
    clock.advance(301)
    second = q.send("second", group="g", dedup_id="d")
    assert not second.duplicate
    b.close()
    clock.advance(10)
    q = store().get_queue("q.fifo")
    third = q.send("third", group="g", dedup_id="d")
    assert third.duplicate and third.message_id == second.message_id
    assert sorted(texts(q.receive(10))) == ["first", "second"]


def test_dedup_is_remembered_across_a_checkpoint_that_trimmed_the_log(store, clock):
    b = store(segment_size=4096)
    q = b.create_queue("q.fifo")
    first = q.send("a", group="g", dedup_id="d").message_id
    for i in range(200):
        q.send(f"filler {i}", group="f", dedup_id=f"f{i}")
    while msgs := q.receive(10):
        q.delete_batch([m.receipt for m in msgs])
    q.checkpoint()
    assert q._log.first > 0  # the segment holding the first send is gone
    b.close()
    q = store(segment_size=4096).get_queue("q.fifo")
    assert q.send("again", group="g", dedup_id="d").message_id == first
    assert q.receive(10) == []


def test_duplicates_within_one_batch_collapse_to_the_first(broker):
    q = broker.create_queue("q.fifo")
    res = q.send_batch([{"body": "a", "group": "g", "dedup_id": "1"},
                        {"body": "b", "group": "g", "dedup_id": "1"},
                        {"body": "c", "group": "g", "dedup_id": "2"}])
    (_, r0), (_, r1), (_, r2) = res.successful
    assert r1.message_id == r0.message_id and r1.duplicate
    assert r2.message_id != r0.message_id
    assert texts(q.receive(10)) == ["a", "c"]


def test_dedup_scope_queue_dedups_across_groups(broker):
    q = broker.create_queue("q.fifo", dedup_scope="queue")
    q.send("a", group="g1", dedup_id="d")
    q.send("b", group="g2", dedup_id="d")
    assert texts(q.receive(10)) == ["a"]


def test_dedup_scope_group_dedups_only_within_a_group(broker):
    q = broker.create_queue("q.fifo", dedup_scope="group")
    r1 = q.send("a", group="g1", dedup_id="d")
    r2 = q.send("b", group="g2", dedup_id="d")
    r3 = q.send("c", group="g1", dedup_id="d")
    assert r2.message_id != r1.message_id and r3.message_id == r1.message_id
    got = sorted(texts(q.receive(10)) + texts(q.receive(10)))
    assert got == ["a", "b"]


def test_a_duplicate_is_seen_by_another_broker(store):
    b1, b2 = store(), store()
    q1 = b1.create_queue("q.fifo")
    q2 = b2.get_queue("q.fifo")
    r1 = q1.send("a", group="g", dedup_id="d")
    assert q2.send("b", group="g", dedup_id="d").message_id == r1.message_id
    assert texts(q2.receive(10)) == ["a"]


# -- FIFO refusals -------------------------------------------------------------------------------


def test_fifo_refuses_a_per_message_delay(broker, q):
    before = log_ends(broker, q)
    with pytest.raises(walq.InvalidParameter):
        q.send("m", group="g", delay=5)
    res = q.send_batch([{"body": "m", "group": "g", "delay": 1}])
    assert isinstance(res.failed[0][1], walq.InvalidParameter)
    assert log_ends(broker, q) == before
    q.send("m", group="g", delay=0)  # zero is no delay


def test_fifo_queue_delay_applies_to_every_message(broker, clock):
    q = broker.create_queue("slow.fifo", delay=10, content_based_dedup=True)
    q.send("m", group="g")
    assert q.receive() == [] and q.stats().delayed == 1
    clock.advance(10)
    assert texts(q.receive()) == ["m"]


def test_fifo_send_without_a_group_is_refused(broker, q):
    before = log_ends(broker, q)
    with pytest.raises(walq.InvalidParameter):
        q.send("m")
    assert log_ends(broker, q) == before


def test_fifo_send_without_dedup_id_and_without_content_dedup_is_refused(broker):
    q = broker.create_queue("q.fifo")
    before = log_ends(broker, q)
    with pytest.raises(walq.InvalidParameter):
        q.send("m", group="g")
    assert log_ends(broker, q) == before


def test_fifo_delete_with_an_expired_receipt_is_invalid_receipt(broker, q, clock):
    q.send("m", group="g")
    [m] = q.receive()
    clock.advance(30)
    before = log_ends(broker, q)
    with pytest.raises(walq.InvalidReceipt):
        q.delete(m.receipt)
    assert log_ends(broker, q) == before
    assert texts(q.receive()) == ["m"]


def test_fifo_delete_with_a_superseded_receipt_is_invalid_receipt(q, clock):
    q.send("m", group="g")
    [first] = q.receive()
    clock.advance(30)
    [second] = q.receive()
    with pytest.raises(walq.InvalidReceipt):
        q.delete(first.receipt)
    q.delete(second.receipt)
    assert q.stats().total == 0


def test_fifo_delete_batch_fails_only_the_stale_receipt(q, clock):
    q.send("a", group="a")
    [stale] = q.receive()
    clock.advance(30)
    q.send("b", group="b")
    [a_again, b] = q.receive(1) + q.receive(1)
    res = q.delete_batch([stale.receipt, b.receipt, a_again.receipt])
    assert [i for i, _ in res.successful] == [1, 2]
    assert isinstance(res.failed[0][1], walq.InvalidReceipt)
    assert q.stats().total == 0


def test_fifo_deleting_an_already_deleted_message_succeeds(q):
    q.send("m", group="g")
    [m] = q.receive()
    m.ack()
    m.ack()


def test_purge_on_fifo_unblocks_groups(q):
    q.send_batch([{"body": f"a{i}", "group": "a"} for i in range(3)])
    q.receive()
    q.purge()
    q.send("new", group="a")
    assert texts(q.receive(10)) == ["new"]
