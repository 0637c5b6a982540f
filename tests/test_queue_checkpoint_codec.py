"""The checkpoint codec (walq/queue/checkpoint.py) round-trips an index
exactly: decode(encode(idx)) is the index the version 1 codec produced -
field for field, heaps laid out alike - for random histories of sends,
delays, receives, deletes, visibility changes, rewrites, moves and purges,
standard and FIFO; and checkpoints written in version 1 (``WALQCKP1``, still
on users' disks) still load.

``encode_v1`` and ``decode_v1`` are the version 1 codec as it shipped,
frozen here as the reference (bench/bench_checkpoint.py imports them too).
"""

from __future__ import annotations

import heapq
import json
import os
import random
import struct
from array import array
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import walq
from walq.errors import CorruptionError
from walq.log.format import hash64
from walq.queue import checkpoint as ckpt
from walq.queue import records as R
from walq.queue.index import DELAYED, INFLIGHT, RET_SLACK_S, VISIBLE, Index


@pytest.fixture(autouse=True)
def python_index(monkeypatch):
    """These tests pin the Python Index (FIFO queues' and the fallback's),
    so decode builds one for standard queues too; the native index has its
    own differential tests (test_queue_native_index.py)."""
    monkeypatch.setenv("WALQ_INDEX", "python")

# -- the version 1 codec, frozen ---------------------------------------------------

MAGIC_V1 = b"WALQCKP1"
_ARRAYS_V1 = ("state_seq", "state_val", "ret_seq", "ret_at", "delayed_at", "delayed_seq")


def encode_v1(idx: Index) -> bytes:
    """Version 1's encode, verbatim."""
    keys = sorted(idx.state)
    state = idx.state
    ret_seq, ret_at = array("q"), array("d")
    for m, t in zip(idx.ret_seq[idx.ret_head :], idx.ret_at[idx.ret_head :]):
        if m in state:
            ret_seq.append(m)
            ret_at.append(t)
    arrays = {
        "state_seq": array("q", keys),
        "state_val": array("b", map(state.__getitem__, keys)),
        "ret_seq": ret_seq,
        "ret_at": ret_at,
        "delayed_at": array("d", [t for t, m in idx.delayed if idx.state.get(m) == DELAYED]),
        "delayed_seq": array("q", [m for t, m in idx.delayed if idx.state.get(m) == DELAYED]),
    }
    meta = {
        "fifo": idx.fifo,
        "dedup_scope": idx.dedup_scope,
        "leases": [[m, l, d] for m, (l, d) in idx.leases.items()],
        "receives": [[m, c, f] for m, (c, f) in idx.receives.items()],
        "prior": list(idx.prior.items()),
        "group_of": list(idx.group_of.items()),
        "dedup": [[k, mid.hex(), s, t] for k, (mid, s, t) in idx.dedup.items()],
        "ret_late": [[t, m] for t, m in idx.ret_late if m in state],
        "redirect": list(idx.redirect.items()),
        "orig": list(idx.orig.items()),
    }
    blob = json.dumps(meta, separators=(",", ":")).encode()
    parts = [MAGIC_V1, struct.pack("<QI", idx.applied, len(blob)), blob]
    for name in _ARRAYS_V1:
        raw = arrays[name].tobytes()
        parts += [struct.pack("<I", len(raw)), raw]
    body = b"".join(parts)
    return body + struct.pack("<Q", hash64(body))


