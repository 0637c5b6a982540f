"""Bad input: every case API.md and SQS.md name gets its
specific error, and a refused call writes nothing - neither the catalog log
nor the queue's log moves."""

from __future__ import annotations

import base64

import pytest

import walq
from queue_helpers import FakeClock, log_ends


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def broker(tmp_path, clock):
    b = walq.open(tmp_path / "data", durability="os", clock=clock)
    yield b
    b.close()


@pytest.fixture
def q(broker):
    return broker.create_queue("std")


@pytest.fixture
def fq(broker):
    return broker.create_queue("f.fifo")


class Unchanged:
    """Asserts that the block raised ``error`` and wrote nothing."""

    def __init__(self, broker, *queues):
        self.broker, self.queues = broker, queues

    def raises(self, error, fn, *args, **kw):
        before = log_ends(self.broker, *self.queues)
        listed = self.broker.list_queues()
        what = f"{getattr(fn, '__name__', fn)}(*{args!r}, **{kw!r})"
        try:
            fn(*args, **kw)
        except error as exc:
            err = exc
        except Exception as exc:
            pytest.fail(f"{what} raised {exc!r}, not {error.__name__}")
        else:
            pytest.fail(f"{what} did not raise {error.__name__}")
        assert log_ends(self.broker, *self.queues) == before, f"{what} wrote a record"
        assert self.broker.list_queues() == listed
        return err


# -- queue names and attributes ----------------------------------------------------------


BAD_NAMES = ["", "a" * 81, "a" * 76 + ".fifo", "has space", "dot.name", "slash/x", "uni\u00e9", ".fifo",
             "x.FIFO", "tab\t", "a.fifo.fifo", "percent%"]


def test_create_queue_refuses_a_bad_name(broker):
    for name in BAD_NAMES:
        err = Unchanged(broker).raises(walq.InvalidParameter, broker.create_queue, name)
        assert isinstance(err, ValueError)


def test_queue_name_must_be_a_str(broker):
    for name in (None, 5, b"bytes"):
        Unchanged(broker).raises(walq.InvalidParameter, broker.create_queue, name)
        with pytest.raises(walq.InvalidParameter):
            broker.get_queue(name)


def test_fifo_flag_must_match_the_name(broker):
    u = Unchanged(broker)
    u.raises(walq.InvalidParameter, broker.create_queue, "plain", fifo=True)
    u.raises(walq.InvalidParameter, broker.create_queue, "named.fifo", fifo=False)
    u.raises(walq.InvalidParameter, broker.create_queue, "plain", fifo="yes")


RANGE_CASES = [
    ("visibility_timeout", -1), ("visibility_timeout", 43_201), ("visibility_timeout", 1.5),
    ("retention", 59), ("retention", 1_209_601), ("retention", None),
    ("delay", -1), ("delay", 901), ("delay", "5"),
    ("max_message_size", 1_023), ("max_message_size", 1_048_577), ("max_message_size", True),
    ("receive_wait", -1), ("receive_wait", 21), ("receive_wait", 0.5),
    ("dedup_scope", "global"), ("content_based_dedup", "yes"), ("content_based_dedup", 1),
]


def test_create_queue_refuses_attributes_out_of_range(broker):
    for key, value in RANGE_CASES:
        name = "r.fifo" if key in ("dedup_scope", "content_based_dedup") else "r"
        Unchanged(broker).raises(walq.InvalidParameter, broker.create_queue, name, **{key: value})


def test_range_ends_are_accepted(broker):
    lo = dict(visibility_timeout=0, retention=60, delay=0, max_message_size=1_024, receive_wait=0)
    hi = dict(visibility_timeout=43_200, retention=1_209_600, delay=900, max_message_size=1_048_576,
              receive_wait=20)
    for name, values in (("lo", lo), ("hi", hi)):
        a = broker.create_queue(name, **values).attributes
        assert {k: getattr(a, k) for k in values} == values


def test_fifo_only_attributes_are_refused_on_standard_queues(broker):
    u = Unchanged(broker)
    u.raises(walq.InvalidParameter, broker.create_queue, "s", content_based_dedup=True)
    u.raises(walq.InvalidParameter, broker.create_queue, "s", dedup_scope="group")


def test_create_queue_refuses_unknown_keywords(broker):
    before = log_ends(broker)
    with pytest.raises(TypeError):
        broker.create_queue("s", colour="blue")
    assert log_ends(broker) == before


def test_set_attributes_refuses_values_out_of_range(broker, q):
    original = q.attributes
    for key, value in RANGE_CASES:
        if key not in ("dedup_scope", "content_based_dedup"):
            Unchanged(broker, q).raises(walq.InvalidParameter, q.set_attributes, **{key: value})
    assert q.attributes == original


