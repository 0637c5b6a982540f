"""A stateful Hypothesis test: walq against a small in-memory model of the SQS
rules.

Hypothesis drives one standard and one FIFO queue (each with a dead-letter
queue) through sends, receives with visibility timeouts, deletes, visibility
changes, purges, checkpoints, broker reopens and a fake clock moving forward,
and after every step compares what walq returned, and its stats, with the
model.  The model is written from SQS.md, not from walq's code.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, initialize, invariant, multiple, precondition,
                                 rule)

import walq
from queue_helpers import FakeClock

VT = 30  # the queue's visibility timeout
RETENTION = 600
MAX_RECEIVES = 2
DEDUP_WINDOW = 300


@dataclass
class Msg:
    mid: str
    body: bytes
    attrs: dict
    order: int  # send order (FIFO: the sequence number)
    sent_at: float
    visible_at: float
    group: str | None = None
    receives: int = 0
    first_received_at: float | None = None
    receipt: str | None = None  # of the current (or last) lease
    deadline: float = -math.inf
    deleted: bool = False


@dataclass
class Model:
    """SQS as the docs say it behaves, for one queue and its DLQ."""

    fifo: bool
    msgs: dict[str, Msg] = field(default_factory=dict)  # message id -> Msg
    dedup: dict[str, tuple[str, float]] = field(default_factory=dict)  # dedup id -> (message id, sent at)
    dead_lettered: list[str] = field(default_factory=list)

    def live(self, m: Msg, now: float) -> bool:
        return not m.deleted and now < m.sent_at + RETENTION

    def in_flight(self, m: Msg, now: float) -> bool:
        return self.live(m, now) and m.deadline > now

    def visible(self, m: Msg, now: float) -> bool:
        return self.live(m, now) and m.deadline <= now and m.visible_at <= now

    def delayed(self, m: Msg, now: float) -> bool:
        return self.live(m, now) and m.deadline <= now and m.visible_at > now

    def deliverable(self, n: int, now: float) -> list[Msg]:
        """What a receive of ``n`` hands out (or dead-letters), in order."""
        by_order = sorted(self.msgs.values(), key=lambda m: m.order)
        if not self.fifo:
            return [m for m in by_order if self.visible(m, now)][:n]
        groups: dict[str, list[Msg]] = {}
        for m in by_order:
            if self.live(m, now):
                groups.setdefault(m.group, []).append(m)
        out = []
        # Groups with nothing in flight, oldest head first; a batch is filled
        # from one group before the next.
        for g in sorted((g for g, ms in groups.items() if not any(self.in_flight(m, now) for m in ms)),
                        key=lambda g: groups[g][0].order):
            out += groups[g][: n - len(out)]
        return out

    def counts(self, now: float) -> tuple[int, int, int, int]:
        ms = self.msgs.values()
        return (sum(self.visible(m, now) for m in ms), sum(self.in_flight(m, now) for m in ms),
                sum(self.delayed(m, now) for m in ms), sum(self.live(m, now) for m in ms))


class QueueMachine(RuleBasedStateMachine):
    fifo = False
    receipts = Bundle("receipts")

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="walq-model-")
        self.clock = FakeClock()
        self.name = "q.fifo" if self.fifo else "q"
        self.dlq_name = "dlq.fifo" if self.fifo else "dlq"
        self.broker = walq.open(self.dir, durability="os", clock=self.clock, segment_size=4096)
        self.broker.create_queue(self.dlq_name)
        self.q = self.broker.create_queue(self.name, visibility_timeout=VT, retention=RETENTION,
                                          dead_letter=walq.RedrivePolicy(self.dlq_name, MAX_RECEIVES))
        self.model = Model(self.fifo)
        self.sends = 0

    def teardown(self):
        self.broker.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def now(self) -> float:
        return self.clock.now

    # -- sending ----------------------------------------------------------------------------

    def _record_send(self, r, body, attrs, delay, group, dedup):
        """Checks one send's result against the model, and records it."""
        hit = self.model.dedup.get(dedup) if self.fifo else None
        if hit is not None and self.now - hit[1] < DEDUP_WINDOW:
            assert r.message_id == hit[0] and r.duplicate, (r, hit)
            event("duplicate send")
            return
        assert not r.duplicate and r.message_id not in self.model.msgs
        if self.fifo:
            assert isinstance(r.sequence, int)
            assert all(r.sequence > m.order for m in self.model.msgs.values())
            order = r.sequence
            self.model.dedup[dedup] = (r.message_id, self.now)
        else:
            assert r.sequence is None
            self.sends += 1
            order = self.sends
        delay = 0 if self.fifo else (delay or 0)  # FIFO sends take no per-message delay
        self.model.msgs[r.message_id] = Msg(r.message_id, body, attrs, order, self.now, self.now + delay, group)

    send_args = st.tuples(
        st.binary(min_size=1, max_size=16),
        st.dictionaries(st.sampled_from(["a", "b.c", "n"]), st.integers(-5, 5) | st.text("xyz", min_size=1),
                        max_size=2),
        st.none() | st.integers(0, 90),
        st.sampled_from(["g1", "g2", "g3"]),
        st.sampled_from(["d1", "d2", "d3", "d4", "d5", "d6"]),
    )

    @initialize(batch=st.lists(send_args, min_size=1, max_size=6))
    def start_with_some_messages(self, batch):
        self.send_batch(batch)

    @rule(args=send_args)
    def send(self, args):
        body, attrs, delay, group, dedup = args
        if self.fifo:
            r = self.q.send(body, attributes=attrs, group=group, dedup_id=dedup)
        else:
            r = self.q.send(body, attributes=attrs, delay=delay)
        self._record_send(r, body, attrs, delay, group, dedup)

    @rule(batch=st.lists(send_args, min_size=1, max_size=4))
    def send_batch(self, batch):
        entries = []
        for body, attrs, delay, group, dedup in batch:
            e = {"body": body, "attributes": attrs}
            if self.fifo:
                e.update(group=group, dedup_id=dedup)
            else:
                e["delay"] = delay
            entries.append(e)
        res = self.q.send_batch(entries)
        assert not res.failed and [i for i, _ in res.successful] == list(range(len(batch)))
        for (_, r), (body, attrs, delay, group, dedup) in zip(res.successful, batch):
            self._record_send(r, body, attrs, delay, group, dedup)

    # -- receiving ------------------------------------------------------------------------------

    @rule(target=receipts, n=st.integers(1, 5), vt=st.none() | st.integers(0, 60))
    def receive(self, n, vt):
        now = self.now
        expect = self.model.deliverable(n, now)
        got = self.q.receive(n, visibility_timeout=vt)
        moved = [m for m in expect if m.receives >= MAX_RECEIVES]
        leased = [m for m in expect if m.receives < MAX_RECEIVES]
        assert [m.message_id for m in got] == [m.mid for m in leased]
        for msg, m in zip(got, leased):
            m.receives += 1
            if m.first_received_at is None:
                m.first_received_at = now
            m.receipt = msg.receipt
            m.deadline = now + (VT if vt is None else vt)
            assert (msg.body, msg.attributes, msg.receive_count, msg.sent_at) == \
                (m.body, m.attrs, m.receives, m.sent_at)
            assert msg.first_received_at == m.first_received_at
            if self.fifo:
                assert (msg.group, msg.sequence) == (m.group, m.order)
        if moved:
            event("dead-lettered on receive")
        if any(m.receives > 1 for m in leased):
            event("redelivered")
        for m in moved:
            m.deleted = True
            self.model.dead_lettered.append(m.mid)
        return multiple(*[(msg.receipt, msg.message_id) for msg in got])

    @rule(r=receipts)
    def delete(self, r):
        receipt, mid = r
        m = self.model.msgs[mid]
        current = m.receipt == receipt and self.model.in_flight(m, self.now)
        if self.fifo and self.model.live(m, self.now) and not current:
            event("stale FIFO receipt refused")
            with pytest.raises(walq.InvalidReceipt):
                self.q.delete(receipt)
            return
        if not current:
            event("delete with a stale receipt")
        self.q.delete(receipt)
        m.deleted = True

    @rule(r=receipts, seconds=st.integers(0, 100))
    def change_visibility(self, r, seconds):
        receipt, mid = r
        m = self.model.msgs[mid]
        if m.receipt == receipt and self.model.in_flight(m, self.now):
            self.q.change_visibility(receipt, seconds)
            m.deadline = self.now + seconds
        else:
            event("change_visibility refused")
            with pytest.raises(walq.MessageNotInflight):
                self.q.change_visibility(receipt, seconds)

    @rule()
    def purge(self):
        self.q.purge()
        for m in self.model.msgs.values():
            m.deleted = True

    # -- time and restarts -----------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 1, 5, 29.5, 30, 59, 60, 90, 120, 301]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def checkpoint(self):
        self.q.checkpoint()

    @rule()
    def reopen(self):
        self.broker.close()
        self.broker = walq.open(self.dir, durability="os", clock=self.clock, segment_size=4096)
        self.q = self.broker.get_queue(self.name)

    @precondition(lambda self: len(self.model.msgs) > 0)
    @rule()
    def second_broker_agrees(self):
        """Another broker on the same store (another process, in effect)
        sees the same state."""
        with walq.open(self.dir, durability="os", clock=self.clock, segment_size=4096) as other:
            s = other.get_queue(self.name).stats()
            assert (s.visible, s.in_flight, s.delayed, s.total) == self.model.counts(self.now)

    # -- what must always hold ------------------------------------------------------------------

    @invariant()
    def stats_match_the_model(self):
        s = self.q.stats()
        if any(not m.deleted and not self.model.live(m, self.now) for m in self.model.msgs.values()):
            event("a message expired")
        assert (s.visible, s.in_flight, s.delayed, s.total) == self.model.counts(self.now)
        live = [m.sent_at for m in self.model.msgs.values() if self.model.live(m, self.now)]
        assert s.oldest_age_s == pytest.approx(self.now - min(live) if live else 0.0)

    @invariant()
    def dead_lettered_messages_are_in_the_dlq(self):
        dlq = self.broker.get_queue(self.dlq_name)
        assert dlq.stats().total == len(self.model.dead_lettered)


class FifoQueueMachine(QueueMachine):
    fifo = True


# WALQ_MODEL_EXAMPLES raises the example count for a longer hunt.
SETTINGS = settings(max_examples=int(os.environ.get("WALQ_MODEL_EXAMPLES", 80)), stateful_step_count=40,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestStandardQueueAgainstModel = QueueMachine.TestCase
TestStandardQueueAgainstModel.settings = SETTINGS
TestFifoQueueAgainstModel = FifoQueueMachine.TestCase
TestFifoQueueAgainstModel.settings = SETTINGS
