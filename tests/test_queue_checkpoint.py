"""Index, checkpoints and compaction: the index is rebuilt
from the newest checkpoint plus the log tail; segments with no live message
are deleted, the few live messages pinning old segments are rewritten
forward, and disk use under a steady load stays bounded."""

from __future__ import annotations

import os
import random

import pytest

import walq
import walq.queue.queue as queue_module
from walq.queue import checkpoint as ckpt
from walq.queue.index import Index
from walq.queue.native_index import NativeIndex

# Every rule holds with either index (conftest.both_indexes).
pytestmark = pytest.mark.usefixtures("both_indexes")


SEG = 16 * 1024

def snapshot(q):
    """What a reopened queue must reproduce: stats (minus disk use) and the
    index's view of every live message."""
    s = q.stats()
    idx = q._index
    return ((s.visible, s.in_flight, s.delayed, s.oldest_age_s, s.total),
            dict(idx.state), dict(idx.leases), dict(idx.receives), sorted(idx.dedup))


def churn(q, clock, rng, rounds=60, fifo=False):
    """A mixed load: sends (some delayed), receives, deletes, visibility changes."""
    for r in range(rounds):
        entries = []
        for i in range(rng.randint(1, 12)):
            e = {"body": f"r{r}-{i}", "attributes": {"n": i}}
            if fifo:
                e.update(group=f"g{rng.randint(0, 3)}", dedup_id=f"d{r}-{i}")
            elif rng.random() < 0.2:
                e["delay"] = rng.randint(1, 50)
            entries.append(e)
        q.send_batch(entries)
        msgs = q.receive(rng.randint(1, 10), visibility_timeout=rng.randint(1, 40))
        done = [m.receipt for m in msgs if rng.random() < 0.6]
        if done:
            q.delete_batch(done)
        for m in msgs:
            if m.receipt not in done and rng.random() < 0.3:
                q.change_visibility(m.receipt, rng.randint(0, 60))
        clock.advance(rng.random() * 5)


@pytest.mark.parametrize("fifo", [False, True])
@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_reopening_restores_identical_state(store, clock, fifo, with_checkpoint):
    b = store(segment_size=SEG)
    name = "q.fifo" if fifo else "q"
    q = b.create_queue(name)
    churn(q, clock, random.Random(7), fifo=fifo)
    if with_checkpoint:
        q.checkpoint()
        churn(q, clock, random.Random(8), rounds=10, fifo=fifo)  # a tail after it
    before = snapshot(q)
    b.close()
    q = store(segment_size=SEG).get_queue(name)
    assert snapshot(q) == before
    # ... and the reopened queue goes on behaving the same: drain it.
    clock.advance(100)
    drained = 0
    while msgs := q.receive(10):
        drained += len(msgs)
        q.delete_batch([m.receipt for m in msgs])
    assert drained == before[0][4]


def test_a_checkpoint_is_written_automatically_every_checkpoint_every_records(store, clock, monkeypatch):
    monkeypatch.setattr(queue_module, "CHECKPOINT_EVERY", 50)
    b = store()
    q = b.create_queue("q")
    for _ in range(30):
        q.send_batch(["a", "b"])
        for m in q.receive(2):
            m.ack()
    positions = ckpt.list_checkpoints(q._dir)
    assert len(positions) == 1  # older ones are removed
    assert positions[0] >= 50


def test_opening_replays_only_the_records_after_the_checkpoint(store, clock, monkeypatch):
    b = store()
    q = b.create_queue("q")
    q.send_batch([str(i) for i in range(500)])
    for m in q.receive(300):
        m.ack()
    pos = q.checkpoint()
    q.send_batch(["tail-1", "tail-2"])
    q.receive(1)
    tail = q._log.end - pos
    expect = snapshot(q)
    b.close()

    applied = []
    for kind in (Index, NativeIndex):  # whichever the queue uses
        def spy(self, mm, base, seq0, n, buf, real_apply=kind.apply_run):
            applied.extend(range(seq0, seq0 + n))
            return real_apply(self, mm, base, seq0, n, buf)

        monkeypatch.setattr(kind, "apply_run", spy)
    q = store().get_queue("q")
    assert applied == []  # opening reads no record: a handle that only sends never replays
    assert snapshot(q) == expect
    assert sorted(applied) == list(range(pos, pos + tail))