def test_set_attributes_refuses_fifo_name_and_unknown_keys(broker, q, fq):
    u = Unchanged(broker, q, fq)
    u.raises(walq.InvalidParameter, q.set_attributes, fifo=True)
    u.raises(walq.InvalidParameter, fq.set_attributes, fifo=False)
    u.raises(walq.InvalidParameter, q.set_attributes, name="other")
    u.raises(walq.InvalidParameter, q.set_attributes, colour="blue")
    u.raises(walq.InvalidParameter, q.set_attributes, content_based_dedup=True)
    u.raises(walq.InvalidParameter, fq.set_attributes, dedup_scope="everything")
    u.raises(walq.InvalidParameter, q.set_attributes, dead_letter="std")
    u.raises(walq.InvalidParameter, q.set_attributes, visibility_timeout=10, delay=-1)  # all or nothing
    assert q.attributes.visibility_timeout == 30


def test_fifo_queue_settings_can_be_changed(fq):
    fq.set_attributes(content_based_dedup=True, dedup_scope="group")
    assert (fq.attributes.content_based_dedup, fq.attributes.dedup_scope) == (True, "group")


# -- sending ------------------------------------------------------------------------------------


def test_send_refuses_empty_and_non_bytes_bodies(broker, q):
    for body in ("", b"", bytearray(), None, 5, 1.5, ["x"], {"body": "x"}):
        Unchanged(broker, q).raises(walq.InvalidParameter, q.send, body)


def test_send_accepts_bytearray_and_memoryview(q):
    q.send(bytearray(b"ba"))
    q.send(memoryview(b"mv"))
    assert [m.body for m in q.receive(2)] == [b"ba", b"mv"]


BAD_ATTRIBUTES = [
    {f"a{i}": "v" for i in range(11)},  # more than 10
    {"": "v"},
    {"a" * 257: "v"},
    {"has space": "v"},
    {"bad/char": "v"},
    {"\u00e9t\u00e9": "v"},
    {"AWS.thing": "v"},
    {"aws.thing": "v"},
    {"Amazon.thing": "v"},
    {"amazon.thing": "v"},
    {".leading": "v"},
    {"trailing.": "v"},
    {"double..dot": "v"},
    {"empty": ""},
    {"empty": b""},
    {"bool": True},
    {"none": None},
    {"list": [1]},
    {"dict": {"a": 1}},
    {"nan": float("nan")},
    {"inf": float("inf")},
    {5: "int name"},
    [("k", "v")],
    "k=v",
]


def test_send_refuses_bad_message_attributes(broker, q, fq):
    for attributes in BAD_ATTRIBUTES:
        Unchanged(broker, q).raises(walq.InvalidParameter, q.send, "body", attributes=attributes)
        Unchanged(broker, fq).raises(walq.InvalidParameter, fq.send, "body", attributes=attributes,
                                     group="g", dedup_id="d")
        res = q.send_batch([{"body": "b", "attributes": attributes}])
        assert isinstance(res.failed[0][1], walq.InvalidParameter) and not res.successful


def test_send_accepts_good_message_attribute_names(q):
    good = {name: "v" for name in ("a" * 256, "AWSthing", "aws", "Amazonia.x", "my.AWS.x", "a.b-c_d", "0")}
    q.send("body", attributes=good)
    assert q.receive()[0].attributes == good


def test_send_refuses_a_delay_out_of_range(broker, q):
    for delay in (-1, 901, 1.5, "5", True):
        Unchanged(broker, q).raises(walq.InvalidParameter, q.send, "b", delay=delay)


def test_send_refuses_dedup_id_on_a_standard_queue(broker, q):
    Unchanged(broker, q).raises(walq.InvalidParameter, q.send, "b", dedup_id="d")


def test_fifo_send_refuses_missing_or_bad_group_dedup_and_delay(broker, fq):
    for kw in ({}, {"dedup_id": "d"}, {"group": "g"}, {"group": "", "dedup_id": "d"},
               {"group": "g" * 129, "dedup_id": "d"}, {"group": "g", "dedup_id": "d" * 129},
               {"group": "sp ace", "dedup_id": "d"}, {"group": 5, "dedup_id": "d"},
               {"group": "g", "dedup_id": "\u00e9"}, {"group": "g", "dedup_id": "d", "delay": 1},
               {"group": "g", "dedup_id": "d", "delay": 900}):
        Unchanged(broker, fq).raises(walq.InvalidParameter, fq.send, "b", **kw)


def test_fifo_ids_of_128_punctuation_characters_are_accepted(fq):
    ident = "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" * 4
    fq.send("b", group=ident[:128], dedup_id=ident[-128:])
    assert fq.receive()[0].group == ident[:128]


def test_send_batch_refuses_an_empty_or_non_list_batch(broker, q):
    for entries in ([], None, "abc", ("x" for _ in range(2)), {"body": "x"}):
        Unchanged(broker, q).raises(walq.BatchError, q.send_batch, entries)