def decode_v1(raw: bytes, path: str) -> Index:
    """Version 1's decode, verbatim."""
    if len(raw) < 28 or raw[:8] != MAGIC_V1 or struct.unpack_from("<Q", raw, len(raw) - 8)[0] != hash64(raw[:-8]):
        raise CorruptionError(f"checkpoint {path} does not validate", path, 0)
    applied, blen = struct.unpack_from("<QI", raw, 8)
    pos = 20
    meta = json.loads(raw[pos : pos + blen])
    pos += blen
    arrays = {}
    for name, code in zip(_ARRAYS_V1, "qbqddq"):
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        a = array(code)
        a.frombytes(raw[pos : pos + n])
        pos += n
        arrays[name] = a
    idx = Index(meta["fifo"], meta["dedup_scope"])
    idx.applied = applied
    seqs, vals = arrays["state_seq"], arrays["state_val"]
    idx.state = dict(zip(seqs, vals))
    idx.counts = [vals.count(VISIBLE), vals.count(DELAYED), vals.count(INFLIGHT)]
    idx.ret_seq, idx.ret_at = arrays["ret_seq"], arrays["ret_at"]
    idx.ret_late = [(t, m) for t, m in meta.get("ret_late", [])]
    idx.redirect = {o: n for o, n in meta.get("redirect", [])}
    for o, n in idx.redirect.items():
        idx.aliases.setdefault(n, []).append(o)
    idx.orig = {int(n): o for n, o in meta.get("orig", [])}
    heapq.heapify(idx.ret_late)
    idx.leases = {m: (l, d) for m, l, d in meta["leases"]}
    idx.lease_heap = [(d, m, l) for m, (l, d) in idx.leases.items()]
    heapq.heapify(idx.lease_heap)
    idx.receives = {m: (c, f) for m, c, f in meta["receives"]}
    idx.prior = {int(m): c for m, c in meta["prior"]}
    idx.delayed = list(zip(arrays["delayed_at"], arrays["delayed_seq"]))
    heapq.heapify(idx.delayed)
    if idx.fifo:
        idx.group_of = {int(m): g for m, g in meta["group_of"]}
        idx.dedup = {k: (bytes.fromhex(mid), s, t) for k, mid, s, t in meta["dedup"]}
        idx.dedup_order = deque(sorted((t, k) for k, (_m, _s, t) in idx.dedup.items()))
        for m, st_ in idx.state.items():
            g = idx.group_of[m]
            if st_ == VISIBLE:
                idx.groups.setdefault(g, []).append(m)
            elif st_ == INFLIGHT:
                idx.group_inflight[g] = idx.group_inflight.get(g, 0) + 1
        for g, heap in idx.groups.items():
            heapq.heapify(heap)
            if not idx.group_inflight.get(g):
                idx.ready.append((heap[0], g))
        heapq.heapify(idx.ready)
    else:
        state, orig = idx.state, idx.orig
        if idx.counts[VISIBLE] == len(seqs) and not orig:
            idx.visible = list(state)
        else:
            idx.visible = [orig.get(m, m) for m in state if state[m] == VISIBLE]
            heapq.heapify(idx.visible)
    return idx


# -- histories ---------------------------------------------------------------------


