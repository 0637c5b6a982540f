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

"Flat": within each phase, after its warm-up (its first three samples),
RssAnon never rises more than FLAT_MB above its third sample.  The
allowance covers what legitimately comes and goes with the data: the active
segment's frame index (8 bytes a record, grown by doubling and dropped at a
roll) and malloc's free lists.  A FIFO queue also keeps its 5-minute
deduplication window (SQS's): its phase runs on a store of its own whose
clock gains 10 ms on every message, so the window is full (30,000 keys)
within the warm-up and what follows shows whether anything else grows.
Exit status 1 if a phase is not flat.
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

FLAT_MB = 12
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


class GainingClock:
    """time.time() plus 10 ms more at every tick(): a FIFO queue's dedup
    window (5 minutes) passes within 30,000 messages."""

    def __init__(self):
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew

    def tick(self) -> None:
        self.skew += 0.01


def phases(broker, fifo_broker, clock):
    q = broker.create_queue("bench", visibility_timeout=VT)
    f = fifo_broker.create_queue("bench.fifo", visibility_timeout=VT, content_based_dedup=True)

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
        clock.tick()
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
        clock = GainingClock()
        fifo_broker = walq.open(os.path.join(root, "fifo"), durability="os", clock=clock)
        start = time.monotonic()
        print(f"{'phase':<18} {'ops':>10} {'VmRSS':>8} {'RssAnon':>8} {'RssFile':>8} {'s':>6}")
        print(f"{'(start)':<18} {0:>10} " + " ".join(f"{v:8.1f}" for v in rss().values()) + f" {0:6.0f}")
        for name, step in phases(broker, fifo_broker, clock):
            done, every, mark = 0, args.ops // 10, args.ops // 10
            while done < args.ops:
                done += step()
                if done >= mark:
                    r = rss()
                    mark += every
                    samples.append({"phase": name, "ops": done, **r, "s": time.monotonic() - start})
                    print(f"{name:<18} {done:>10} {r['VmRSS']:8.1f} {r['RssAnon']:8.1f} {r['RssFile']:8.1f} "
                          f"{time.monotonic() - start:6.0f}", flush=True)
        fifo_broker.close()
        broker.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    flat = True
    summary = []
    for name in sorted({s['phase'] for s in samples}, key=[s['phase'] for s in samples].index):
        anon = [s["RssAnon"] for s in samples if s["phase"] == name]
        base, peak = anon[2], max(anon[2:])
        ok = peak - base <= FLAT_MB
        flat &= ok
        summary.append({"phase": name, "after_warmup": base, "peak": peak, "end": anon[-1], "flat": ok})
        print(f"{name:<18} RssAnon after warm-up {base:6.1f} MB, peak {peak:6.1f} (+{peak - base:4.1f}), "
              f"end {anon[-1]:6.1f} (+{anon[-1] - base:4.1f}): {'flat' if ok else 'NOT flat'}")
    print(f"{'flat' if flat else 'NOT flat'} (allowance {FLAT_MB} MB a phase after its warm-up)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"ops_per_phase": args.ops, "summary": summary, "samples": samples}, fh, indent=1)
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