def test_send_batch_with_only_bad_entries_writes_nothing(broker, q):
    before = log_ends(broker, q)
    res = q.send_batch(["", {"body": "x", "delay": -1}, {"body": "x", "attributes": {"AWS.x": "v"}},
                        {"body": "x", "extra": 1}, {"attributes": {"a": "b"}}])
    assert res.successful == [] and [i for i, _ in res.failed] == [0, 1, 2, 3, 4]
    assert log_ends(broker, q) == before


def test_fifo_send_batch_with_only_bad_entries_writes_nothing(broker, fq):
    before = log_ends(broker, fq)
    res = fq.send_batch([{"body": "x"}, {"body": "x", "group": "g"}, {"body": "", "group": "g", "dedup_id": "d"}])
    assert res.successful == [] and len(res.failed) == 3
    assert log_ends(broker, fq) == before


# -- receiving ------------------------------------------------------------------------------------


def test_receive_refuses_arguments_out_of_range(broker, q):
    q.send("m")
    for kw in ({"max_messages": 0}, {"max_messages": 1001}, {"max_messages": -1},
               {"max_messages": 1.0}, {"max_messages": True}, {"max_messages": "1"},
               {"wait": -1}, {"wait": 21}, {"wait": "1"}, {"wait": True},
               {"visibility_timeout": -1}, {"visibility_timeout": 43_201},
               {"visibility_timeout": "5"}, {"visibility_timeout": False}):
        Unchanged(broker, q).raises(walq.InvalidParameter, q.receive, **kw)
    assert q.stats().visible == 1


# -- receipts -------------------------------------------------------------------------------------


def forged(receipt: str, byte: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(receipt + "=="))
    raw[byte] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


@pytest.fixture
def receipt(q):
    q.send("m")
    return q.receive(visibility_timeout=300)[0].receipt


def bad_receipts(good):
    return ["", "garbage", good[:-1], good + "A", good[:-2] + ("AA" if good[-2:] != "AA" else "BB"),
            "!" * 38, None, 5, b"bytes", good.encode(), forged(good, 3), forged(good, 10), forged(good, 20)]


def test_malformed_receipts_raise_invalid_receipt_and_write_nothing(broker, q, receipt):
    u = Unchanged(broker, q)
    before = log_ends(broker, q)
    for bad in bad_receipts(receipt):
        u.raises(walq.InvalidReceipt, q.delete, bad)
        u.raises(walq.InvalidReceipt, q.change_visibility, bad, 10)
        res = q.delete_batch([bad])
        assert isinstance(res.failed[0][1], walq.InvalidReceipt) and not res.successful
        res = q.change_visibility_batch([(bad, 10)])
        assert isinstance(res.failed[0][1], walq.InvalidReceipt) and not res.successful
    assert log_ends(broker, q) == before
    assert q.stats().in_flight == 1
    q.delete(receipt)  # the real one still works
    assert q.stats().total == 0


def test_invalid_receipt_is_a_value_error(q, receipt):
    with pytest.raises(ValueError):
        q.delete("garbage")


def test_a_receipt_from_another_queue_is_invalid(broker, q, receipt):
    other = broker.create_queue("other")
    other.send("o")
    Unchanged(broker, q, other).raises(walq.InvalidReceipt, other.delete, receipt)
    Unchanged(broker, q, other).raises(walq.InvalidReceipt, other.change_visibility, receipt, 0)
    assert q.stats().in_flight == 1 and other.stats().visible == 1


def test_a_receipt_from_a_deleted_and_recreated_queue_is_invalid(broker, q, receipt):
    broker.delete_queue("std")
    fresh = broker.create_queue("std")
    fresh.send("new")
    Unchanged(broker, fresh).raises(walq.InvalidReceipt, fresh.delete, receipt)
    assert fresh.stats().visible == 1


def test_change_visibility_refuses_seconds_out_of_range(broker, q, receipt):
    for seconds in (-1, 43_201, "5", None, True):
        Unchanged(broker, q).raises(walq.InvalidParameter, q.change_visibility, receipt, seconds)


def test_batch_calls_refuse_empty_or_non_list_batches(broker, q, receipt):
    u = Unchanged(broker, q)
    for entries in ([], None, "x", ("r" for _ in range(1)), {"r": 1}):
        u.raises(walq.BatchError, q.delete_batch, entries)
        u.raises(walq.BatchError, q.change_visibility_batch, entries)


def test_change_visibility_batch_with_only_bad_entries_writes_nothing(broker, q, receipt):
    before = log_ends(broker, q)
    res = q.change_visibility_batch([(receipt, -1), ("garbage", 5), ("x",), (receipt, 43_201)])
    assert res.successful == [] and len(res.failed) == 4
    assert log_ends(broker, q) == before