def random_history(rng: random.Random, n: int, fifo: bool) -> Index:
    """An index after ``n`` plausible records and sweeps: sends (some delayed,
    late or carrying receives from another queue), receives (some lapsing),
    hides, deletes, moves, visibility changes, rewrites and purges."""
    idx = Index(fifo, rng.choice(["queue", "group"]))
    now = 1000.0
    sends: list[int] = []
    leases: dict[int, int] = {}
    seq = 0

    def put(type_: int, payload: bytes) -> None:
        nonlocal seq
        idx.apply(seq, type_, payload)
        seq += 1

    def send(sent: float, visible: float, prior: int = 0) -> None:
        g = f"g{rng.randint(0, 3)}" if fifo else None
        d = f"d{rng.randint(0, 40)}" if fifo and rng.random() < 0.7 else None
        put(R.SEND, R.encode_send(rng.randbytes(16), sent, visible, b"body", group=g, dedup_id=d,
                                  prior_receives=prior))
        sends.append(seq - 1)

    for _ in range(n):
        now += rng.random() * 3
        roll = rng.random()
        if roll < 0.35 or not sends:
            for _ in range(rng.choice([1, 1, 1, 5, 40])):
                delay = rng.choice([0.0, 0.0, 0.0, 0.0, 5.0, 500.0])
                # A message moved in from another queue keeps its send time:
                # older than the retention order's tail, it goes to ret_late.
                sent = now - rng.choice([0.0, 0.0, 0.0, RET_SLACK_S * 50])
                send(sent, sent + delay, rng.choice([0, 0, 0, 2]))
        elif roll < 0.55:
            picks = rng.sample(sends, min(len(sends), rng.randint(1, 10)))
            put(R.LEASE, R.encode_lease(now, [(m, now + rng.choice([0.5, 30.0, 900.0])) for m in picks]))
            leases.update(dict.fromkeys(picks, seq - 1))
        elif roll < 0.6:
            put(R.HIDE, R.encode_hide([(m, now + 60.0) for m in rng.sample(sends, min(len(sends), 3))]))
        elif roll < 0.75:
            picks = rng.sample(sends, min(len(sends), rng.randint(1, 20)))
            put(rng.choice([R.DELETE, R.DELETE, R.MOVED]), R.encode_seqs(picks))
        elif roll < 0.82 and leases:
            m = rng.choice(list(leases))
            put(R.CHVIS, R.encode_chvis([(m, leases[m], now + rng.choice([0.0, 10.0]))]))
        elif roll < 0.92:
            old = rng.choice(sends)
            # A rewrite: the copy's SEND (FIFO: in the same group), then the CARRY naming it.
            g = idx.group_of.get(old, "g0") if fifo else None
            put(R.SEND, R.encode_send(rng.randbytes(16), now, now, b"copy", group=g))
            sends.append(seq - 1)
            put(R.CARRY, R.encode_carry([(seq - 1, old, leases.get(old, 0), now + 30.0, idx.orig.get(old, old))]))
        elif roll < 0.93:
            put(R.PURGE, R.encode_purge(rng.randint(0, seq)))
        else:
            idx.sweep(now, rng.choice([1e9, 1e9, 200.0]))
            if rng.random() < 0.3:
                idx.oldest_sent()  # moves ret_head past deleted entries
            if rng.random() < 0.3:
                idx.candidates(rng.randint(1, 5))
    return idx


def fields(idx: Index) -> dict:
    """Everything an index holds, in the form it holds it (heap layouts and
    dict orders included)."""
    out = {k: v for k, v in vars(idx).items() if k not in ("ret_seq", "ret_at", "state", "dedup_order")}
    out["state"] = list(idx.state.items())
    out["ret_seq"] = idx.ret_seq.tolist()
    out["ret_at"] = idx.ret_at.tolist()
    out["dedup_order"] = list(idx.dedup_order)
    return out


def meaning(idx: Index) -> dict:
    """What an index means, whatever the lazily cleaned leftovers in its heaps:
    comparable between an index and its decoded checkpoint."""
    state = idx.state
    live_ret = [(m, t) for m, t in zip(idx.ret_seq[idx.ret_head :], idx.ret_at[idx.ret_head :]) if m in state]
    out = {
        "state": dict(state), "counts": list(idx.counts), "applied": idx.applied,
        "leases": dict(idx.leases), "receives": dict(idx.receives), "prior": dict(idx.prior),
        "redirect": dict(idx.redirect), "aliases": {k: sorted(v) for k, v in idx.aliases.items()},
        "orig": dict(idx.orig), "ret": live_ret,
        "ret_late": sorted((t, m) for t, m in idx.ret_late if m in state),
        "delayed": sorted((t, m) for t, m in idx.delayed if state.get(m) == DELAYED),
        "lease_heap": sorted(e for e in idx.lease_heap if idx.leases.get(e[1]) == (e[2], e[0])),
        "group_of": dict(idx.group_of), "dedup": dict(idx.dedup),
        "group_inflight": dict(idx.group_inflight),
    }
    if idx.fifo:
        out["groups"] = {g: sorted(m for m in set(h) if state.get(m) == VISIBLE) for g, h in idx.groups.items()}
        out["groups"] = {g: h for g, h in out["groups"].items() if h}
    else:
        # Index.visible is keyed by original sequence; count each live entry once.
        out["visible"] = sorted({k for k in idx.visible if state.get(idx.resolve(k)) == VISIBLE
                                 and idx.orig.get(idx.resolve(k), idx.resolve(k)) == k})
    return out


