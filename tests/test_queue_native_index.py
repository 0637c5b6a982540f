"""NativeIndex, the standard-queue index in C, against Index, the reference.

A Hypothesis state machine gives both the same input: records (one at a time
through ``apply``, or as a run through ``apply_frames``), bulk sends, sweeps
with a fake clock, receives that take candidates and then lease, hide,
remove or give them back, and checkpoint round trips.  After every step it
compares everything a caller can see of the two.  The example tests below
it pin the rules that are easiest to get wrong, on both implementations.

The queries are compared exactly, lazy bookkeeping included: ``next_event``
may name a lease that has since changed or ended (the heaps are cleaned as
popped), ``oldest_sent`` reads the retention order, which is sorted only to
within RET_SLACK_S.  The queries clean up as they go, so both indexes get
the same queries in the same order.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import walq
from walq.queue import checkpoint
from walq.queue import records as R
from walq.queue.index import DELAYED, INFLIGHT, RET_SLACK_S, VISIBLE, Index
from walq.queue.queue import Queue
from queue_helpers import run_until_received

native_index = pytest.importorskip("walq.queue.native_index", reason="NativeIndex is not written yet")

#: A sequence no message ever has: a receipt may name any u64, and a
#: standard queue's delete writes it to the log as is.
FAR = 2**64 - 1
#: Times are drawn from these (plus arbitrary floats) so that deadlines,
#: delays and retention limits often meet a sweep's ``now`` exactly.
STEPS = [0.0, 0.25, 0.5, 1.0, 5.0, 30.0, 40.0]
TIMEOUTS = [0.0, 0.5, 5.0, 30.0]
DELAYS = [0.5, 5.0, 30.0, 100.0]


def reference() -> Index:
    return Index(False)


def native():
    idx = native_index.NativeIndex()
    # Prune dead redirect chains at nearly every rewrite rather than after a
    # thousand: that path lost live chains once (see the pruning test below).
    idx.set_prune_floor(1)
    return idx


def send_record(m: int, sent_at: float, visible_at: float, prior: int = 0) -> bytes:
    return R.encode_send(random.Random(m).randbytes(16), sent_at, visible_at, b"body %d" % m, prior_receives=prior)


def frames(records: list[tuple[int, bytes]], pad: int = 0) -> tuple[bytes, list[int], list[int], list[int]]:
    """``(mm, offs, lens, types)`` for apply_frames: the payloads back to back after ``pad`` junk bytes."""
    buf = bytearray(b"\xee" * pad)
    offs, lens = [], []
    for _t, p in records:
        offs.append(len(buf))
        lens.append(len(p))
        buf += p
    return bytes(buf), offs, lens, [t for t, _p in records]


def observe(idx, seqs: list[int], cutoffs: list[int]) -> dict:
    """Everything a caller can see of ``idx``, asked in a fixed order
    (candidates and oldest_sent clean the heaps and the retention order)."""
    return {
        "applied": idx.applied,
        "ops": idx.ops,
        "counts": list(idx.counts),
        "live": idx.live(),
        "state_of": {m: idx.state_of(m) for m in seqs},
        "receive_info": {m: idx.receive_info(m) for m in seqs},
        "prior_of": {m: idx.prior_of(m) for m in seqs},
        "lease_of": {m: idx.lease_of(m) for m in seqs},
        "orig_of": {m: idx.orig_of(m) for m in seqs},
        "resolve": {m: idx.resolve(m) for m in seqs},
        "describe": dict(zip(seqs, idx.describe(seqs))),
        "select_live": idx.select_live(seqs),
        "candidates": [idx.candidates(n) for n in (1, 3, 10, 10_000)],
        "next_event": idx.next_event(),
        "oldest_sent": idx.oldest_sent(),
        "min_live": idx.min_live(),
        "live_below": {c: idx.live_below(c) for c in cutoffs},
        "live_seqs": idx.live_seqs(),
        "visible_count": (idx.visible_count(), idx.counts[VISIBLE]),
    }


def differences(a: dict, b: dict, skip: tuple[str, ...] = ()) -> dict:
    """The entries of two observe() results that differ (per sequence for the per-message ones)."""
    out = {}
    for key in a:
        if key in skip:
            continue
        if isinstance(a[key], dict):
            diff = {m: (v, b[key][m]) for m, v in a[key].items() if v != b[key][m]}
            if diff:
                out[key] = diff
        elif a[key] != b[key]:
            out[key] = (a[key], b[key])
    return out


class Differential(RuleBasedStateMachine):
    """The reference and the native index, fed alike and compared after every step."""

    def __init__(self):
        super().__init__()
        self.ref = reference()
        self.nat = native()
        self.seq = 0  # the next log sequence
        self.now = 1000.0  # the fake clock: sweeps never go back in time
        self.retention = 600.0
        self.times: dict[int, tuple[float, float]] = {}  # message seq -> (sent_at, visible_at)
        self.lease_seqs: list[int] = []  # seqs of LEASE and HIDE records (lease seqs, current or stale)
        self.pools: list[list[int]] | None = None  # pick()'s sequences to choose from, this step

    @property
    def both(self):
        return (self.ref, self.nat)

    @initialize(retention=st.sampled_from([60.0, 120.0, 600.0]))
    def set_retention(self, retention):
        self.retention = retention

    # -- feeding -----------------------------------------------------------------

    def feed(self, data, records: list[tuple[int, bytes]]) -> None:
        """Appends ``records`` at the next sequences and applies them to
        both indexes: one by one, or as one run through apply_frames."""
        seq0 = self.seq
        self.seq += len(records)
        if data.draw(st.booleans(), label="as frames"):
            mm, offs, lens, types = frames(records, pad=data.draw(st.integers(0, 9), label="pad"))
            if data.draw(st.booleans(), label="bytearray"):
                mm = bytearray(mm)
            for idx in self.both:
                idx.apply_frames(mm, seq0, offs, lens, types)
        else:
            for i, (t, p) in enumerate(records):
                for idx in self.both:
                    idx.apply(seq0 + i, t, p)

    def pick(self, data, label: str, most: int = 4) -> list[int]:
        """Sequences a record may name: live ones mostly, also gone ones,
        sequences rewritten by compaction, and ones no message ever had."""
        if self.pools is None:  # the indexes change between steps only (agree() drops these)
            live = self.ref.live_seqs()
            gone = [m for m in self.times if self.ref.state_of(m) is None]
            redirected = [m for m in gone if self.ref.resolve(m) != m]
            never = [self.seq + 3, FAR] + self.lease_seqs[-3:]
            self.pools = [p for p in (live, live, live, gone, redirected, never) if p]
        pools = self.pools
        out = []
        for _ in range(data.draw(st.integers(1, most), label=f"{label} count")):
            pool = data.draw(st.sampled_from(pools), label=f"{label} pool")
            out.append(data.draw(st.sampled_from(pool), label=label))
        return out

    def send(self, data, at: int) -> tuple[int, bytes]:
        """A SEND at ``at``: plain, delayed, carrying receives from another
        queue, a little out of time order, or a late arrival (a message
        moved in keeps its send time)."""
        kind = data.draw(st.sampled_from(["plain", "plain", "delayed", "prior", "jitter", "late"]), label="send")
        sent = self.now
        if kind == "jitter":
            sent -= data.draw(st.sampled_from([0.1, 0.5, RET_SLACK_S]), label="jitter")
        elif kind == "late":
            sent -= RET_SLACK_S + data.draw(st.sampled_from([0.001, 0.5, 10.0, 100.0, 1000.0]), label="lateness")
        vis = sent + data.draw(st.sampled_from(DELAYS), label="delay") if kind == "delayed" else sent
        prior = data.draw(st.integers(1, 3), label="prior") if kind == "prior" else 0
        if kind in ("prior", "late") and data.draw(st.booleans(), label="delayed too"):
            vis = sent + data.draw(st.sampled_from(DELAYS), label="delay")
        self.times[at] = (sent, vis)
        return (R.SEND, send_record(at, sent, vis, prior))

    def lease(self, data, at: int) -> tuple[int, bytes]:
        visible = [m for m in self.ref.live_seqs() if self.ref.state_of(m) == VISIBLE]
        seqs = self.pick(data, "lease")
        if visible:
            seqs += data.draw(st.lists(st.sampled_from(visible), max_size=4, unique=True), label="lease visible")
        vt = data.draw(st.sampled_from(TIMEOUTS), label="visibility timeout")
        self.lease_seqs.append(at)
        return (R.LEASE, R.encode_lease(self.now, [(m, self.now + vt) for m in seqs]))

    def hide(self, data, at: int) -> tuple[int, bytes]:
        seqs = self.pick(data, "hide")
        self.lease_seqs.append(at)
        return (R.HIDE, R.encode_hide([(m, self.now + data.draw(st.sampled_from(TIMEOUTS), label="timeout"))
                                               for m in seqs]))

    def chvis(self, data, at: int) -> tuple[int, bytes]:
        """Visibility changes under the current lease, a stale one, or none."""
        entries = []
        for m in self.pick(data, "chvis"):
            cur = self.ref.lease_of(m)
            stale = self.lease_seqs + [0, at]
            if cur is not None and data.draw(st.booleans(), label="current lease"):
                lease_seq = cur[0]
            else:
                lease_seq = data.draw(st.sampled_from(stale), label="stale lease")
            entries.append((m, lease_seq, self.now + data.draw(st.sampled_from(TIMEOUTS), label="timeout")))
        return (R.CHVIS, R.encode_chvis(entries))

    def carry(self, data, at: int) -> list[tuple[int, bytes]]:
        """Compaction, as Queue._rewrite_forward writes it: a SEND copy of
        each message at the log's end, then one CARRY moving their state
        over; sometimes a DELETE of one of them lands in between (the
        original went first, so its copy goes too)."""
        live = self.ref.live_seqs()
        if not live:
            return [self.send(data, at)]
        olds = sorted(data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=3, unique=True), label="carry"))
        out, entries = [], []
        for i, m in enumerate(olds):
            info = self.ref.receive_info(m)
            count = info[0] if info is not None else self.ref.prior_of(m)
            sent, vis = self.times[m]
            self.times[at + i] = (sent, vis)
            out.append((R.SEND, send_record(at + i, sent, vis, count)))
            lease = self.ref.lease_of(m) if self.ref.state_of(m) == INFLIGHT else None
            lease_seq, deadline = lease if lease is not None else (0, 0.0)
            entries.append((at + i, m, lease_seq, deadline, self.ref.orig_of(m)))
        if data.draw(st.integers(0, 3), label="delete in between") == 0:
            out.append((R.DELETE, R.encode_seqs([data.draw(st.sampled_from(olds), label="deleted first")])))
        out.append((R.CARRY, R.encode_carry(entries)))
        return out

    def build(self, data, kind: str, at: int) -> list[tuple[int, bytes]]:
        if kind == "send":
            return [self.send(data, at)]
        if kind == "lease":
            return [self.lease(data, at)]
        if kind == "hide":
            return [self.hide(data, at)]
        if kind == "chvis":
            return [self.chvis(data, at)]
        if kind in ("delete", "moved"):
            return [(R.DELETE if kind == "delete" else R.MOVED, R.encode_seqs(self.pick(data, kind)))]
        if kind == "carry":
            return self.carry(data, at)
        assert kind == "purge"
        upto = data.draw(st.sampled_from([0, at // 3, at // 2, at, at + 1]), label="purge upto")
        return [(R.PURGE, R.encode_purge(upto))]

    # -- rules -------------------------------------------------------------------

    @rule(data=st.data(), kind=st.sampled_from(["send", "send", "lease", "hide", "chvis", "delete", "moved",
                                                "carry"]))
    def record(self, data, kind):
        self.feed(data, self.build(data, kind, self.seq))

    @rule(data=st.data())
    def purge(self, data):
        self.feed(data, self.build(data, "purge", self.seq))

    @rule(data=st.data(), kinds=st.lists(st.sampled_from(["send", "send", "send", "lease", "chvis", "delete",
                                                          "carry", "hide"]), min_size=2, max_size=8))
    def run(self, data, kinds):
        """Several records, in one apply_frames run or one by one (what a
        catch-up reads back of other processes' writes)."""
        records: list[tuple[int, bytes]] = []
        for kind in kinds:
            records += self.build(data, kind, self.seq + len(records))
        self.feed(data, records)

    @rule(k=st.integers(1, 20), delay=st.sampled_from([0.0, 0.0, 0.0, 5.0]), back=st.sampled_from([0.0] * 5 + [5.0]))
    def add_sends(self, k, delay, back):
        """A send_batch folding in its own plain sends (``back``: the clock
        stepped back past the slack, so they arrive late)."""
        sent = self.now - back
        seqs = range(self.seq, self.seq + k)
        for m in seqs:
            self.times[m] = (sent, sent + delay)
        self.seq += k
        for idx in self.both:
            idx.add_sends(seqs, sent, sent + delay)

    @rule(step=st.sampled_from(STEPS) | st.floats(0.0, 40.0), sweep=st.booleans())
    def tick(self, step, sweep):
        self.now += step
        if sweep:
            for idx in self.both:
                idx.sweep(self.now, self.retention)

    @rule(data=st.data(), n=st.integers(1, 12))
    def receive(self, data, n):
        """What Queue._receive_once does with candidates it takes: removes
        the ones whose body is gone or expired, hides the ones bound for a
        dead-letter queue, leases the rest; on an error it hands back all."""
        picks = self.ref.candidates(n, take=True)
        assert self.nat.candidates(n, take=True) == picks
        fates = [data.draw(st.sampled_from(["lease", "lease", "remove", "hide", "back"]), label="fate") for _ in picks]
        for m, fate in zip(picks, fates):
            if fate == "remove":
                for idx in self.both:
                    idx.remove(m)
        records = []
        leased = [m for m, f in zip(picks, fates) if f == "lease"]
        hidden = [m for m, f in zip(picks, fates) if f == "hide"]
        if leased:
            vt = data.draw(st.sampled_from(TIMEOUTS), label="visibility timeout")
            self.lease_seqs.append(self.seq + len(records))
            records.append((R.LEASE, R.encode_lease(self.now, [(m, self.now + vt) for m in leased])))
        if hidden:
            self.lease_seqs.append(self.seq + len(records))
            records.append((R.HIDE, R.encode_hide([(m, self.now + 60.0) for m in hidden])))
        if records:
            self.feed(data, records)
        back = [m for m, f in zip(picks, fates) if f == "back"]
        if data.draw(st.integers(0, 3), label="error") == 0:
            back = picks  # the error path hands back every pick, leased or not
        for idx in self.both:
            idx.give_back(back)

    @rule(data=st.data())
    def remove(self, data):
        for m in self.pick(data, "remove", most=2):
            for idx in self.both:
                idx.remove(m)

    @rule()
    def round_trip(self):
        """A checkpoint of each, decoded, agrees with both live indexes
        (decode picks the implementation).  It has no operation count, and
        its heaps hold no stale entries: its next event can only be later."""
        raws = [checkpoint.encode(idx) for idx in self.both]
        decoded = [checkpoint.decode(raw, "x") for raw in raws]
        seqs, cutoffs = self.queried()
        live = [observe(idx, seqs, cutoffs) for idx in self.both]
        seen = [observe(idx, seqs, cutoffs) for idx in decoded]
        diff = differences(seen[0], seen[1], skip=("ops",))
        assert not diff, f"the decoded checkpoints differ: {diff}"
        for name, dec, cur in zip(("reference", "native"), seen, live):
            diff = differences(dec, cur, skip=("ops", "next_event"))
            assert not diff, f"decoded {name} vs the live one: {diff}"
            if cur["next_event"] is None:
                assert dec["next_event"] is None, name
            elif dec["next_event"] is not None:
                assert dec["next_event"] >= cur["next_event"], name

    # -- comparing -----------------------------------------------------------------

    def queried(self) -> tuple[list[int], list[int]]:
        """Every sequence used so far (messages and other records), a few
        beyond, and cutoffs for live_below."""
        end = self.seq + 2
        return list(range(end)) + [FAR], [0, end // 3, end // 2, end, FAR]

    @invariant()
    def agree(self):
        self.pools = None
        seqs, cutoffs = self.queried()
        a, b = (observe(idx, seqs, cutoffs) for idx in self.both)
        diff = differences(a, b)
        assert not diff, f"reference vs native: {diff}"


Differential.TestCase.settings = settings(
    max_examples=int(os.environ.get("WALQ_NATIVE_INDEX_EXAMPLES", 100)), stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestNativeIndexAgreesWithIndex = Differential.TestCase


# -- examples, on both implementations ---------------------------------------------


@pytest.fixture(params=["reference", "native"])
def make(request):
    return reference if request.param == "reference" else native


def feed(idx, seq0: int, records: list[tuple[int, bytes]], via: str) -> None:
    if via == "frames":
        mm, offs, lens, types = frames(records, pad=3)
        idx.apply_frames(mm, seq0, offs, lens, types)
    else:
        for i, (t, p) in enumerate(records):
            idx.apply(seq0 + i, t, p)


def test_a_lapsed_lease_makes_the_message_visible_again(make):
    idx = make()
    idx.apply(0, R.SEND, send_record(0, 100.0, 100.0))
    idx.apply(1, R.LEASE, R.encode_lease(100.0, [(0, 130.0)]))
    assert idx.candidates(10) == [] and idx.counts == [0, 0, 1]
    assert idx.lease_of(0) == (1, 130.0) and idx.receive_info(0) == (1, 100.0)
    assert idx.next_event() == 130.0
    idx.sweep(129.5, 600.0)
    assert idx.state_of(0) == INFLIGHT
    idx.sweep(130.0, 600.0)  # the deadline itself ends it
    assert idx.state_of(0) == VISIBLE and idx.counts == [1, 0, 0]
    assert idx.lease_of(0) is None and idx.receive_info(0) == (1, 100.0)
    assert idx.candidates(10) == [0] and idx.next_event() is None
    idx.apply(2, R.LEASE, R.encode_lease(131.0, [(0, 161.0)]))
    assert idx.receive_info(0) == (2, 100.0)  # the first receive's time stays


def test_a_visibility_change_under_a_stale_lease_is_ignored(make):
    idx = make()
    idx.apply(0, R.SEND, send_record(0, 100.0, 100.0))
    idx.apply(1, R.LEASE, R.encode_lease(100.0, [(0, 130.0)]))
    idx.apply(2, R.CHVIS, R.encode_chvis([(0, 1, 200.0)]))
    assert idx.lease_of(0) == (1, 200.0)
    idx.sweep(130.0, 600.0)  # the first deadline's heap entry is stale now
    assert idx.state_of(0) == INFLIGHT
    idx.sweep(200.0, 600.0)
    assert idx.state_of(0) == VISIBLE
    idx.apply(3, R.LEASE, R.encode_lease(200.0, [(0, 230.0)]))
    idx.apply(4, R.CHVIS, R.encode_chvis([(0, 1, 1000.0), (0, 2, 0.0)]))  # the old receipt's lease; not a lease
    assert idx.lease_of(0) == (3, 230.0)
    idx.sweep(230.0, 600.0)
    assert idx.state_of(0) == VISIBLE and idx.receive_info(0) == (2, 100.0)


@pytest.mark.parametrize("via", ["apply", "frames"])
def test_a_delete_naming_a_carried_seq_removes_the_copy(make, via):
    idx = make()
    feed(idx, 0, [(R.SEND, send_record(0, 100.0, 100.0)), (R.SEND, send_record(1, 100.0, 100.0))], via)
    idx.apply(2, R.LEASE, R.encode_lease(100.0, [(0, 130.0)]))
    # Compaction copies message 0 to 3, in flight under the same lease.
    feed(idx, 3, [(R.SEND, send_record(3, 100.0, 100.0, prior=1)),
                  (R.CARRY, R.encode_carry([(3, 0, 2, 130.0, 0)]))], via)
    assert idx.state_of(0) is None and idx.state_of(3) == INFLIGHT and idx.counts == [1, 0, 1]
    assert idx.resolve(0) == 3 and idx.orig_of(3) == 0 and idx.lease_of(3) == (2, 130.0)
    assert idx.prior_of(3) == 1 and idx.receive_info(3) is None
    assert idx.live_seqs() == [1, 3] and idx.min_live() == 1 and idx.live_below(3) == [1]
    idx.sweep(130.0, 600.0)
    assert idx.candidates(10) == [3, 1]  # the copy keeps the original's place in line
    feed(idx, 5, [(R.DELETE, R.encode_seqs([0]))], via)  # the old receipt's sequence
    assert idx.state_of(3) is None and idx.resolve(0) == 0 and idx.live_seqs() == [1]
    assert idx.applied == 6


def test_a_carry_whose_original_went_first_drops_the_copy(make):
    idx = make()
    idx.apply(0, R.SEND, send_record(0, 100.0, 100.0))
    idx.apply(1, R.SEND, send_record(1, 100.0, 100.0))
    idx.apply(2, R.DELETE, R.encode_seqs([0]))
    idx.apply(3, R.CARRY, R.encode_carry([(1, 0, 0, 0.0, 0)]))
    assert idx.live_seqs() == [] and idx.resolve(0) == 0 and idx.counts == [0, 0, 0]


def test_purge_forgets_every_message_below_its_mark(make):
    idx = make()
    idx.add_sends(range(0, 5), 100.0, 100.0)
    idx.apply(5, R.LEASE, R.encode_lease(100.0, [(1, 130.0), (4, 130.0)]))
    idx.apply(6, R.SEND, send_record(6, 100.0, 200.0))
    idx.apply(7, R.PURGE, R.encode_purge(3))
    assert idx.live_seqs() == [3, 4, 6] and idx.counts == [1, 1, 1]
    assert idx.lease_of(1) is None and idx.receive_info(1) is None and idx.candidates(10) == [3]
    assert idx.next_event() == 130.0
    idx.apply(8, R.PURGE, R.encode_purge(9))
    assert idx.live() == 0 and idx.min_live() is None and idx.oldest_sent() is None
    assert idx.candidates(10) == [] and idx.next_event() is None and idx.applied == 9


@pytest.mark.parametrize("via", ["apply", "frames"])
def test_a_late_arrival_expires_on_its_own_send_time(make, via):
    idx = make()
    # Message 1 was moved in from another queue: it keeps its send time.
    feed(idx, 0, [(R.SEND, send_record(0, 1000.0, 1000.0)),
                  (R.SEND, send_record(1, 500.0, 500.0, prior=2)),
                  (R.SEND, send_record(2, 1000.5, 1000.5))], via)
    assert idx.oldest_sent() == 500.0 and idx.candidates(10) == [0, 1, 2]
    idx.sweep(1099.0, 600.0)
    assert idx.live_seqs() == [0, 1, 2]
    idx.sweep(1100.0, 600.0)  # sent at or before now - retention: gone
    assert idx.live_seqs() == [0, 2] and idx.oldest_sent() == 1000.0 and idx.prior_of(1) == 0
    idx.sweep(1600.0, 600.0)
    assert idx.live_seqs() == [2]
    idx.sweep(1600.5, 600.0)
    assert idx.live() == 0 and idx.oldest_sent() is None


def test_bulk_sends_with_a_delay_are_delayed(make):
    idx = make()
    idx.add_sends(range(0, 3), 100.0, 105.0)
    assert idx.counts == [0, 3, 0] and idx.state_of(2) == DELAYED
    assert idx.next_event() == 105.0 and idx.candidates(10) == []
    idx.sweep(105.0, 600.0)
    assert idx.counts == [3, 0, 0] and idx.candidates(2) == [0, 1] and idx.applied == 3 and idx.ops == 3
    idx.apply_frames(b"", 3, [], [], [])  # an empty run changes nothing
    assert idx.applied == 3 and idx.ops == 3


def agree(ref, nat, seqs: list[int]) -> None:
    top = max(m for m in seqs if m != FAR)
    cutoffs = [0, top // 2, top, FAR]
    diff = differences(observe(ref, seqs, cutoffs), observe(nat, seqs, cutoffs))
    assert not diff, f"reference vs native: {str(diff)[:3000]}"


@pytest.mark.parametrize("how, gone", [("expired", 5900), ("deleted", 4196), ("deleted", 4197)])
def test_the_retention_order_is_cut_down_alike_once_thousands_are_gone(how, gone):
    """Once the retention order holds enough entries for gone messages, a
    sweep cuts it down: from the front (over 4096 expired, and over half)
    or to the live ones (deleted: over twice the live ones plus 4096; the
    two counts here sit either side of that).  Cutting to the live ones
    moves its last entry, against which a send is judged late: after the
    cut, a send less than RET_SLACK_S before it joins the order (and waits
    behind it to expire) rather than the late heap.  So both indexes must
    cut at the same sweep."""
    ref, nat = reference(), native()
    both = (ref, nat)
    live = 100
    n = live + gone
    if how == "expired":
        records = [(R.SEND, send_record(m, 1000.0, 1000.0)) for m in range(gone)]
        mm, offs, lens, types = frames(records)
        for idx in both:
            idx.apply_frames(mm, 0, offs, lens, types)
            idx.add_sends(range(gone, n), 1010.0, 1010.0)
        seq, now, last = n, 1600.0, 1010.0
    else:
        for idx in both:
            idx.add_sends(range(0, live), 1000.0, 1000.0)
            idx.add_sends(range(live, n), 1010.0, 1010.0)
            idx.apply(n, R.DELETE, R.encode_seqs(list(range(live, n))))
        seq, now, last = n + 1, 1011.0, 1000.0
    sample = list(range(0, seq + 2, 37)) + list(range(n - 150, seq + 2)) + [FAR]
    agree(ref, nat, sample)
    for idx in both:  # a checkpoint skips the gone stretches of the order
        again = checkpoint.decode(checkpoint.encode(idx), "x")
        diff = differences(observe(again, sample, [0]), observe(idx, sample, [0]), skip=("ops",))
        assert not diff
    for idx in both:
        idx.sweep(now, 600.0)
    cut = how == "expired" or gone > 2 * live + 4096 - live
    assert len(ref.ret_seq) == (live if cut else n), "the scenario no longer reaches (or passes) the cut"
    agree(ref, nat, sample)
    late = last - RET_SLACK_S + 0.5
    for idx in both:
        idx.apply(seq, R.SEND, send_record(seq, late, late))
        idx.apply(seq + 1, R.SEND, send_record(seq + 1, now, now))
    sample += [seq, seq + 1]
    for t in (late + 600.0, late + 600.5, now + 600.0):
        for idx in both:
            idx.sweep(t, 600.0)
        agree(ref, nat, sample)
    assert ref.live() == 0 and ref.applied == seq + 2


def test_sends_after_the_order_is_used_up_join_it_within_the_slack():
    """With every entry of the retention order gone and passed over (here
    by oldest_sent), a send is not judged late against its last entry: it
    starts the order afresh, and the next sends are judged against it."""
    ref, nat = reference(), native()
    both = (ref, nat)
    for idx in both:
        idx.apply(0, R.SEND, send_record(0, 1000.0, 1000.0))
        idx.apply(1, R.SEND, send_record(1, 1010.0, 1010.0))
        idx.apply(2, R.DELETE, R.encode_seqs([0, 1]))
        assert idx.oldest_sent() is None
        for m, t in ((3, 960.0), (4, 980.0), (5, 979.2)):  # 5: in the slack of 4, not of 1's 1010
            idx.apply(m, R.SEND, send_record(m, t, t))
    seqs = list(range(7))
    agree(ref, nat, seqs)
    for t in (1560.0, 1579.2, 1580.0):
        for idx in both:
            idx.sweep(t, 600.0)
        agree(ref, nat, seqs)
        if t == 1579.2:
            assert ref.live_seqs() == [4, 5], "5 waits behind 4 in the order"


@pytest.mark.parametrize("damage", ["lease_for_a_message_not_in_flight", "unknown_state", "message_twice",
                                    "ragged_table"])
def test_a_checkpoint_whose_tables_contradict_each_other_is_refused(damage):
    # The checksum guards against damage on disk; these are tables that
    # checksum fine but cannot describe an index (a bug, or a file
    # written by something else): refused rather than half-loaded.
    from array import array

    from walq.errors import CorruptionError
    from walq.queue import checkpoint as ckpt

    good = native_index.NativeIndex()
    good.add_sends(range(0, 3), 10.0, 10.0)
    good.apply(3, R.LEASE, R.encode_lease(11.0, [(1, 40.0)]))
    cols = good.columns()
    if damage == "lease_for_a_message_not_in_flight":
        cols["lease_msg"] = array("q", [0])  # message 0 is visible
    elif damage == "unknown_state":
        cols["state_val"] = array("b", [0, 5, 0])
    elif damage == "message_twice":
        cols["state_seq"] = array("q", [0, 0, 2])
    else:
        cols["lease_seq"] = array("q", [])
    meta = {"fifo": False, "dedup_scope": "queue", "group_of": [], "dedup": []}
    raw = ckpt._frame(4, meta, {name: [cols[name]] for name, _code in ckpt._ARRAYS})
    with pytest.raises(CorruptionError):
        ckpt.decode(raw, "crafted")
    # The same file with the tables intact loads.
    raw = ckpt._frame(4, meta, {name: [c] for name, c in good.columns().items()})
    assert ckpt.decode(raw, "intact").lease_of(1) == (3, 40.0)


def test_a_carry_naming_a_copy_before_its_original_is_malformed():
    # Compaction writes the copy after the original; the other way round
    # would let redirects loop (a delete naming either would never return).
    from walq.errors import CorruptionError

    idx = native_index.NativeIndex()
    idx.add_sends(range(0, 3), 10.0, 10.0)
    with pytest.raises(CorruptionError):
        idx.apply(3, R.CARRY, R.encode_carry([(1, 2, 0, 0.0, 2)]))


def test_redirects_survive_their_pruning_in_the_middle_of_a_carry(make):
    # Found by the crash tier (seed 11): the native index prunes dead
    # redirect chains once a thousand-odd pile up.  Pruning ran inside a
    # CARRY after the original was dropped and before its link to the copy
    # was added, so the chain from an older alias looked dead and went; the
    # copy, queued under its original sequence, was never offered again.
    idx = make()
    idx.add_sends(range(0, 50), 10.0, 10.0)
    seq = 50
    live = list(range(50))
    for _round in range(100):  # 100 rewrites of 50 messages: 5,000 links, pruned on the way
        carry = []
        for i, m in enumerate(live):
            idx.apply(seq + i, R.SEND, R.encode_send(bytes(16), 10.0, 10.0, b"copy"))
            carry.append((seq + i, m, 0, 0.0, idx.orig_of(m)))
        idx.apply(seq + len(live), R.CARRY, R.encode_carry(carry))
        live = [seq + i for i in range(len(live))]
        seq += len(live) + 1
    assert [idx.orig_of(m) for m in live] == list(range(50))
    assert [idx.resolve(k) for k in range(50)] == live
    assert idx.candidates(100) == live


def test_rows_for_messages_already_gone_are_ignored_on_load():
    # The Python index can keep such rows (an original recorded for a copy
    # deleted before its CARRY was applied); they mean nothing, and a file
    # it wrote must still load into the native index.
    from array import array

    from walq.queue import checkpoint as ckpt

    good = native_index.NativeIndex()
    good.add_sends(range(0, 3), 10.0, 10.0)
    cols = good.columns()
    cols["orig_seq"], cols["orig_orig"] = array("q", [9]), array("q", [1])
    cols["recv_msg"], cols["recv_count"], cols["recv_first"] = array("q", [8]), array("q", [2]), array("d", [5.0])
    cols["prior_msg"], cols["prior_count"] = array("q", [7]), array("q", [1])
    cols["lease_msg"], cols["lease_seq"], cols["lease_deadline"] = array("q", [6]), array("q", [3]), array("d", [9.0])
    meta = {"fifo": False, "dedup_scope": "queue", "group_of": [], "dedup": []}
    idx = ckpt.decode(ckpt._frame(4, meta, {name: [cols[name]] for name, _code in ckpt._ARRAYS}), "stale")
    assert idx.live() == 3 and idx.candidates(5) == [0, 1, 2]
    assert idx.orig_of(9) == 9 and idx.receive_info(8) is None


def test_a_native_receive_whose_lease_the_index_has_not_reached_catches_up(broker, monkeypatch):
    q = broker.create_queue("q")
    q.send_batch(["a", "b", "c"])
    q.delete(q.receive(1)[0].receipt)  # the next receive takes the native path
    assert isinstance(q._index, native_index.NativeIndex)
    receive = native_index.NativeIndex.receive

    def behind(self, r, n):
        r.applied -= 1  # as if a record came between: the lease is left to a catch-up
        return receive(self, r, n)

    monkeypatch.setattr(native_index.NativeIndex, "receive", behind)
    monkeypatch.setattr(Queue, "_receive_now", lambda *a: None)  # the general path's native lease
    got = q.receive(2)
    assert sorted(m.text for m in got) == ["b", "c"] and [m.receive_count for m in got] == [1, 1]
    assert q.stats().in_flight == 2 and q.receive(2) == []
    assert not q.delete_batch([m.receipt for m in got]).failed
    assert q.stats().total == 0


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_live_sequences_and_checkpoint_columns_come_out_in_order(make, layout):
    """The native index orders live sequences with a bitmap of their range
    when they lie close together, and with a radix sort when they do not."""
    idx = make()
    rng = random.Random(7)
    seqs = list(range(0, 20_000, 1 if layout == "dense" else 997))
    if layout == "sparse":
        seqs.append(2**40)  # far beyond the others: the bitmap would be too big
    for s in seqs:
        idx.apply(s, R.SEND, send_record(s, 100.0, 100.0))
    gone = sorted(rng.sample(seqs[:-1], len(seqs) // 3))
    idx.apply(2**41, R.DELETE, R.encode_seqs(gone))
    idx.apply(2**41 + 1, R.LEASE, R.encode_lease(100.0, [(s, 130.0) for s in seqs[1:-1:5] if s not in set(gone)]))
    live = sorted(set(seqs) - set(gone))
    assert idx.live_seqs() == live
    assert idx.live_below(live[len(live) // 2]) == live[: len(live) // 2]
    assert idx.live_below(2**42, limit=len(live) - 1) is None and idx.live_below(2**42, limit=len(live)) == live
    if hasattr(idx, "columns"):
        assert list(idx.columns()["state_seq"]) == live  # the checkpoint's column, as written
    back = checkpoint.decode(checkpoint.encode(idx), "ordered")
    assert back.live_seqs() == live and sorted(back.state.items()) == [(s, idx.state_of(s)) for s in live]


def test_a_receive_on_a_caught_up_queue_is_one_native_call(broker, monkeypatch):
    """The usual receive decides, locks, sweeps and leases in
    walq_qx_receive_now, without the general path's _deciding."""
    q = broker.create_queue("q")
    q.send_batch(["a", "b", "c"])
    q.delete(q.receive(1)[0].receipt)  # indexes the segment the messages are in

    def general(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(Queue, "_deciding", general)
    got = q.receive(5)
    assert sorted(m.text for m in got) == ["b", "c"] and [m.receive_count for m in got] == [1, 1]
    assert q.receive(5) == []  # nothing visible: the native pre-check, still no general path
    monkeypatch.undo()
    assert q.stats().in_flight == 2


def test_a_receive_behind_another_handles_appends_catches_up_first(store, clock, monkeypatch):
    """Records another handle appended are caught up before the native
    call (as the general path's pre-check would), which then leases what
    they sent; lapsed leases come back through its sweep."""
    a, b = store(), store()
    qa = a.create_queue("q", visibility_timeout=30)
    qa.send("first")
    qa.delete(qa.receive(1)[0].receipt)
    qb = b.get_queue("q")
    qb.send_batch(["x", "y"])

    def general(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(Queue, "_deciding", general)
    assert [m.text for m in qa.receive(1)] == ["x"]
    assert [m.text for m in qa.receive(5)] == ["y"]
    clock.advance(31)  # both leases lapse: the native call's sweep makes them visible
    again = qa.receive(5)
    assert sorted(m.text for m in again) == ["x", "y"] and [m.receive_count for m in again] == [2, 2]
    monkeypatch.undo()
    assert not qb.delete_batch([m.receipt for m in again]).failed
    assert qa.receive(5) == [] and qa.stats().total == 0


def test_records_appended_while_a_receive_waits_for_the_lock_are_caught_up_under_it(store, clock, monkeypatch):
    """walq_qx_receive_now finds the log moved once it has the lock: it
    returns holding it, the catch-up runs under it, and the second call
    leases what arrived, then lets go."""
    a, b = store(), store()
    qa = a.create_queue("q")
    qa.send("first")
    qa.delete(qa.receive(1)[0].receipt)  # caught up, nothing visible but what comes next
    qa.send("mine")
    qb = b.get_queue("q")
    holding, seen = threading.Event(), []
    receive_now = native_index.NativeIndex.receive_now

    def spy(self, r, n, retention):
        k = receive_now(self, r, n, retention)
        seen.append((k, r.locked))
        return k

    monkeypatch.setattr(native_index.NativeIndex, "receive_now", spy)

    def append_under_the_lock():
        with qb._log.locked() as tx:
            holding.set()
            time.sleep(0.3)  # qa's receive is blocked on the lock by now
            tx.append(R.encode_send(bytes(16), clock(), clock(), b"theirs"), R.SEND)

    t = threading.Thread(target=append_under_the_lock)
    t.start()
    holding.wait()
    got = qa.receive(5)
    t.join()
    assert sorted(m.text for m in got) == ["mine", "theirs"]
    assert seen == [(native_index._STALE, 1), (2, 0)]
    assert qb.receive(5) == [] and qb.stats().in_flight == 2  # the lock was let go, the lease written


def test_a_native_receive_that_did_not_describe_its_messages_builds_them_from_the_payloads(broker, monkeypatch):
    """Should walq_qx_receive_now ever hand back a lease it did not fold in
    (it folds every lease it writes, being caught up under the lock), the
    messages are read back from their SEND payloads instead."""
    q = broker.create_queue("q")
    q.send_batch([b"a", b"b", b"c"])
    q.delete(q.receive(1)[0].receipt)
    receive_now = native_index.NativeIndex.receive_now

    def unfolded(self, r, n, retention):
        k = receive_now(self, r, n, retention)
        r.folded = 0
        return k

    monkeypatch.setattr(native_index.NativeIndex, "receive_now", unfolded)
    got = q.receive(5)
    assert sorted(m.body for m in got) == [b"b", b"c"] and [m.receive_count for m in got] == [1, 1]
    monkeypatch.undo()
    assert not q.delete_batch([m.receipt for m in got]).failed and q.stats().total == 0


def test_a_delete_batch_is_one_native_call(broker, monkeypatch):
    """Decided, written and applied in walq_qx_delete_now: nothing of the
    general path (_append_delete) runs, and the index has it at once."""
    q = broker.create_queue("q")
    q.send_batch(["a", "b", "c"])
    got = q.receive(3)

    def general(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(Queue, "_append_delete", general)
    end = q._log.end
    assert not q.delete_batch([m.receipt for m in got[:2]]).failed
    assert q._log.end == end + 1 and q._index.applied == end + 1  # one record, folded in
    assert q.stats().in_flight == 1 and q.stats().total == 1
    assert not q.delete_batch([got[0].receipt]).failed  # already gone: nothing written
    assert q._log.end == end + 1


def test_a_delete_from_a_handle_that_never_wrote_takes_the_general_path(store, monkeypatch):
    """A handle's first write aims its native writer: until then the native
    delete declines (WALQ_QX_DELETE_SLOW) with nothing written."""
    a = store()
    qa = a.create_queue("q")
    qa.send_batch(["a", "b"])
    got = qa.receive(2)
    qb = store().get_queue("q")  # a receipt is good on any handle
    calls = []
    delete_now = Queue._delete_now

    def spy(self, *args):
        calls.append(delete_now(self, *args))
        return calls[-1]

    monkeypatch.setattr(Queue, "_delete_now", spy)
    assert not qb.delete_batch([got[0].receipt]).failed
    assert not qb.delete_batch([got[1].receipt]).failed
    assert calls == [False, True]
    assert qa.stats().total == 0 and qb.stats().total == 0


def test_a_delete_after_another_handles_appends_is_applied_by_the_catch_up(store, clock):
    """The DELETE lands past records this index has not read: it is not
    applied out of order, and the next catch-up applies both."""
    a, b = store(), store()
    qa = a.create_queue("q", visibility_timeout=30)
    qa.send_batch(["a", "b"])
    got = qa.receive(2)
    qb = b.get_queue("q")
    qb.send("c")  # qa's index is now behind the log
    applied = qa._index.applied
    assert not qa.delete_batch([m.receipt for m in got]).failed
    assert qa._index.applied == applied  # left to the catch-up
    clock.advance(31)  # had the delete been lost, both would be visible again
    assert [m.text for m in qa.receive(5)] == ["c"]
    assert qa.stats().total == 1 and qb.stats().total == 1


def test_a_plain_send_batch_is_written_and_indexed_in_one_native_call(store, clock, monkeypatch):
    """walq_qx_append_sends: a handle's first batch goes the general way
    (its writer is not aimed yet); then one call writes and indexes; after
    another handle's appends the batch is written and left to the catch-up."""
    a, b = store(), store()
    qa = a.create_queue("q")
    calls = []
    append_sends = native_index.NativeIndex.append_sends

    def spy(self, *args):
        calls.append(append_sends(self, *args))
        return calls[-1]

    monkeypatch.setattr(native_index.NativeIndex, "append_sends", spy)
    qa.send_batch([b"a", b"b"])
    assert calls == [False]  # the slow path aims the writer
    qa.send_batch([b"c", b"d"])
    assert calls == [False, True] and qa._index.applied == qa._log.end  # indexed at once
    b.get_queue("q").send_batch([b"e"])  # (that handle's first: the general way)
    applied = qa._index.applied
    qa.send_batch([b"f", b"g"])
    assert calls == [False, True, False, True] and qa._index.applied == applied  # left to the catch-up
    got = []
    while len(got) < 7:
        got += qa.receive(10)
    assert sorted(m.body for m in got) == [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
    assert qa.stats().in_flight == 7


def test_threads_on_two_handles_send_receive_and_delete_through_the_native_paths(tmp_path):
    """The one-call paths under concurrency: threads of two handles (two logs
    in one process, so each sees the other's appends as a stale index and
    waits on the other's flock) send plain batches, receive, delete and
    checkpoint at once.  Every message is delivered once and deleted, and
    nothing deadlocks (lock order: _tlock, _mu, then the flock)."""
    d = str(tmp_path / "d")
    a, b = walq.open(d, durability="os"), walq.open(d, durability="os")
    qa = a.create_queue("q", visibility_timeout=60)
    qb = b.get_queue("q")
    total, got, lock, done = 6000, [], threading.Lock(), threading.Event()

    def producer(q, k):
        for i in range(k, total, 40):
            q.send_batch([str(j).encode() for j in range(i, min(i + 10, total))])

    def consumer(q):
        while not done.is_set():
            msgs = q.receive(10, wait=0.05)
            with lock:
                got.extend(m.body for m in msgs)
            if msgs:
                assert not q.delete_batch([m.receipt for m in msgs]).failed

    def meddler(q):
        while not done.is_set():
            q.checkpoint()
            time.sleep(0.01)

    producers = [threading.Thread(target=producer, args=(q, k)) for q, k in ((qa, 0), (qb, 10), (qa, 20), (qb, 30))]
    others = [threading.Thread(target=consumer, args=(q,)) for q in (qa, qb, qa, qb)]
    others += [threading.Thread(target=meddler, args=(q,)) for q in (qa, qb)]
    assert run_until_received(producers, others, got, lock, total, done) == []
    assert sorted(got, key=int) == [str(i).encode() for i in range(total)]
    assert qa.stats().total == 0 and qb.stats().total == 0
    a.close()
    b.close()


def test_a_queue_with_a_redrive_policy_receives_natively_until_a_message_must_move(broker, clock, monkeypatch):
    """Receives within max_receives take walq_qx_receive_now; the one that
    would exceed it comes back to the general path, which moves the
    message to the dead-letter queue."""
    dlq = broker.create_queue("dlq")
    q = broker.create_queue("q", visibility_timeout=30, dead_letter=walq.RedrivePolicy("dlq", 2))
    q.send_batch([b"poison", b"warm"])
    first = q.receive(2)
    assert [m.body for m in first] == [b"poison", b"warm"]
    q.delete(first[1].receipt)
    clock.advance(30)
    general = Queue._deciding
    calls = []

    def spy(self, *args, **kwargs):
        calls.append(self.name)
        return general(self, *args, **kwargs)

    monkeypatch.setattr(Queue, "_deciding", spy)
    [m] = q.receive(5)
    assert (m.body, m.receive_count, calls) == (b"poison", 2, [])  # native: within the limit
    clock.advance(30)
    assert q.receive(5) == []  # the third receive would exceed 2: moved, by the general path
    assert calls and set(calls) == {"q"}
    [moved] = dlq.receive(1)
    assert (moved.body, moved.receive_count) == (b"poison", 3)  # its count came along