def test_a_damaged_checkpoint_raises_corruption_error(store, clock):
    b = store()
    q = b.create_queue("q")
    q.send("m")
    pos = q.checkpoint()
    d = q._dir
    b.close()
    path = os.path.join(d, ckpt.checkpoint_name(pos))
    with open(path, "r+b") as f:
        f.seek(30)
        byte = f.read(1)
        f.seek(30)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(walq.CorruptionError) as e:
        store().get_queue("q")
    assert e.value.path == path


def test_segments_with_no_live_message_are_deleted(store, clock):
    b = store(segment_size=SEG)
    q = b.create_queue("q")
    for _ in range(20):
        q.send_batch([b"x" * 200] * 20)
    assert len(q._log.segment_bases()) > 5
    while msgs := q.receive(100):
        q.delete_batch([m.receipt for m in msgs])
    q.checkpoint()
    assert len(q._log.segment_bases()) == 1
    assert q._log.first > 0


def test_an_in_flight_message_is_carried_forward_and_its_receipt_still_works(store, clock):
    b = store(segment_size=SEG)
    q = b.create_queue("q")
    q.send("keeper")
    [keeper] = q.receive(visibility_timeout=43_200)
    for _ in range(20):
        q.send_batch([b"x" * 200] * 20)
        q.delete_batch([m.receipt for m in q.receive(20)])
    q.checkpoint()
    assert q._log.first > 0  # the keeper no longer pins segment 0
    assert q.stats().in_flight == 1 and q.receive(10) == []  # still leased
    q.change_visibility(keeper.receipt, 100)  # the old receipt follows the copy
    keeper.ack()
    assert q.stats().total == 0
    q.checkpoint()
    assert len(q._log.segment_bases()) <= 2


def test_a_few_visible_messages_pinning_old_segments_are_rewritten_forward(store, clock):
    b = store(segment_size=SEG)
    q = b.create_queue("q")
    sent = [q.send(f"old-{i}", delay=900, attributes={"i": i}).message_id for i in range(5)]
    for _ in range(20):
        q.send_batch([b"x" * 200] * 20)
        q.delete_batch([m.receipt for m in q.receive(20)])
    q.checkpoint()
    assert len(q._log.segment_bases()) <= 2
    clock.advance(900)
    got = q.receive(10)
    assert sorted(m.message_id for m in got) == sorted(sent)  # same ids, bodies and attributes
    assert sorted(m.text for m in got) == [f"old-{i}" for i in range(5)]
    assert all(m.attributes == {"i": int(m.text[4:])} for m in got)


def test_a_rewritten_message_keeps_its_id_receive_count_and_send_time(store, clock):
    b = store(segment_size=SEG)
    q = b.create_queue("q")
    t0 = clock.now
    sent = q.send("old").message_id
    clock.advance(1)
    first_received = clock.now
    for _ in range(2):
        q.receive(1, visibility_timeout=0)  # received twice, visible again
    for _ in range(20):
        q.send_batch([b"x" * 200] * 20)
        msgs = q.receive(21)
        assert msgs[0].text == "old"  # the lowest sequence comes first
        msgs[0].change_visibility(0)
        q.delete_batch([x.receipt for x in msgs[1:]])
    assert q.stats().visible == 1  # "old" is visible again, and pins segment 0
    clock.advance(5)
    q.checkpoint()
    assert q._log.first > 0
    [again] = q.receive(10)
    assert (again.message_id, again.text, again.sent_at) == (sent, "old", t0)
    assert again.receive_count == 2 + 20 + 1
    assert again.first_received_at == first_received


def disk_bound(q, live_bytes):
    return 2 * live_bytes + 2 * SEG


def test_disk_use_stays_bounded_under_a_steady_send_delete_load(store, clock, monkeypatch):
    monkeypatch.setattr(queue_module, "CHECKPOINT_EVERY", 100)
    b = store(segment_size=SEG)
    q = b.create_queue("q")
    body = b"p" * 100
    # A handful of long-lived messages that would pin the oldest segments.
    q.send_batch([{"body": body, "delay": 900}] * 5)
    worst = 0
    for r in range(300):
        q.send_batch([body] * 10)
        msgs = q.receive(10)
        q.delete_batch([m.receipt for m in msgs])
        s = q.stats()
        live_bytes = s.total * (len(body) + 200)  # generous per-record framing
        worst = max(worst, s.disk_bytes - disk_bound(q, live_bytes))
    assert worst <= 0, f"disk use exceeded 2x live + 2 segments by {worst} bytes"
    assert q.stats().total == 5


