"""Resident memory of one process through millions of queue operations.

    python bench/bench_rss.py [--ops N] [--dir D] [--json out.json]

One process, one store under durability "os", default 64 MiB segments, runs
each kind of operation in turn in a steady state (what is sent is received
and deleted, so the backlog stays near zero and nothing should accumulate):

    send               send(body), then receive(1) + delete_batch - the loop that grew
    send_batch         send_batch(10 bodies), receive(10), delete_batch
    receive+delete     send, receive(1), delete(receipt)
    change_visibility  send, receive(1), change_visibility(0), receive(1), delete
    fifo               FIFO send(group), receive(1), delete

N operations each (every call counts one; default 1,000,000, so ~6 million
calls in all), 100-byte bodies, a 600 s visibility timeout (a lease that
outlives the run: a lease's memory must go when its message does, not when
its deadline passes).  VmRSS, RssAnon (malloc'd and other private memory,
what a leak in C or Python shows up in) and RssFile (mapped segment pages)
are printed ten times a phase.

"Flat": after the warm-up (the first phase's first tenth), RssAnon never
rises more than FLAT_MB above its warm-up level.  The allowance covers what
legitimately comes and goes with the data: the active segment's frame index
(8 bytes a record, grown by doubling, so up to ~16 MB at a roll of a 64 MiB
segment of small records) and malloc's free lists.  Exit status 1 if not
flat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import walq  # noqa: E402

FLAT_MB = 20
VT = 600
BODY = b"x" * 100


def rss() -> dict[str, float]:
    """This process's resident memory in MB (VmRSS, RssAnon, RssFile)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def phases(broker):
    q = broker.create_queue("bench", visibility_timeout=VT)
    f = broker.create_queue("bench.fifo", visibility_timeout=VT, content_based_dedup=True)

    def send():
        q.send(BODY)
        q.delete_batch([m.receipt for m in q.receive(1)])
        return 3

    def send_batch():
        q.send_batch([BODY] * 10)
        q.delete_batch([m.receipt for m in q.receive(10)])
        return 3

    def receive_delete():
        q.send(BODY)
        for m in q.receive(1):
            q.delete(m.receipt)
        return 3

    def change_visibility():
        q.send(BODY)
        for m in q.receive(1):
            q.change_visibility(m.receipt, 0)
        for m in q.receive(1):
            q.delete(m.receipt)
        return 5

    counter = iter(range(1 << 62))

    def fifo():
        # Distinct bodies: content-based dedup would drop repeats.
        f.send(b"%d" % next(counter) + BODY, group="g")
        for m in f.receive(1):
            f.delete(m.receipt)
        return 3

    return [("send", send), ("send_batch", send_batch), ("receive+delete", receive_delete),
            ("change_visibility", change_visibility), ("fifo", fifo)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=1_000_000, help="calls per phase")
    ap.add_argument("--dir", default=None, help="where the scratch store goes")
    ap.add_argument("--json", default=None, help="write every sample here")
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="walq-rss-", dir=args.dir)
    samples = []
    try:
        broker = walq.open(os.path.join(root, "data"), durability="os")
        start = time.monotonic()
        print(f"{'phase':<18} {'ops':>10} {'VmRSS':>8} {'RssAnon':>8} {'RssFile':>8} {'s':>6}")
        print(f"{'(start)':<18} {0:>10} " + " ".join(f"{v:8.1f}" for v in rss().values()) + f" {0:6.0f}")
        baseline = None
        for name, step in phases(broker):
            done, every, mark = 0, args.ops // 10, args.ops // 10
            while done < args.ops:
                done += step()
                if done >= mark:
                    r = rss()
                    mark += every
                    samples.append({"phase": name, "ops": done, **r, "s": time.monotonic() - start})
                    if baseline is None:
                        baseline = r["RssAnon"]
                    print(f"{name:<18} {done:>10} {r['VmRSS']:8.1f} {r['RssAnon']:8.1f} {r['RssFile']:8.1f} "
                          f"{time.monotonic() - start:6.0f}", flush=True)
        broker.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    peak = max(s["RssAnon"] for s in samples)
    final = samples[-1]["RssAnon"]
    flat = peak - baseline <= FLAT_MB
    print(f"RssAnon after warm-up {baseline:.1f} MB, peak {peak:.1f} MB (+{peak - baseline:.1f}), "
          f"end {final:.1f} MB (+{final - baseline:.1f}): {'flat' if flat else 'NOT flat'} "
          f"(allowance {FLAT_MB} MB)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"ops_per_phase": args.ops, "baseline": baseline, "peak": peak, "samples": samples}, fh,
                      indent=1)
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
