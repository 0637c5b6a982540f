"""Checkpoint encode/decode time for a large standard queue, old codec vs new.

    python bench/bench_checkpoint.py [N ...] [--repeat R]

For each N (default 100,000 and 1,000,000 live messages) it builds two
indexes in memory - no disk - and times checkpoint.encode and decode
against the version 1 codec (``WALQCKP1``, kept frozen in
tests/test_queue_checkpoint_codec.py).  Best of R runs, old and new
interleaved so that a busy machine slows both alike:

- ``mixed``: the retention order also holds 10% as many deleted messages
  (the lowest sequences, as consumers take them), 2% of the live are in
  flight, 0.5% visible again after a lapsed lease (receive counts), 1%
  delayed (scattered through the order, so also among the deleted);
- ``send-only``: N visible messages, nothing else.

A process writes a checkpoint every 50,000 operations
(walq.queue.queue.CHECKPOINT_EVERY), in the path of whichever call came due.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from test_queue_checkpoint_codec import decode_v1, encode_v1, fields  # noqa: E402

from walq.queue import checkpoint as ckpt  # noqa: E402
from walq.queue import records as R  # noqa: E402
from walq.queue.index import Index  # noqa: E402

T0 = 1.7e9


def build_index(n: int, mixed: bool, seed: int = 1) -> Index:
    """A standard queue's index with ``n`` live messages, built the way
    catch-up builds it (bulk sends, then LEASE and DELETE records)."""
    rng = random.Random(seed)
    idx = Index(fifo=False)
    deleted = n // 9 if mixed else 0  # 10% of everything sent
    total = n + deleted
    bulk: list[int] = []
    for seq in range(total):
        sent = T0 + seq * 1e-4
        if mixed and rng.random() < 0.01:
            if bulk:
                idx._add_bulk(bulk)
                bulk = []
            idx.apply(seq, R.SEND, R.encode_send(b"m" * 16, sent, sent + 3600, b""))
            continue
        idx.ret_at.append(sent)
        bulk.append(seq)
        if len(bulk) == 1000:
            idx._add_bulk(bulk)
            bulk = []
    if bulk:
        idx._add_bulk(bulk)
    if not mixed:
        return idx
    now, seq = T0 + total * 1e-4, total
    inflight, lapsed = n // 50, n // 200
    taken = idx.candidates(deleted + inflight + lapsed, take=True)
    for i in range(0, len(taken), 100):
        lease = 30.0 if i < deleted + inflight else 1.0
        idx.apply(seq, R.LEASE, R.encode_lease(now, [(m, now + lease) for m in taken[i : i + 100]]))
        seq += 1
    for i in range(0, deleted, 100):
        idx.apply(seq, R.DELETE, R.encode_seqs(taken[i : min(i + 100, deleted)]))
        seq += 1
    idx.sweep(now + 2.0, 1e9)  # the short leases lapse: visible again, receive counts kept
    return idx


def timed(fn) -> float:
    """One call of ``fn``, in ms (after a collection, so that none lands in it)."""
    gc.collect()
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    """Runs the benchmark and prints one line per (N, scenario)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print(f"{'N':>9} {'scenario':<9} {'enc old':>9} {'enc new':>9} {'x':>5} "
          f"{'dec old':>9} {'dec new':>9} {'x':>5} {'MB old':>7} {'MB new':>7}  (ms, best of {args.repeat})")
    for n in args.sizes:
        for mixed in (True, False):
            idx = build_index(n, mixed)
            assert len(idx.state) == n
            times = {"enc_old": [], "enc_new": [], "dec_old": [], "dec_new": []}
            raw_old, raw_new = encode_v1(idx), ckpt.encode(idx)
            for _ in range(args.repeat):
                times["enc_old"].append(timed(lambda: encode_v1(idx)))
                times["enc_new"].append(timed(lambda: ckpt.encode(idx)))
                times["dec_old"].append(timed(lambda: decode_v1(raw_old, "old")))
                times["dec_new"].append(timed(lambda: ckpt.decode(raw_new, "new")))
            # Sanity: the new codec rebuilds what the old one did.
            assert fields(ckpt.decode(raw_new, "new")) == fields(decode_v1(raw_old, "old"))
            t = {k: min(v) for k, v in times.items()}
            print(f"{n:>9,} {'mixed' if mixed else 'send-only':<9} {t['enc_old']:>9.1f} {t['enc_new']:>9.1f} "
                  f"{t['enc_old'] / t['enc_new']:>5.1f} {t['dec_old']:>9.1f} {t['dec_new']:>9.1f} "
                  f"{t['dec_old'] / t['dec_new']:>5.1f} {len(raw_old) / 1e6:>7.1f} {len(raw_new) / 1e6:>7.1f}",
                  flush=True)
            del idx, raw_old, raw_new


if __name__ == "__main__":
    main()