def test_expired_messages_have_their_space_reclaimed_by_a_checkpoint(store, clock):
    b = store(segment_size=SEG)
    q = b.create_queue("q", retention=60)
    for _ in range(20):
        q.send_batch([b"x" * 200] * 20)
    assert len(q._log.segment_bases()) > 5
    clock.advance(60)
    q.checkpoint()
    assert len(q._log.segment_bases()) == 1 and q.stats().total == 0


def test_a_broker_whose_position_was_compacted_away_reloads_from_the_checkpoint(store, clock):
    b1, b2 = store(segment_size=SEG), store(segment_size=SEG)
    q1 = b1.create_queue("q")
    q2 = b2.get_queue("q")
    q1.send("survivor", delay=900)
    q2.stats()  # q2's index is now at the log's end
    for _ in range(20):
        q1.send_batch([b"x" * 200] * 20)
        q1.delete_batch([m.receipt for m in q1.receive(20)])
    q1.checkpoint()
    assert q1._log.first > q2._index.applied  # q2's next record is gone
    s = q2.stats()
    assert (s.total, s.delayed) == (1, 1)
    clock.advance(900)
    assert [m.text for m in q2.receive(10)] == ["survivor"]


def test_leases_dedup_and_fifo_groups_survive_a_checkpoint(store, clock):
    b = store()
    q = b.create_queue("q.fifo")
    q.send("a0", group="a", dedup_id="da0")
    q.send("a1", group="a", dedup_id="da1")
    q.send("b0", group="b", dedup_id="db0")
    [a0] = q.receive(1, visibility_timeout=100)
    q.checkpoint()
    b.close()
    q = store().get_queue("q.fifo")
    assert q.send("again", group="a", dedup_id="da0").duplicate
    assert [m.text for m in q.receive(10)] == ["b0"]  # a is in flight
    q.delete(a0.receipt)  # the FIFO receipt is still current
    assert [m.text for m in q.receive(10)] == ["a1"]


def test_receive_counts_carried_into_a_dlq_survive_a_checkpoint(store, clock):
    b = store()
    dlq = b.create_queue("dlq")
    q = b.create_queue("q", dead_letter=walq.RedrivePolicy("dlq", 1))
    q.send("m")
    q.receive()
    clock.advance(30)
    q.receive()
    dlq.checkpoint()
    b.close()
    assert [m.receive_count for m in store().get_queue("dlq").receive()] == [2]


def test_a_long_lease_does_not_pin_every_later_segment(store, clock, monkeypatch):
    monkeypatch.setattr(queue_module, "CHECKPOINT_EVERY", 100)
    b = store(segment_size=SEG)
    q = b.create_queue("q")
    q.send("long job")
    assert len(q.receive(1, visibility_timeout=43_200)) == 1
    for _ in range(200):
        q.send_batch([b"p" * 100] * 10)
        q.delete_batch([m.receipt for m in q.receive(10)])
    assert q.stats().disk_bytes <= disk_bound(q, 300)


def test_a_blocked_fifo_group_does_not_pin_every_later_segment(store, clock, monkeypatch):
    monkeypatch.setattr(queue_module, "CHECKPOINT_EVERY", 100)
    b = store(segment_size=SEG)
    q = b.create_queue("q.fifo", content_based_dedup=True)
    q.send("slow-0", group="slow")
    second = q.send("slow-1", group="slow")
    [slow0] = q.receive(1, visibility_timeout=43_200)
    for r in range(200):
        q.send_batch([{"body": f"{r}-{i}".encode() + b"p" * 100, "group": f"fast{i}"} for i in range(10)])
        q.delete_batch([m.receipt for m in q.receive(10)])
    assert q.stats().disk_bytes <= disk_bound(q, 600)
    # The rewrite kept the group's order, its lease and its sequence numbers.
    assert q._log.first > second.sequence
    slow0.ack()
    [slow1] = q.receive(1)
    assert (slow1.text, slow1.sequence) == ("slow-1", second.sequence)


def test_a_delete_written_before_its_writer_saw_the_rewrite_deletes_the_copy(store, clock, monkeypatch):
    # A standard delete is appended without the lock: another process may
    # have rewritten the message forward (CARRY) after this one last caught
    # up.  The DELETE names the old sequence; applying it must follow the
    # rewrite, in every process, and the queue must stay empty after reopening.
    b1, b2 = store(segment_size=SEG), store(segment_size=SEG)
    q1 = b1.create_queue("q")
    q2 = b2.get_queue("q")
    q2.send("pinned")
    [m] = q2.receive(1, visibility_timeout=300)
    for _ in range(20):
        q1.send_batch([b"x" * 200] * 20)
        q1.delete_batch([x.receipt for x in q1.receive(20)])
    q1.checkpoint()  # copies "pinned" forward and trims its old segment
    assert q1._index.redirect, "the test needs the message rewritten"
    monkeypatch.setattr(q2, "_catch_up", lambda: None)  # q2 has not seen the CARRY
    q2.delete(m.receipt)
    monkeypatch.undo()
    for q in (q1, q2):
        assert q.stats().total == 0
    b1.close()
    b2.close()
    assert store(segment_size=SEG).get_queue("q").stats().total == 0
    clock.advance(301)
    assert store(segment_size=SEG).get_queue("q").receive(10) == []


