"""Dead-letter queues: redrive policy, the move on the receive
that would exceed max_receives, dead_letter_sources, move_messages."""

from __future__ import annotations

import pytest

import walq
from queue_helpers import log_ends

# Every rule holds with either index (conftest.both_indexes).
pytestmark = pytest.mark.usefixtures("both_indexes")

def receive_n_times(q, clock, n, **kw):
    """Receives the single message ``n`` times, letting each lease run out."""
    got = []
    for _ in range(n):
        msgs = q.receive(10, **kw)
        got += msgs
        clock.advance(q.attributes.visibility_timeout)
    return got


def test_a_message_moves_on_the_receive_that_would_exceed_max_receives(broker, clock):
    dlq = broker.create_queue("orders-dlq")
    q = broker.create_queue("orders", dead_letter=walq.RedrivePolicy("orders-dlq", max_receives=3))
    sent = q.send("espresso", attributes={"table": 4, "size": "double"})
    got = receive_n_times(q, clock, 3)
    assert [m.receive_count for m in got] == [1, 2, 3]
    assert dlq.stats().total == 0  # a lease running out does not move it
    assert q.receive(10) == []  # the 4th receive moves it instead of delivering
    assert q.stats().total == 0
    [m] = dlq.receive()
    assert m.message_id == sent.message_id
    assert m.text == "espresso" and m.attributes == {"table": 4, "size": "double"}
    assert m.receive_count == 4  # the count carried over, plus this receive


def test_max_receives_of_one_moves_on_the_second_receive(broker, clock):
    dlq = broker.create_queue("dlq")
    q = broker.create_queue("q", dead_letter=walq.RedrivePolicy("dlq", 1))
    q.send("m")
    assert len(q.receive()) == 1
    clock.advance(30)
    assert q.receive() == []
    assert [m.receive_count for m in dlq.receive()] == [2]


def test_a_message_deleted_in_time_never_moves(broker, clock):
    dlq = broker.create_queue("dlq")
    q = broker.create_queue("q", dead_letter=walq.RedrivePolicy("dlq", 2))
    q.send("m")
    receive_n_times(q, clock, 1)
    [m] = q.receive()
    m.ack()
    clock.advance(100)
    assert q.receive() == [] and dlq.stats().total == 0


def test_a_receive_delivers_the_others_while_moving_one(broker, clock):
    dlq = broker.create_queue("dlq")
    q = broker.create_queue("q", dead_letter=walq.RedrivePolicy("dlq", 1))
    q.send("poison")
    [p] = q.receive()
    clock.advance(30)
    q.send("fresh")
    assert [m.text for m in q.receive(10)] == ["fresh"]
    assert [m.text for m in dlq.receive(10)] == ["poison"]


def test_standard_dlq_keeps_the_original_send_time(broker, clock):
    dlq = broker.create_queue("dlq", retention=600)
    q = broker.create_queue("q", dead_letter=walq.RedrivePolicy("dlq", 1))
    sent_at = clock.now
    q.send("m")
    q.receive()
    clock.advance(30)
    q.receive()
    [m] = dlq.receive(visibility_timeout=0)
    assert m.sent_at == sent_at
    clock.advance(570)  # 600 s after the original send: expired in the DLQ
    assert dlq.receive() == []


def test_a_moved_message_keeps_its_first_receive_time(broker, clock):
    dlq = broker.create_queue("dlq")
    q = broker.create_queue("q", dead_letter=walq.RedrivePolicy("dlq", 2))
    q.send("m")
    clock.advance(5)
    first = clock.now
    got = receive_n_times(q, clock, 2)
    assert [m.first_received_at for m in got] == [first, first]
    assert q.receive(10) == []  # moved
    [m] = dlq.receive()
    assert m.first_received_at == first and m.receive_count == 3


def test_a_moved_message_keeps_its_first_receive_time_through_the_native_receive(broker, clock, monkeypatch):
    """The one-call receive reads the first receive time a move carried
    from the SEND record itself (the general path above reads it too)."""
    dlq = broker.create_queue("dlq")
    q = broker.create_queue("q", dead_letter=walq.RedrivePolicy("dlq", 1))
    dlq.send("warm-up")
    [warm] = dlq.receive()  # a handle's first receive takes the general path
    warm.ack()
    q.send(b"plain")
    q.send("with attributes", attributes={"k": "v"})
    clock.advance(5)
    first = clock.now
    assert len(q.receive(10)) == 2
    clock.advance(q.attributes.visibility_timeout)
    assert q.receive(10) == []  # both moved
    clock.advance(7)
    native = []
    real = type(dlq)._native_messages
    monkeypatch.setattr(type(dlq), "_native_messages", lambda self, *a: native.append(self.name) or real(self, *a))
    got = sorted(dlq.receive(10), key=lambda m: m.body)
    assert native == (["dlq"] if type(dlq._index).__name__ == "NativeIndex" else [])
    assert [(m.body, m.attributes, m.first_received_at, m.receive_count) for m in got] == [
        (b"plain", {}, first, 2), (b"with attributes", {"k": "v"}, first, 2)]
    assert got[0].sent_at == got[1].sent_at == first - 5