def test_delete_batch_with_only_bad_receipts_writes_nothing(broker, q, receipt):
    before = log_ends(broker, q)
    res = q.delete_batch(["garbage", receipt[:-1], None])
    assert res.successful == [] and len(res.failed) == 3
    assert log_ends(broker, q) == before


def test_fifo_expired_receipt_writes_nothing(broker, fq, clock):
    fq.send("m", group="g", dedup_id="d")
    [m] = fq.receive()
    clock.advance(30)
    Unchanged(broker, fq).raises(walq.InvalidReceipt, fq.delete, m.receipt)
    Unchanged(broker, fq).raises(walq.MessageNotInflight, fq.change_visibility, m.receipt, 5)


# -- missing queues -----------------------------------------------------------------------------


def test_deleting_or_getting_a_missing_queue_writes_nothing(broker, q):
    u = Unchanged(broker, q)
    u.raises(walq.QueueDoesNotExist, broker.delete_queue, "missing")
    u.raises(walq.QueueDoesNotExist, broker.get_queue, "missing")
    u.raises(walq.QueueDoesNotExist, broker.dead_letter_sources, "missing")
    for bad in (5, None, b"q"):
        u.raises(walq.InvalidParameter, broker.delete_queue, bad)
        u.raises(walq.InvalidParameter, broker.get_queue, bad)
        u.raises(walq.InvalidParameter, broker.dead_letter_sources, bad)


def test_operations_on_a_deleted_queue_raise_queue_does_not_exist(broker, q, receipt):
    broker.delete_queue("std")
    before = log_ends(broker)
    for call in (lambda: q.send("x"), lambda: q.send_batch(["x"]), lambda: q.receive(),
                 lambda: q.delete(receipt), lambda: q.delete_batch([receipt]),
                 lambda: q.change_visibility(receipt, 1), lambda: q.change_visibility_batch([(receipt, 1)]),
                 lambda: q.purge(), lambda: q.stats(), lambda: q.attributes,
                 lambda: q.set_attributes(delay=1), lambda: broker.delete_queue("std"),
                 lambda: broker.get_queue("std")):
        with pytest.raises(walq.QueueDoesNotExist):
            call()
    assert log_ends(broker) == before


# -- closed broker ----------------------------------------------------------------------------------


def test_every_call_on_a_closed_broker_raises_broker_closed(tmp_path):
    b = walq.open(tmp_path, durability="os")
    q = b.create_queue("q")
    fq = b.create_queue("f.fifo", content_based_dedup=True)
    b.create_queue("dlq")
    q.send("m")
    [m] = q.receive()
    ends = log_ends(b, q, fq)
    b.close()
    calls = {
        "create_queue": lambda: b.create_queue("new"),
        "get_queue": lambda: b.get_queue("q"),
        "list_queues": lambda: b.list_queues(),
        "delete_queue": lambda: b.delete_queue("q"),
        "dead_letter_sources": lambda: b.dead_letter_sources("dlq"),
        "move_messages": lambda: b.move_messages("dlq"),
        "send": lambda: q.send("x"),
        "fifo send": lambda: fq.send("x", group="g"),
        "send_batch": lambda: q.send_batch(["x"]),
        "receive": lambda: q.receive(),
        "receive wait": lambda: q.receive(wait=1),
        "delete": lambda: q.delete(m.receipt),
        "ack": lambda: m.ack(),
        "delete_batch": lambda: q.delete_batch([m.receipt]),
        "change_visibility": lambda: q.change_visibility(m.receipt, 5),
        "message change_visibility": lambda: m.change_visibility(5),
        "change_visibility_batch": lambda: q.change_visibility_batch([(m.receipt, 5)]),
        "purge": lambda: q.purge(),
        "stats": lambda: q.stats(),
        "attributes": lambda: q.attributes,
        "set_attributes": lambda: q.set_attributes(delay=1),
    }
    for what, call in calls.items():
        with pytest.raises(walq.BrokerClosed):
            call()
            pytest.fail(f"{what} worked on a closed broker")
    # Nothing was written after close: a new broker sees the old state.
    with walq.open(tmp_path, durability="os") as again:
        assert log_ends(again, again.get_queue("q"), again.get_queue("f.fifo")) == ends
        assert again.list_queues() == ["dlq", "f.fifo", "q"]
        s = again.get_queue("q").stats()
        assert (s.in_flight, s.total) == (1, 1)
        assert again.get_queue("q").attributes.delay == 0


def test_open_refuses_bad_arguments(tmp_path):
    for kw in ({"durability": "never"}, {"sync_interval": 0}, {"sync_interval": -1}, {"clock": 5},
               {"segment_size": 10}):
        with pytest.raises(walq.InvalidParameter):
            walq.open(tmp_path, **kw)
    with pytest.raises(walq.InvalidParameter):
        walq.open(5)
