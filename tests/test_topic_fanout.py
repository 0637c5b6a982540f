"""Completing a fan-out: one cut short part way is finished at broker open,
at get_topic and at the next publish, copying only what each queue lacks; a
mark from another boot is not trusted; the cursor bounds the topic's log."""

from __future__ import annotations

import json
import os

import pytest

import walq
from walq.queue.queue import Queue
from walq.topic import fanout
from walq.topic.copyplan import CopyPlan


class Cut(BaseException):
    """Stands for the process dying in the middle of a fan-out."""


def _store(path):
    b = walq.open(path, durability="os")
    t = b.create_topic("t")
    for name in "abc":
        t.subscribe(b.create_queue(name), raw=True)
        # A queue's first write aims its native writer (the slow way);
        # after this, copies go through the native fan-out.
        b.get_queue(name).send("warm-up")
        assert _bodies(b, name) == ["warm-up"]
    return b, t


def _bodies(b, name):
    q = b.get_queue(name)
    out = []
    while True:
        got = q.receive(10, visibility_timeout=600)
        if not got:
            return out
        out += [m.text for m in got]
        q.delete_batch([m.receipt for m in got])


def _cut_after(monkeypatch, n_queues: int):
    """The next ``n_queues`` queue copies are written, then the 'process
    dies': on the Python path (Queue._store_copies) and on the native one
    (CopyPlan.write, which writes a publish's copies in target order)."""
    real, real_write = Queue._store_copies, CopyPlan.write
    left = [n_queues]
    native = []

    def store_copies(self, copies):
        if left[0] == 0:
            raise Cut()
        left[0] -= 1
        return real(self, copies)

    def write(self, hit, every, *args):
        if left[0] == 0:
            raise Cut()
        take = min(left[0], len(hit))
        native.append(hit)
        got = real_write(self, hit[:take], every and take == len(hit), *args)
        left[0] -= got
        if got == take < len(hit):
            raise Cut()
        return got  # short: the caller writes the next one through _store_copies

    monkeypatch.setattr(Queue, "_store_copies", store_copies)
    monkeypatch.setattr(CopyPlan, "write", write)
    return native


@pytest.mark.parametrize("how", ["broker open", "get_topic", "next publish"])
def test_a_fan_out_cut_short_is_completed_without_duplicates(tmp_path, monkeypatch, how):
    b, t = _store(tmp_path / "s")
    t.publish("one")
    _cut_after(monkeypatch, 1)
    with pytest.raises(Cut):
        t.publish("two")
    monkeypatch.undo()
    b2 = walq.open(tmp_path / "s", durability="os")
    try:
        if how == "get_topic":
            b2.get_topic("t")
        elif how == "next publish":
            b2.get_topic("t")  # (opening completes already; the publish must not copy again)
            b.get_topic("t").publish("three")
        got = {n: _bodies(b2, n) for n in "abc"}
    finally:
        b2.close()
        b.close()
    expect = ["one", "two"] + (["three"] if how == "next publish" else [])
    assert got == {n: expect for n in "abc"}


def test_the_next_publish_in_the_same_process_completes_a_cut_short_fan_out(tmp_path, monkeypatch):
    b, t = _store(tmp_path / "s")
    native = _cut_after(monkeypatch, 2)
    with pytest.raises(Cut):
        t.publish("one")
    assert native == [[0, 1, 2]]  # cut inside the native fan-out
    monkeypatch.undo()
    t.publish("two")
    assert {n: _bodies(b, n) for n in "abc"} == {n: ["one", "two"] for n in "abc"}
    b.close()


def test_after_a_reboot_the_mark_is_not_trusted_and_each_queue_gets_only_what_it_lacks(tmp_path, monkeypatch):
    b, t = _store(tmp_path / "s")
    real = Queue._store_copies
    # As a power cut that took queue b's unsynced copy: the mark says done, b lacks it.
    monkeypatch.setattr(fanout.Fanout, "_copy_native", lambda self, plan, hit, *args: hit)  # the Python path
    monkeypatch.setattr(Queue, "_store_copies", lambda self, copies: 0 if self.name == "b" else real(self, copies))
    t.publish("one")
    monkeypatch.undo()
    monkeypatch.setattr(fanout.Fanout, "flush", lambda self: None)  # died: no cursor at close
    b.close()
    with walq.open(tmp_path / "s", durability="os") as same_boot:
        same_boot.get_topic("t")
        assert same_boot.get_queue("b").stats().visible == 0  # this boot's mark is trusted
    monkeypatch.setattr(fanout, "_boot_id", lambda: "another-boot")
    with walq.open(tmp_path / "s", durability="os") as rebooted:
        assert {n: _bodies(rebooted, n) for n in "abc"} == {n: ["one"] for n in "abc"}


def test_the_cursor_is_written_and_the_topic_log_trimmed_below_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fanout, "CURSOR_EVERY", 10)
    with walq.open(tmp_path / "s", durability="os", segment_size=16 * 1024) as b:
        t = b.create_topic("t")
        t.subscribe(b.create_queue("q"), raw=True)
        for i in range(200):
            t.publish(f"message {i:04d} " + "x" * 200)
        with open(os.path.join(t._dir, fanout.CURSOR_FILE)) as f:
            cur = json.load(f)
        assert cur["upto"] >= 190 and f"{b.get_queue('q')._uid:016x}" in cur["pos"]
        assert t._log.first > 0  # publishes every queue holds durably are trimmed
        assert len(_bodies(b, "q")) == 200


def test_closing_a_broker_writes_the_cursor(tmp_path):
    with walq.open(tmp_path / "s", durability="os") as b:
        t = b.create_topic("t")
        t.subscribe(b.create_queue("q"))
        t.publish("m")
        d = t._dir
        assert not os.path.exists(os.path.join(d, fanout.CURSOR_FILE))
    with open(os.path.join(d, fanout.CURSOR_FILE)) as f:
        assert json.load(f)["upto"] == 1


def test_a_publish_whose_publisher_died_before_copying_is_copied_when_the_topic_is_opened(tmp_path, monkeypatch):
    b, t = _store(tmp_path / "s")

    def die(self, upto, known=None):
        raise Cut()

    monkeypatch.setattr(fanout.Fanout, "run", die)
    with pytest.raises(Cut):
        t.publish("orphan")  # its record is in the topic's log; no copy was made
    monkeypatch.undo()
    b2 = walq.open(tmp_path / "s", durability="os")
    try:
        assert all(b2.get_queue(n).stats().visible == 0 for n in "abc")
        b2.get_topic("t")
        assert {n: _bodies(b2, n) for n in "abc"} == {n: ["orphan"] for n in "abc"}
    finally:
        b2.close()
        b.close()


@pytest.mark.parametrize("durability, syncs", [("os", False), ("batch", True)])
def test_a_cursor_syncs_the_queues_it_covers_except_under_os(tmp_path, monkeypatch, durability, syncs):
    from walq.log import Log
    from walq.topic import fanout

    monkeypatch.setattr(fanout, "CURSOR_EVERY", 4)
    monkeypatch.setattr(fanout, "CURSOR_PER_TARGET", 0)
    synced = []
    real = Log.sync_to
    monkeypatch.setattr(Log, "sync_to", lambda log, upto: synced.append(log.path) or real(log, upto))
    with walq.open(tmp_path / "s", durability=durability) as b:
        t = b.create_topic("t")
        q = b.create_queue("q")
        t.subscribe(q)
        for i in range(4):
            t.publish(f"m{i}")
        assert t._fan.read_cursor()["upto"] == t._log.end  # written either way
        assert (q._log.path in synced) is syncs