def test_fifo_dlq_resets_the_send_time_on_move(broker, clock):
    dlq = broker.create_queue("dlq.fifo", retention=600)
    q = broker.create_queue("q.fifo", content_based_dedup=True, dead_letter=walq.RedrivePolicy("dlq.fifo", 1))
    q.send("m", group="g")
    q.receive()
    clock.advance(30)
    moved_at = clock.now
    assert q.receive() == []
    [m] = dlq.receive(visibility_timeout=0)
    assert m.sent_at == moved_at and m.group == "g" and m.receive_count == 2
    clock.advance(599)
    assert len(dlq.receive()) == 1


def test_a_fifo_group_after_a_moved_message_is_delivered_in_order(broker, clock):
    dlq = broker.create_queue("dlq.fifo")
    q = broker.create_queue("q.fifo", content_based_dedup=True, dead_letter=walq.RedrivePolicy("dlq.fifo", 1))
    for i in range(3):
        q.send(f"m{i}", group="g")
    assert [m.text for m in q.receive()] == ["m0"]
    clock.advance(30)
    got = q.receive(10)
    assert [m.text for m in got] == ["m1", "m2"]
    assert [m.text for m in dlq.receive(10)] == ["m0"]


def test_dlq_policy_added_later_applies_to_existing_messages(broker, clock):
    dlq = broker.create_queue("dlq")
    q = broker.create_queue("q")
    q.send("m")
    receive_n_times(q, clock, 2)
    q.set_attributes(dead_letter=walq.RedrivePolicy("dlq", 2))
    assert q.receive() == []
    assert dlq.receive()[0].receive_count == 3


def test_messages_stay_put_when_the_dead_letter_queue_was_deleted(broker, clock):
    broker.create_queue("dlq")
    q = broker.create_queue("q", dead_letter=walq.RedrivePolicy("dlq", 1))
    q.send("m")
    receive_n_times(q, clock, 1)
    broker.delete_queue("dlq")
    [m] = q.receive()
    assert m.receive_count == 2


def test_dead_letter_sources_lists_the_queues_that_redrive_to_a_queue(broker):
    broker.create_queue("dlq")
    broker.create_queue("other-dlq")
    broker.create_queue("b", dead_letter=walq.RedrivePolicy("dlq", 5))
    broker.create_queue("a", dead_letter=walq.RedrivePolicy("dlq", 2))
    broker.create_queue("c", dead_letter=walq.RedrivePolicy("other-dlq", 2))
    broker.create_queue("d")
    assert broker.dead_letter_sources("dlq") == ["a", "b"]
    assert broker.dead_letter_sources("other-dlq") == ["c"]
    assert broker.dead_letter_sources("d") == []
    broker.get_queue("b").set_attributes(dead_letter=None)
    assert broker.dead_letter_sources("dlq") == ["a"]
    with pytest.raises(walq.QueueDoesNotExist):
        broker.dead_letter_sources("missing")


# -- move_messages -------------------------------------------------------------------------


def dead_letter_two_messages(broker, clock, names=("a", "b")):
    dlq = broker.create_queue("dlq")
    sources = [broker.create_queue(n, dead_letter=walq.RedrivePolicy("dlq", 1)) for n in names]
    sent = {}
    for s in sources:
        sent[s.name] = s.send(f"from {s.name}", attributes={"src": s.name}).message_id
        s.receive()
    clock.advance(30)
    for s in sources:
        assert s.receive() == []
    assert dlq.stats().visible == len(sources)
    return dlq, sources, sent


def test_move_messages_sends_each_message_back_to_its_source(broker, clock):
    dlq, (a, b), sent = dead_letter_two_messages(broker, clock)
    assert broker.move_messages("dlq") == 2
    assert dlq.stats().total == 0
    [ma], [mb] = a.receive(10), b.receive(10)
    assert (ma.message_id, ma.text, ma.attributes) == (sent["a"], "from a", {"src": "a"})
    assert (mb.message_id, mb.text) == (sent["b"], "from b")
    assert ma.receive_count == 1 and mb.receive_count == 1  # a fresh count


def test_a_moved_back_message_is_dead_lettered_again_after_max_receives(broker, clock):
    dlq, (a, _b), sent = dead_letter_two_messages(broker, clock)
    broker.move_messages("dlq")
    assert [m.receive_count for m in a.receive()] == [1]
    clock.advance(30)
    assert a.receive() == []
    [m] = dlq.receive(10)
    assert (m.message_id, m.receive_count) == (sent["a"], 2)


def test_move_messages_to_a_named_destination(broker, clock):
    dlq, (a, b), sent = dead_letter_two_messages(broker, clock)
    dest = broker.create_queue("dest")
    assert broker.move_messages("dlq", destination="dest") == 2
    got = dest.receive(10)
    assert sorted(m.message_id for m in got) == sorted(sent.values())
    assert all(m.receive_count == 1 for m in got)
    assert a.stats().total == 0 and b.stats().total == 0 and dlq.stats().total == 0


