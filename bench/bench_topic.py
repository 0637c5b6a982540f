"""Topic benchmark: publish under "always" to 1, 10 and 100 subscribed queues,
beside a single ``send`` to one queue, in the same run.

    python bench/bench_topic.py [--dir D] [--seconds S] [--rounds N] [--json FILE]

One process, one thread, 100-byte messages, envelope delivery (not raw).
``--durability os`` measures the same rows without any fsync: the CPU cost.
Each round runs every row for ``--seconds``, in slices of ``--slice`` seconds
that the rows take in turn (the shared disk's speed drifts within seconds:
interleaving hits every row alike), timing every call;
a row's msgs/s is the median over rounds, its p50/p99 come from every call
of every round.  The target: publish to 10 queues at >= 0.7x a single send.
Results and the exact command: bench/RESULTS.md ("Topics").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import walq  # noqa: E402
from common import git_commit, machine, median, percentiles, print_machine, run_row, raw_fdatasync, wait_quiet  # noqa: E402

BODY = b"x" * 100
FANOUTS = (1, 10, 100)


def setup(base: str, durability: str = "always") -> tuple:
    """A store with a queue for plain sends and one topic per fan-out width."""
    path = tempfile.mkdtemp(prefix="topic-", dir=base)
    b = walq.open(path, durability=durability)
    q = b.create_queue("direct")
    topics = {}
    for n in FANOUTS:
        t = b.create_topic(f"t{n}")
        for i in range(n):
            t.subscribe(b.create_queue(f"t{n}-q{i}"))
        topics[n] = t
    return path, b, q, topics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="directory on the disk to measure")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per row per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slice", type=float, default=0.5, help="seconds a row runs before the next takes its turn")
    ap.add_argument("--durability", default="always", choices=("always", "batch", "os"),
                    help='"os" shows the CPU cost alone (no fsync)')
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--max-wait", type=float, default=20.0, help="seconds to wait for quiet CPUs first")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="walq-bench-topic-", dir=args.dir)
    info = machine(base)
    info["commit"] = git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print("machine:")
    print_machine(info)
    waited, busy = wait_quiet(max_wait=args.max_wait)
    print(f"waited {waited:.1f}s for quiet CPUs (others' share {busy:.0%})")
    print(f"durability: {args.durability}")
    path, b, q, topics = setup(base, args.durability)
    rows = {"send (1 queue)": lambda: q.send(BODY)}
    for n in FANOUTS:
        rows[f"publish -> {n} queue{'s' if n > 1 else ''}"] = (lambda t: lambda: t.publish(BODY))(topics[n])
    names = list(rows)
    rates: dict[str, list[float]] = {k: [] for k in names}
    lats: dict[str, list[float]] = {k: [] for k in names}
    raw = []
    try:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            raw.append(raw_fdatasync(base, "overwrite", min(1.0, args.seconds)).ops_per_s)
            # Each row's time in short slices, the rows taking turns: the
            # shared disk's speed drifts within seconds, and a row measured
            # in one stretch measured the drift as much as the row.
            done = {k: [0, 0.0] for k in names}
            slices = max(1, round(args.seconds / args.slice))
            for i in range(slices):
                for name in order[i % len(order):] + order[:i % len(order)]:
                    n, secs, lat = run_row(rows[name], args.seconds / slices)
                    done[name][0] += n
                    done[name][1] += secs
                    lats[name] += lat
            for name in order:
                n, secs = done[name]
                rates[name].append(n / secs)
                print(f"round {r + 1} {name:22s} {n / secs:8.0f} msgs/s", flush=True)
    finally:
        b.close()
        shutil.rmtree(base, ignore_errors=True)
    send = median(rates[names[0]])
    print()
    print(f"raw pwrite+fdatasync (overwrite, 128 B), median of rounds: {median(raw):.0f}/s")
    print("| row | msgs/s (median of rounds) | rounds | p50 | p99 | vs send |")
    print("|---|---:|---|---:|---:|---:|")
    out = {"machine": info, "raw_fdatasync": raw, "rows": {}}
    for name in names:
        p = percentiles(lats[name], (50, 99))
        m = median(rates[name])
        print(f"| {name} | {m:.0f} | {', '.join(f'{x:.0f}' for x in rates[name])} | {p[50] * 1e6:.0f} us | "
              f"{p[99] * 1e6:.0f} us | {m / send:.2f}x |")
        out["rows"][name] = {"rates": rates[name], "median": m, "p50": p[50], "p99": p[99], "vs_send": m / send}
    ten = median(rates["publish -> 10 queues"]) / send
    print(f"\ntarget publish -> 10 queues >= 0.7x send: {ten:.2f}x {'PASS' if ten >= 0.7 else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