def test_a_process_coming_due_adopts_the_checkpoint_another_just_wrote(store, clock, monkeypatch):
    monkeypatch.setattr(queue_module, "CHECKPOINT_EVERY", 50)
    b1, b2 = store(), store()
    q1 = b1.create_queue("q")
    q2 = b2.get_queue("q")
    q1.send_batch([b"x"] * 60)
    q1.receive(10)  # q1 comes due first and writes one
    assert ckpt.list_checkpoints(q1._dir)
    calls = []
    monkeypatch.setattr(q2, "checkpoint", lambda: calls.append(1))
    q2.receive(1)  # catches up to the same point: due as well
    assert calls == [], "q2 encoded a second checkpoint of the same records"
    q1.send_batch([b"y"] * 40)  # too few for q1, the sender, to come due
    q2.receive(10)  # q2 is due again, and nobody wrote one since: it writes it
    assert calls == [1]


def test_a_standard_message_copied_forward_keeps_its_place_in_line(store, clock):
    b = store(segment_size=SEG)
    q = b.create_queue("q")
    q.send("old", delay=60)
    for _ in range(20):
        q.send_batch([b"x" * 200] * 20)
        q.delete_batch([m.receipt for m in q.receive(20)])
    q.send("new")  # in the active segment: not copied
    q.checkpoint()  # copies "old" to the end of the log, after "new"
    assert q._index.redirect, "the test needs the message rewritten"
    clock.advance(60)
    assert [m.text for m in q.receive(2)] == ["old", "new"]
    b.close()
    clock.advance(30)  # the leases run out; a reopened index keeps the order too
    assert [m.text for m in store(segment_size=SEG).get_queue("q").receive(2)] == ["old", "new"]


def test_a_producer_does_not_replay_what_a_consumer_just_checkpointed(store, clock, monkeypatch):
    monkeypatch.setattr(queue_module, "CHECKPOINT_EVERY", 50)
    consumer = store().create_queue("q")
    producer = store().get_queue("q")
    producer.send_batch([b"x"] * 30)
    for m in consumer.receive(30):
        m.ack()
    consumer.send_batch([b"y"] * 30)
    consumer.receive(1)  # due: the consumer checkpoints
    written = ckpt.list_checkpoints(consumer._dir)[-1]
    assert written > producer._index.applied

    replayed = []
    for kind in (Index, NativeIndex):  # whichever the queue uses
        def spy(self, mm, base, seq0, n, buf, real_apply=kind.apply_run):
            replayed.append(self)
            return real_apply(self, mm, base, seq0, n, buf)

        monkeypatch.setattr(kind, "apply_run", spy)
    producer.send_batch([b"z"] * 30)  # 60 blind writes: due, but covered
    assert replayed == [] and ckpt.list_checkpoints(consumer._dir)[-1] == written
    # With nobody else checkpointing, the producer does it itself.
    producer.send_batch([b"w"] * 60)
    assert replayed and ckpt.list_checkpoints(consumer._dir)[-1] > written


def test_the_checkpoint_interval_grows_with_the_live_backlog(store, clock, monkeypatch):
    # Each checkpoint encodes every live message; at a fixed interval a
    # growing backlog made every send pay O(backlog).
    monkeypatch.setattr(queue_module, "CHECKPOINT_EVERY", 50)
    q = store().create_queue("q")
    q.send_batch([b"x"] * 300)
    assert ckpt.list_checkpoints(q._dir) == [q._log.end]
    q.send_batch([b"x"] * 70)  # 70 < 300 / 4: not yet
    assert ckpt.list_checkpoints(q._dir) == [300]
    q.send_batch([b"x"] * 50)  # 120 since, of 420 live: 120 > 105
    assert ckpt.list_checkpoints(q._dir) == [420]
    q.send_batch([b"x"] * 100)  # 100 since, of 520 live: 100 < 130
    assert ckpt.list_checkpoints(q._dir) == [420]
