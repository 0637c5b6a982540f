"""Topic benchmark: publish with 1,000 filtered subscriptions beside 10, and
the peak RSS of a process holding 1,000 subscriptions.

    python bench/bench_topic_subs.py [--dir D] [--seconds S] [--rounds N] [--durability os|always]
    python bench/bench_topic_subs.py --rss [--rounds N]

Publish rows (one process, one thread, 100-byte messages, envelope delivery):
- "1,000 subs": 1,000 queue subscriptions with distinct filter policies, a
  fifth each of exact, prefix, numeric range, anything-but and exists, each
  matching about 1% of the messages: a publish reaches ~10 queues.
- "10 subs": 10 queue subscriptions with distinct policies of the same kinds
  that every message matches: a publish reaches 10 queues.
The rows reach the same number of queues, so the difference is what 990
more subscriptions cost a publish.  Rows take turns in short slices, each
round; msgs/s is the median of rounds.
Target: a publish with 1,000 subscriptions at most 3x the time of one with 10.

``--rss``: VmHWM (peak RSS) of fresh subprocesses, interleaved each round:
an empty store opened; a store with one topic holding 1,000 subscribed
queues (created in that process) after 1,000 publishes; the same store
reopened in a new process and published to 1,000 times.
Target: at most 50 MB above the empty store's process.
Results and the exact commands: bench/RESULTS.md ("Topics").
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import walq  # noqa: E402
from common import git_commit, machine, median, percentiles, print_machine, run_row, wait_quiet  # noqa: E402

BODY = "x" * 100
VALUES = 100  # each attribute takes one of this many values: a 1% match each


def policy_1pct(i: int, anchored: bool = False) -> dict:
    """Subscription i's policy among 1,000: distinct, about 1% of messages
    match.  The anything-but fifth: ``anything-but`` 99 of the 100 colours
    (the policy alone decides: no value to index it by), or with
    ``anchored``, anything-but one colour beside an exact shade (SNS's usual
    use: the exact value decides, the anything-but refines)."""
    j, kind = divmod(i, 5)
    v = j % VALUES
    # j >= 100 reuses a value: a clause every message passes keeps the policy distinct.
    extra = {"n": [{"numeric": [">=", -1 - j]}]} if j >= VALUES else {}
    if kind == 0:
        p = {"kind": [f"k{v}"]}
    elif kind == 1:
        p = {"region": [{"prefix": f"r{v:02d}-"}]}
    elif kind == 2:
        p = {"n": [{"numeric": [">=", v * 10, "<", v * 10 + 10]}]}
        if extra:
            extra = {"kind": [{"anything-but": [f"none{j}"]}]}
    elif kind == 3 and anchored:
        p = {"color": [{"anything-but": [f"c{v}"]}], "shade": [f"s{v}"]}
    elif kind == 3:
        p = {"color": [{"anything-but": [f"c{c}" for c in range(VALUES) if c != v]}]}
    else:
        p = {f"tag{v}": [{"exists": True}]}
    p.update(extra)
    return p


def policy_all(i: int) -> dict:
    """Subscription i's policy among 10: distinct, every message matches."""
    return [
        {"kind": [{"prefix": "k"}]},
        {"region": [{"prefix": "r"}]},
        {"n": [{"numeric": [">=", 0, "<", 1000]}]},
        {"color": [{"anything-but": ["none"]}]},
        {"kind": [{"exists": True}]},
        {"n": [{"numeric": [">=", -1]}]},
        {"region": [{"anything-but": {"prefix": "zz"}}]},
        {"color": [{"prefix": "c"}]},
        {"n": [{"exists": True}]},
        {"kind": [{"anything-but": ["nothing"]}]},
    ][i]