def test_move_messages_moves_only_visible_messages(broker, clock):
    dlq, (a, b), _ = dead_letter_two_messages(broker, clock)
    [held] = dlq.receive()
    assert broker.move_messages("dlq") == 1
    assert dlq.stats().in_flight == 1
    held.ack()


def test_move_messages_leaves_messages_whose_source_is_gone(broker, clock):
    dlq, (a, b), _ = dead_letter_two_messages(broker, clock)
    broker.delete_queue("a")
    assert broker.move_messages("dlq") == 1
    assert [m.text for m in dlq.receive(10)] == ["from a"]


def test_move_messages_leaves_messages_sent_straight_to_the_dlq(broker):
    dlq = broker.create_queue("dlq")
    dlq.send("direct")
    assert broker.move_messages("dlq") == 0
    assert dlq.stats().visible == 1


def test_move_messages_between_fifo_queues_keeps_groups_in_order(broker, clock):
    dlq = broker.create_queue("dlq.fifo")
    q = broker.create_queue("q.fifo", content_based_dedup=True, dead_letter=walq.RedrivePolicy("dlq.fifo", 1))
    for g in ("x", "y"):
        for i in range(3):
            q.send(f"{g}{i}", group=g)
    for _ in range(2):  # every message is received once, then moved on the next try
        while msgs := q.receive(10):
            pass
        clock.advance(30)
    while q.receive(10):
        clock.advance(30)
    assert q.stats().total == 0 and dlq.stats().visible == 6
    assert broker.move_messages("dlq.fifo") == 6
    got = {"x": [], "y": []}
    while msgs := q.receive(10):
        for m in msgs:
            got[m.group].append(m.text)
            assert m.receive_count == 1
        q.delete_batch([m.receipt for m in msgs])
    assert got == {"x": ["x0", "x1", "x2"], "y": ["y0", "y1", "y2"]}


def test_move_messages_to_a_destination_of_the_other_kind_is_refused(broker, clock):
    dlq, _, _ = dead_letter_two_messages(broker, clock)
    broker.create_queue("dest.fifo")
    before = log_ends(broker, dlq)
    with pytest.raises(walq.InvalidParameter):
        broker.move_messages("dlq", destination="dest.fifo")
    assert log_ends(broker, dlq) == before
    assert dlq.stats().visible == 2


def test_move_messages_with_missing_queues_raises(broker, clock):
    dlq, _, _ = dead_letter_two_messages(broker, clock)
    before = log_ends(broker, dlq)
    with pytest.raises(walq.QueueDoesNotExist):
        broker.move_messages("missing")
    with pytest.raises(walq.QueueDoesNotExist):
        broker.move_messages("dlq", destination="missing")
    assert log_ends(broker, dlq) == before


# -- policy errors -----------------------------------------------------------------------------


def test_redrive_policy_max_receives_is_1_to_1000():
    walq.RedrivePolicy("dlq", 1)
    walq.RedrivePolicy("dlq", 1000)
    for bad in (0, 1001, -1, 2.5, True, "3", None):
        with pytest.raises(walq.InvalidParameter):
            walq.RedrivePolicy("dlq", bad)
    for bad in ("", None, 5):
        with pytest.raises(walq.InvalidParameter):
            walq.RedrivePolicy(bad, 3)


def test_dead_letter_queue_must_exist(broker):
    before = log_ends(broker)
    with pytest.raises(walq.QueueDoesNotExist):
        broker.create_queue("q", dead_letter=walq.RedrivePolicy("missing", 3))
    assert log_ends(broker) == before and broker.list_queues() == []
    q = broker.create_queue("q")
    before = log_ends(broker, q)
    with pytest.raises(walq.QueueDoesNotExist):
        q.set_attributes(dead_letter=walq.RedrivePolicy("missing", 3))
    assert log_ends(broker, q) == before
    assert q.attributes.dead_letter is None


@pytest.mark.parametrize("source, dlq", [("q", "dlq.fifo"), ("q.fifo", "dlq")])
def test_dead_letter_queue_must_be_of_the_same_kind(broker, source, dlq):
    broker.create_queue(dlq)
    before = log_ends(broker)
    with pytest.raises(walq.InvalidParameter):
        broker.create_queue(source, dead_letter=walq.RedrivePolicy(dlq, 3))
    assert log_ends(broker) == before
    assert broker.list_queues() == [dlq]
    q = broker.create_queue(source)
    with pytest.raises(walq.InvalidParameter):
        q.set_attributes(dead_letter=walq.RedrivePolicy(dlq, 3))


def test_a_queue_cannot_be_its_own_dead_letter_queue(broker):
    with pytest.raises(walq.InvalidParameter):
        broker.create_queue("q", dead_letter=walq.RedrivePolicy("q", 3))


def test_dead_letter_must_be_a_redrive_policy(broker):
    broker.create_queue("dlq")
    with pytest.raises(walq.InvalidParameter):
        broker.create_queue("q", dead_letter={"queue": "dlq", "max_receives": 3})
