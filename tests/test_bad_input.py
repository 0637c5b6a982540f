"""Inputs that were accepted or crashed with a builtin error: each now gets
InvalidParameter and writes nothing (neither the catalog log nor the
queue's log moves, and no file appears)."""

from __future__ import annotations

import enum
import os

import pytest

import walq
from queue_helpers import FakeClock, log_ends


@pytest.fixture
def broker(tmp_path):
    b = walq.open(tmp_path / "data", durability="os", clock=FakeClock())
    yield b
    b.close()


def refused(broker, fn, *args, error=walq.InvalidParameter, **kw):
    queues = [broker.get_queue(n) for n in broker.list_queues()]
    before, listed = log_ends(broker, *queues), broker.list_queues()
    with pytest.raises(error):
        fn(*args, **kw)
    assert log_ends(broker, *queues) == before
    assert broker.list_queues() == listed


@pytest.mark.parametrize("name", ["q\n", "q\n.fifo", "q\r", "\nq", "q\n\n"])
def test_queue_names_with_a_newline_are_refused(broker, name):
    refused(broker, broker.create_queue, name)


def test_a_redrive_policy_naming_an_invalid_queue_is_refused():
    with pytest.raises(walq.InvalidParameter):
        walq.RedrivePolicy("dlq\n", 3)


@pytest.mark.parametrize("name", ["a\n", "a.b\n", "x" * 10 + "\n"])
def test_attribute_names_with_a_newline_are_refused(broker, name):
    q = broker.create_queue("q")
    refused(broker, q.send, b"body", attributes={name: "v"})


@pytest.mark.parametrize("field", ["group", "dedup_id"])
def test_fifo_ids_with_a_newline_are_refused(broker, field):
    q = broker.create_queue("q.fifo")
    kw = {"group": "g", "dedup_id": "d"}
    kw[field] += "\n"
    refused(broker, q.send, b"body", **kw)


def test_a_standard_queues_group_with_a_newline_is_refused(broker):
    q = broker.create_queue("q")
    refused(broker, q.send, b"body", group="g\n")


def test_lone_surrogates_in_bodies_and_attribute_values_are_refused(broker):
    q = broker.create_queue("q")
    refused(broker, q.send, "bad \ud800 text")
    refused(broker, q.send, b"body", attributes={"a": "x\udfff"})
    result = q.send_batch(["fine", "bad \udc80"])
    assert [i for i, _ in result.successful] == [0]
    assert [(i, type(e)) for i, e in result.failed] == [(1, walq.InvalidParameter)]


@pytest.mark.parametrize("value", [10**4300, -(10**4300), 10**127, -(10**129), 1e300, -1e200],
                         ids=["1e4300", "-1e4300", "1e127", "-1e129", "1e300f", "-1e200f"])
def test_numbers_beyond_the_sqs_range_are_refused(broker, value):
    q = broker.create_queue("q")
    refused(broker, q.send, b"body", attributes={"n": value})


def test_numbers_at_the_sqs_limits_round_trip(broker):
    q = broker.create_queue("q")
    q.send(b"body", attributes={"hi": 10**126, "lo": -(10**128), "f": 1.5e125})
    (m,) = q.receive(1)
    assert m.attributes == {"hi": 10**126, "lo": -(10**128), "f": 1.5e125}


def test_an_int_subclass_number_is_stored_as_its_value(broker):
    class Color(enum.IntEnum):
        RED = 7

    q = broker.create_queue("q")
    q.send(b"body", attributes={"c": Color.RED})
    (m,) = q.receive(1)  # used to fail: the stored text was "<Color.RED: 7>"
    assert m.attributes == {"c": 7}


def test_a_store_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"data")
    with pytest.raises(walq.InvalidParameter, match="not a directory"):
        walq.open(f)
    with pytest.raises(walq.InvalidParameter, match="not a directory"):
        walq.open(f / "below")
    assert f.read_bytes() == b"data" and os.listdir(tmp_path) == ["file"]


@pytest.mark.parametrize("path", ["/proc", "/proc/walq-store", "/proc/self/walq", "/sys/walq-store"])
def test_a_store_path_on_proc_or_sys_is_refused(path):
    top = "/" + path.split("/")[1]
    if not os.path.ismount(top):
        pytest.skip(f"{top} is not mounted here")
    with pytest.raises(walq.InvalidParameter, match="file system"):
        walq.open(path)
    assert not os.path.exists(path) or path == "/proc"


def test_a_device_as_store_path_is_refused():
    with pytest.raises(walq.InvalidParameter, match="not a directory"):
        walq.open("/dev/null")