def messages(n: int, seed: int = 7) -> list[dict]:
    """Attribute sets: every attribute drawn uniformly from its 100 values."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        out.append({"kind": f"k{rnd.randrange(VALUES)}", "region": f"r{rnd.randrange(VALUES):02d}-{rnd.randrange(9)}",
                    "n": rnd.randrange(VALUES * 10), "color": f"c{rnd.randrange(VALUES)}",
                    "shade": f"s{rnd.randrange(VALUES)}",
                    f"tag{rnd.randrange(VALUES)}": "t"})
    return out


def make_topic(b, name: str, n: int, policy) -> object:
    t = b.create_topic(name)
    for i in range(n):
        t.subscribe(b.create_queue(f"{name}-q{i}"), filter_policy=policy(i))
    return t


def bench_publish(args, base: str) -> None:
    path = tempfile.mkdtemp(prefix="subs-", dir=base)
    b = walq.open(path, durability=args.durability)
    t0 = time.perf_counter()
    topics = {"10 subs": make_topic(b, "t10", 10, policy_all),
              "1,000 subs": make_topic(b, "t1000", 1000, policy_1pct)}
    if args.anchored:
        topics["1,000 subs, anything-but anchored"] = make_topic(
            b, "t1000a", 1000, lambda i: policy_1pct(i, anchored=True))
    print(f"set up 1,010 subscriptions in {time.perf_counter() - t0:.1f}s")
    msgs = messages(1000)
    # How many queues a publish reaches, counted on the policies themselves.
    from walq.topic.filters import attribute_view, compile_policy, new_matcher
    for name, tp in topics.items():
        m = new_matcher("attributes")
        for i, s in enumerate(tp.subscriptions()):
            m.add(i, compile_policy(s.filter_policy, "attributes"))
        hits = [len(m.match(attribute_view(a))) for a in msgs]
        print(f"{name}: a publish reaches {sum(hits) / len(hits):.1f} queues on average (min {min(hits)}, "
              f"max {max(hits)})")
    q = b.create_queue("direct")
    rows = {"send (1 queue)": lambda: q.send(BODY)}
    for name, tp in topics.items():
        it = [0]

        def pub(tp=tp, it=it):
            k = it[0]
            it[0] = k + 1
            tp.publish(BODY, attributes=msgs[k % len(msgs)])
        rows[f"publish, {name}"] = pub
    names = list(rows)
    for fn in rows.values():  # warm the caches (routing, matchers) outside the timing
        fn()
    rates: dict[str, list[float]] = {k: [] for k in names}
    lats: dict[str, list[float]] = {k: [] for k in names}
    try:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
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
        shutil.rmtree(path, ignore_errors=True)
    print("\n| row | msgs/s (median of rounds) | rounds | p50 | p99 | time vs 10 subs |")
    print("|---|---:|---|---:|---:|---:|")
    ten = median(rates["publish, 10 subs"])
    for name in names:
        p = percentiles(lats[name], (50, 99))
        m = median(rates[name])
        print(f"| {name} | {m:,.0f} | {', '.join(f'{x:,.0f}' for x in rates[name])} | {p[50] * 1e6:.0f} us | "
              f"{p[99] * 1e6:.0f} us | {ten / m:.2f}x |")
    if args.anchored:
        key = "publish, 1,000 subs, anything-but anchored"
        print(f"anchored anything-but: {ten / median(rates[key]):.2f}x the time of 10 subs; per round "
              f"{', '.join(f'{a / c:.2f}x' for a, c in zip(rates['publish, 10 subs'], rates[key]))}")
    per_round = [a / c for a, c in zip(rates["publish, 10 subs"], rates["publish, 1,000 subs"])]
    x = ten / median(rates["publish, 1,000 subs"])
    print(f"\ntime ratio per round: {', '.join(f'{v:.2f}x' for v in per_round)}")
    print(f"target publish with 1,000 subs <= 3x the time of 10: {x:.2f}x {'PASS' if x <= 3 else 'FAIL'}")


# -- peak RSS ---------------------------------------------------------------------------

CHILD = r"""
import sys, walq
sys.path.insert(0, sys.argv[3])
from bench_topic_subs import messages, policy_1pct
mode, path = sys.argv[1], sys.argv[2]
b = walq.open(path, durability="os")
if mode == "build":
    t = b.create_topic("t")
    for i in range(1000):
        t.subscribe(b.create_queue(f"q{i}"), filter_policy=policy_1pct(i))
