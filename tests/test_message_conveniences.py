"""Python conveniences around received messages: pickling a Message to
another process, ``m.json()``, the ``q.messages()`` long-poll iterator, and
the public types as a type checker sees them."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import re
import textwrap
import threading
from concurrent.futures import ProcessPoolExecutor

import pytest

import walq

BOUND = 120  # seconds: generous, for a loaded machine


@pytest.fixture
def broker(tmp_path):
    with walq.open(tmp_path / "store") as b:
        yield b


def ack_elsewhere(store: str, queue: str, message: walq.Message) -> str:
    """Runs in a pool process: acks through that process's own broker."""
    with walq.open(store) as b:
        message.ack(b.get_queue(queue))
    return message.text


# -- pickling ----------------------------------------------------------------------------------


def test_a_message_pickles_without_its_queue(broker):
    q = broker.create_queue("orders")
    q.send("latte", attributes={"table": 4})
    [m] = q.receive()
    m2 = pickle.loads(pickle.dumps(m))
    assert m2 == m and m2.attributes == {"table": 4} and m2.receipt == m.receipt
    with pytest.raises(walq.InvalidParameter, match="has no queue"):
        m2.ack()
    with pytest.raises(walq.InvalidParameter, match="has no queue"):
        m2.change_visibility(10)
    m2.change_visibility(60, q)
    m2.ack(q)
    assert q.stats().total == 0


def test_a_pool_process_acks_a_message_through_its_own_broker(tmp_path):
    store = str(tmp_path / "store")
    with walq.open(store) as b:
        q = b.create_queue("orders")
        q.send_batch(["a", "b", "c"])
        msgs = q.receive(10)
        assert len(msgs) == 3
        ctx = multiprocessing.get_context("spawn")  # the child opens its own broker
        with ProcessPoolExecutor(2, mp_context=ctx) as pool:
            done = list(pool.map(ack_elsewhere, [store] * 3, ["orders"] * 3, msgs, timeout=BOUND))
        assert sorted(done) == ["a", "b", "c"]
        assert q.stats().total == 0


# -- json --------------------------------------------------------------------------------------


def test_json_parses_the_body(broker):
    q = broker.create_queue("orders")
    q.send('{"drink": "latte", "shots": 2}')
    q.send("not json {")
    q.send(b"\xff\xfe\xfd")
    good, bad, binary = q.receive(10)
    assert good.json() == {"drink": "latte", "shots": 2}
    with pytest.raises(walq.InvalidParameter, match=r"body is not JSON: Expecting value at position 0"):
        bad.json()
    with pytest.raises(ValueError, match="body is not JSON"):  # InvalidParameter is a ValueError
        binary.json()


# -- the iterator -------------------------------------------------------------------------------


def test_messages_yields_what_arrives_until_the_loop_breaks(broker):
    q = broker.create_queue("orders")
    q.send_batch([f"m{i}" for i in range(5)])
    got = []
    for m in q.messages(wait=1, max_messages=2):
        got.append(m.text)
        m.ack()
        if len(got) == 5:
            break
    assert sorted(got) == [f"m{i}" for i in range(5)]
    assert q.stats().total == 0


def test_messages_sees_a_message_sent_later_and_ends_when_the_broker_closes(tmp_path):
    b = walq.open(tmp_path / "store")
    q = b.create_queue("orders")
    got: list[str] = []
    first = threading.Event()
    errors: list[BaseException] = []

    def consume():
        try:
            for m in q.messages(wait=1):
                got.append(m.text)
                m.ack()
                first.set()
        except BaseException as exc:  # the test fails on any, below
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    q.send("late")
    assert first.wait(BOUND)
    b.close()
    t.join(BOUND)
    assert not t.is_alive() and errors == [] and got == ["late"]


def test_messages_checks_its_arguments_at_once(broker):
    q = broker.create_queue("orders")
    for kw in ({"wait": 0}, {"wait": 21}, {"wait": float("nan")}, {"max_messages": 0}, {"max_messages": 1001},
               {"wait": True}):
        with pytest.raises(walq.InvalidParameter):
            q.messages(**kw)


# -- types ---------------------------------------------------------------------------------------


def test_the_public_api_is_typed_for_mypy(tmp_path, monkeypatch):
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent("""\
        import walq

        with walq.open("store") as broker:
            q = broker.create_queue("orders")
            reveal_type(q.send("x"))
            for m in q.messages(wait=5):
                reveal_type(m)
                reveal_type(m.message_id)
                reveal_type(m.json())
                m.ack(q)
            q.receive("ten")
        """))
    # The walq being tested, found as source; --follow-imports=silent keeps
    # to the snippet's own errors, as for an installed package with py.typed.
    monkeypatch.setenv("MYPYPATH", os.path.dirname(os.path.dirname(os.path.abspath(walq.__file__))))
    out, err, status = api.run([str(snippet), "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache")])
    revealed = dict(re.findall(r'snippet\.py:(\d+): note: Revealed type is "(.*)"', out))
    assert "fallback=walq.queue.results.SendResult" in revealed["5"], out
    assert revealed["7"] == "walq.queue.results.Message", out
    assert revealed["8"] in ("str", "builtins.str"), out
    assert revealed["9"] == "Any", out
    assert 'snippet.py:11: error: Argument 1 to "receive" of "Queue" has incompatible type "str"' in out, out
    assert out.count("error:") == 1 and status == 1, out