def behaviour(idx: Index, now: float) -> tuple:
    """What the index does next: what it offers at ``now`` and after."""
    out = []
    for t in (now, now + 100.0, now + 10_000.0):
        idx.sweep(t, 1e9)
        out.append((list(idx.counts), idx.candidates(10_000), idx.next_event(), idx.oldest_sent()))
    return tuple(out)


# -- round trips -------------------------------------------------------------------

HISTORIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HISTORIES
@given(seed=st.integers(0, 2**32), n=st.integers(0, 250), fifo=st.booleans())
def test_a_round_trip_rebuilds_exactly_what_version_1_rebuilt(seed, n, fifo):
    idx = random_history(random.Random(seed), n, fifo)
    want = fields(decode_v1(encode_v1(idx), "v1"))
    assert fields(ckpt.decode(ckpt.encode(idx), "v2")) == want


@HISTORIES
@given(seed=st.integers(0, 2**32), n=st.integers(0, 250), fifo=st.booleans())
def test_a_round_trip_keeps_the_index_meaning_and_behaviour(seed, n, fifo):
    idx = random_history(random.Random(seed), n, fifo)
    again = ckpt.decode(ckpt.encode(idx), "v2")
    assert meaning(again) == meaning(idx)
    assert behaviour(again, 2e6) == behaviour(idx, 2e6)


@HISTORIES
@given(seed=st.integers(0, 2**32), n=st.integers(0, 250), fifo=st.booleans())
def test_a_version_1_checkpoint_still_decodes(seed, n, fifo):
    idx = random_history(random.Random(seed), n, fifo)
    raw = encode_v1(idx)
    assert fields(ckpt.decode(raw, "v1")) == fields(decode_v1(raw, "v1"))


@HISTORIES
@given(seed=st.integers(0, 2**32), n=st.integers(0, 250), fifo=st.booleans())
def test_encoding_a_decoded_checkpoint_again_gives_the_same_bytes(seed, n, fifo):
    idx = random_history(random.Random(seed), n, fifo)
    once = ckpt.encode(ckpt.decode(ckpt.encode(idx), "a"))
    assert ckpt.encode(ckpt.decode(once, "b")) == once
    assert once[:8] == b"WALQCKP2"


def test_a_state_dict_out_of_sequence_order_is_written_sorted():
    idx = random_history(random.Random(3), 200, fifo=False)
    assert len(idx.state) > 3
    first = next(iter(idx.state))
    idx.state[first] = idx.state.pop(first)  # now last in the dict
    assert list(idx.state) != sorted(idx.state)
    again = ckpt.decode(ckpt.encode(idx), "v2")
    assert list(again.state) == sorted(idx.state)
    assert fields(again) == fields(decode_v1(encode_v1(idx), "v1"))


def test_a_large_index_round_trips():
    # Pieces of the retention order of every kind (all live, all dead, mixed)
    # and more than one of each, at the real piece size.
    rng = random.Random(11)
    idx = Index(False)
    for seq in range(20_000):
        sent = 1000.0 + seq / 10
        idx.apply(seq, R.SEND, R.encode_send(b"m" * 16, sent, sent + (60.0 if seq % 97 == 0 else 0.0), b""))
    seq = 20_000
    dead = list(range(0, 5000)) + list(range(9000, 9100)) + rng.sample(range(12_000, 20_000), 300)
    idx.apply(seq, R.DELETE, R.encode_seqs(dead))
    idx.apply(seq + 1, R.LEASE, R.encode_lease(3000.0, [(m, 3030.0) for m in range(6000, 6400)]))
    want = fields(decode_v1(encode_v1(idx), "v1"))
    assert fields(ckpt.decode(ckpt.encode(idx), "v2")) == want