if mode in ("build", "reopen"):
    t = b.get_topic("t")
    for a in messages(1000, seed=len(mode)):
        t.publish("x" * 100, attributes=a)
    assert len(t.subscriptions()) == 1000
for line in open("/proc/self/status"):
    if line.startswith(("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")):
        print(line.split()[0], line.split()[1])
b.close()
"""


def child_rss(mode: str, path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, path, HERE], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": ROOT}).stdout
    return {k.rstrip(":"): int(v) for k, v in (line.split() for line in out.splitlines())}


def bench_rss(args, base: str) -> None:
    rows = {"empty store": [], "1,000 subs, built + 1,000 publishes": [],
            "1,000 subs, reopened + 1,000 publishes": []}
    for r in range(args.rounds):
        empty = tempfile.mkdtemp(prefix="empty-", dir=base)
        subs = tempfile.mkdtemp(prefix="subs-", dir=base)
        walq.open(empty).close()
        order = [("empty", empty, "empty store"), ("build", subs, "1,000 subs, built + 1,000 publishes"),
                 ("reopen", subs, "1,000 subs, reopened + 1,000 publishes")]
        if r % 2:
            order = [order[1], order[2], order[0]]  # interleave: the empty run first or last
        for mode, p, name in order:
            got = child_rss(mode, p)
            kb = got["VmHWM"]
            rows[name].append(kb)
            # Where it is: the process's own memory, or pages of mapped files (the logs).
            print(f"round {r + 1} {name:40s} VmHWM {kb / 1024:7.1f} MiB (at exit: anon "
                  f"{got['RssAnon'] / 1024:.1f}, file {got['RssFile'] / 1024:.1f}, shmem "
                  f"{got['RssShmem'] / 1024:.1f} MiB)", flush=True)
        shutil.rmtree(empty, ignore_errors=True)
        shutil.rmtree(subs, ignore_errors=True)
    e = median(rows["empty store"])
    print("\n| process | VmHWM (median of rounds) | rounds | above empty |")
    print("|---|---:|---|---:|")
    worst = 0.0
    for name, v in rows.items():
        m = median(v)
        worst = max(worst, (m - e) / 1024)
        print(f"| {name} | {m / 1024:.1f} MiB | {', '.join(f'{x / 1024:.1f}' for x in v)} | "
              f"{(m - e) / 1024:+.1f} MiB |")
    print(f"\ntarget <= 50 MB above the empty store: {worst * 1.048576:.1f} MB {'PASS' if worst * 1.048576 <= 50 else 'FAIL'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="directory on the disk to measure")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per row per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slice", type=float, default=0.5, help="seconds a row runs before the next takes its turn")
    ap.add_argument("--durability", default="os", choices=("always", "batch", "os"),
                    help='"os" (the default) shows the CPU cost the subscriptions add, without the disk')
    ap.add_argument("--rss", action="store_true", help="measure peak RSS instead")
    ap.add_argument("--anchored", action="store_true",
                    help="also a row whose anything-but policies carry an exact value beside (see policy_1pct)")
    ap.add_argument("--max-wait", type=float, default=20.0, help="seconds to wait for quiet CPUs first")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="walq-bench-topic-subs-", dir=args.dir)
    info = machine(base)
    info["commit"] = git_commit(ROOT)
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print("machine:")
    print_machine(info)
    waited, busy = wait_quiet(max_wait=args.max_wait)
    print(f"waited {waited:.1f}s for quiet CPUs (others' share {busy:.0%})")
    try:
        if args.rss:
            bench_rss(args, base)
        else:
            print(f"durability: {args.durability}")
            bench_publish(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