# -- the retention filter ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.data(), piece=st.sampled_from([1, 2, 3, 8, 1024]))
def test_the_retention_filter_keeps_exactly_the_live_entries_in_order(data, piece):
    # Arbitrary orders, not only ascending ones: ascending is what makes the
    # filter fast, never what makes it right.
    seqs = data.draw(st.lists(st.integers(0, 3000), max_size=3000, unique=True))
    if data.draw(st.booleans()):
        seqs.sort()
    live_p = data.draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    idx = Index(False)
    idx.ret_seq = array("q", seqs)
    idx.ret_at = array("d", [s / 3 for s in seqs])
    idx.ret_head = data.draw(st.integers(0, len(seqs)))
    idx.state = {m: VISIBLE for m in seqs if rng.random() < live_p}
    idx.state.update({m: VISIBLE for m in rng.sample(range(3001, 4000), 5)})  # live elsewhere (ret_late)
    keys = array("q", sorted(idx.state))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ckpt, "_RET_PIECE", piece)
        runs = ckpt._live_runs(idx, keys)
    got = [(m, t) for start, stop in runs for m, t in zip(idx.ret_seq[start:stop], idx.ret_at[start:stop])]
    want = [(m, t) for m, t in zip(idx.ret_seq[idx.ret_head :], idx.ret_at[idx.ret_head :]) if m in idx.state]
    assert got == want
    assert all(a < b for a, b in runs) and all(b < c for (_, b), (c, _) in zip(runs, runs[1:]))


# -- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reopen_with", ["python", "native"])
def test_a_version_1_checkpoint_on_disk_is_loaded_on_open(store, clock, monkeypatch, reopen_with):
    # Written by an older walq (Python index); opened by this one with
    # either index (standard queues use the native one by default).
    b = store()
    q = b.create_queue("q")
    q.send_batch([f"m{i}" for i in range(50)])
    q.send("later", delay=60)
    msgs = q.receive(10, visibility_timeout=300)
    q.delete_batch([m.receipt for m in msgs[:4]])
    pos = q.checkpoint()
    path = os.path.join(q._dir, ckpt.checkpoint_name(pos))
    with open(path, "rb") as f:
        assert f.read(8) == b"WALQCKP2"
    with open(path, "wb") as f:
        f.write(encode_v1(q._index))  # as an older walq left it
    want = meaning(q._index)
    b.close()
    monkeypatch.setenv("WALQ_INDEX", reopen_with)
    q = store().get_queue("q")
    if reopen_with == "python":
        assert meaning(q._index) == want
    else:
        assert type(q._index).__name__ == "NativeIndex"
    s = q.stats()
    assert (s.visible, s.in_flight, s.delayed) == (40, 6, 1)
    q.delete(msgs[4].receipt)  # a lease and its receipt survived
    assert q.stats().in_flight == 5
    assert sorted(m.text for m in q.receive(50)) == sorted(f"m{i}" for i in range(10, 50))


@pytest.mark.parametrize("encode", [ckpt.encode, encode_v1], ids=["v2", "v1"])
def test_a_damaged_checkpoint_of_either_version_does_not_decode(encode):
    raw = bytearray(encode(random_history(random.Random(5), 100, fifo=False)))
    for pos in (0, 9, len(raw) // 2, len(raw) - 1):
        bad = bytearray(raw)
        bad[pos] ^= 0x40
        with pytest.raises(walq.CorruptionError):
            ckpt.decode(bytes(bad), "damaged")


def test_an_unknown_magic_does_not_decode_even_with_a_valid_checksum():
    body = ckpt.encode(Index(False))[:-8]
    body = b"WALQCKP9" + body[8:]
    with pytest.raises(walq.CorruptionError):
        ckpt.decode(body + struct.pack("<Q", hash64(body)), "future")
