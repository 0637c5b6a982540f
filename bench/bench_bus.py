"""Event bus benchmark: put_events through 10, 100 and 1,000 rules into queue
targets, and the pattern matcher alone beside moto's and LocalStack's.

    python bench/bench_bus.py [--dir D] [--seconds S] [--rounds N] [--batches 1,10]
                              [--rules 10,100,1000] [--events 20000] [--peer-events 300]
                              [--durability always] [--skip-put] [--skip-match] [--json FILE]

The workload (``make_rules``, ``make_events``; fixed by ``--seed``):

* Events are EventBridge envelopes (``source``, ``detail-type``, ``detail``
  with nested ``customer``, an ``amount``, a ``status``, a ``sku``, an
  optional ``coupon``): 10 sources x 10 detail types, 100,000 customer ids,
  20 countries, 4 tiers, amounts uniform over 0-10,000.
* Rules mix the operators: exact values (source, detail-type), ``prefix``
  (customer id), ``numeric`` ranges (amount), ``anything-but`` (status),
  ``exists`` true and false (coupon), nested detail fields
  (``detail.customer.country`` / ``tier``), ``$or`` of two sub-patterns and
  ``wildcard`` (sku).  Each rule is drawn to match a fraction ``p`` of events,
  ``p = max(1/N, 1%)`` for N rules: about one matching rule per event with 10
  or 100 rules, about ten with 1,000 (the measured figure is printed).
* Rule ``i`` has one target, queue ``i mod --queues`` (16): every match is one
  queue copy.

1. put_events (``--durability``, "always" by default): one bus per rule count
   in one store; rows are (rules, batch size), plus a plain ``send`` to one
   queue and the disk's raw pwrite+fdatasync rate for scale.  Each round gives
   every row ``--seconds``, in slices the rows take in turn (the shared disk's
   speed drifts within seconds); a row's events/s is the median over rounds,
   its p50/p99 per put_events call come from every call of every round.
   Target: 1,000 rules at least 0.5x the 10-rule rate (per batch size),
   judged on the median of the rounds' ratios (each round's pair measured
   side by side).
2. The matcher alone, on the same events and each rule set: walq's
   ``Matcher("pattern")`` over ``--events`` events; moto's
   ``EventPattern.load(p).matches_event(e)`` and LocalStack's
   ``matches_event(p, e)`` (one evaluation per rule per event, as both
   services do) over the first ``--peer-events``.  All three must return the
   same rules for those events (checked; every operator used here is one both
   peers evaluate as EventBridge does on these events).  Measurements are
   interleaved within each round; figures are medians of rounds.
   Target: walq at least 10x moto (and LocalStack, when installed), with
   1,000 rules (the smaller sets are shown too).

Results and the exact command: bench/RESULTS.md ("Event bus").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import walq  # noqa: E402
from common import git_commit, machine, median, percentiles, print_machine, run_row, raw_fdatasync, table, wait_quiet  # noqa: E402
from walq.match import Matcher, compile_pattern  # noqa: E402

SOURCES = [f"shop.{s}" for s in ("orders", "billing", "shipping", "catalog", "users",
                                 "reviews", "carts", "coupons", "returns", "support")]
TYPES = ["Created", "Updated", "Deleted", "Approved", "Rejected", "Paid", "Shipped", "Refunded",
         "Opened", "Closed"]
COUNTRIES = ["US", "CA", "MX", "BR", "AR", "GB", "FR", "DE", "ES", "IT",
             "NL", "SE", "PL", "IN", "JP", "KR", "CN", "AU", "ZA", "EG"]
TIERS = ["free", "silver", "gold", "platinum"]
STATUSES = ["new", "pending", "active", "done", "cancelled"]
LETTERS = "ABCDEFGHIJ"
AMOUNT_MAX = 10_000.0
CUSTOMERS = 100_000


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def make_rule(rng: random.Random, p: float) -> dict:
    """One pattern that about a fraction ``p`` (0.1 or 0.01) of events match."""
    k = 1 if p >= 0.1 else 2  # decimal digits of selectivity
    kind = rng.randrange(8)
    if kind == 0:  # exact values
        pat = {"source": [rng.choice(SOURCES)]}
        if k == 2:
            pat["detail-type"] = [rng.choice(TYPES)]
        return pat
    if kind == 1:  # prefix, nested
        return {"detail": {"customer": {"id": [{"prefix": "c-" + _digits(rng, k)}]}}}
    if kind == 2:  # numeric range
        low = round(rng.uniform(0, AMOUNT_MAX * (1 - p)), 2)
        return {"detail": {"amount": [{"numeric": [">=", low, "<", round(low + AMOUNT_MAX * p, 2)]}]}}
    if kind == 3:  # anything-but beside exact values (0.8 x 1/10 per exact field)
        pat = {"detail-type": [rng.choice(TYPES)],
               "detail": {"status": [{"anything-but": rng.sample(STATUSES, 1)}]}}
        if k == 2:
            pat["source"] = [rng.choice(SOURCES)]
        return pat
    if kind == 4:  # exists true (30% of events) or false, beside a prefix
        return {"detail": {"coupon": [{"exists": rng.random() < 0.5}],
                           "customer": {"id": [{"prefix": "c-" + _digits(rng, k)}]}}}
    if kind == 5:  # nested fields: country (1/20) and tier (1/4), or two countries
        if k == 1:
            return {"detail": {"customer": {"country": rng.sample(COUNTRIES, 2)}}}
        return {"detail": {"customer": {"country": [rng.choice(COUNTRIES)], "tier": [rng.choice(TIERS)]}}}
    if kind == 6:  # $or: an amount range (p/2), or a country (and a detail-type: p/2)
        low = round(rng.uniform(0, AMOUNT_MAX * (1 - p / 2)), 2)
        other: dict = {"detail": {"customer": {"country": [rng.choice(COUNTRIES)]}}}
        if k == 2:
            other["detail-type"] = [rng.choice(TYPES)]
        return {"$or": [{"detail": {"amount": [{"numeric": [">=", low, "<", round(low + AMOUNT_MAX * p / 2, 2)]}]}},
                        other]}
    # wildcard on the sku "SKU-dddd-L": a letter (1/10), plus a leading digit for 1%
    head = "SKU-" + _digits(rng, k - 1)
    return {"detail": {"sku": [{"wildcard": f"{head}*-{rng.choice(LETTERS)}"}]}}


def make_rules(n: int, rng: random.Random) -> list[dict]:
    """``n`` distinct patterns, each matching about ``max(1/n, 1%)`` of events."""
    p = max(1.0 / n, 0.01)
    p = 0.1 if p >= 0.05 else 0.01
    seen, rules = set(), []
    while len(rules) < n:
        pat = make_rule(rng, p)
        text = json.dumps(pat, sort_keys=True)
        if text not in seen:
            seen.add(text)
            rules.append(pat)
    return rules


def make_detail(rng: random.Random) -> dict:
    detail = {
        "customer": {"id": f"c-{rng.randrange(CUSTOMERS):05d}", "country": rng.choice(COUNTRIES),
                     "tier": rng.choice(TIERS)},
        "amount": round(rng.uniform(0, AMOUNT_MAX), 2),
        "status": rng.choice(STATUSES),
        "sku": f"SKU-{rng.randrange(10_000):04d}-{rng.choice(LETTERS)}",
        "quantity": rng.randrange(1, 100),
    }
    if rng.random() < 0.3:
        detail["coupon"] = f"SAVE{rng.randrange(100)}"
    return detail


def make_entries(n: int, rng: random.Random) -> list[dict]:
    """put_events entries."""
    return [{"source": rng.choice(SOURCES), "detail_type": rng.choice(TYPES), "detail": make_detail(rng)}
            for _ in range(n)]


def envelope(entry: dict) -> dict:
    """The event a rule sees for ``entry``, as walq's bus builds it."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": entry["detail_type"],
            "source": entry["source"], "account": "000000000000", "time": "2026-12-07T12:00:00Z",
            "region": "us-east-1", "resources": [], "detail": entry["detail"]}


# -- 1. put_events -------------------------------------------------------------------


def setup_store(base: str, durability: str, counts: list[int], queues: int, seed: int) -> tuple:
    """A store with one bus per rule count, each rule targeting one of ``queues`` queues."""
    path = tempfile.mkdtemp(prefix="bus-", dir=base)
    b = walq.open(path, durability=durability)
    buses = {}
    for n in counts:
        bus = b.create_bus(f"bus{n}")
        qs = [b.create_queue(f"b{n}-q{i}") for i in range(queues)]
        for i, pat in enumerate(make_rules(n, random.Random(seed + n))):
            bus.put_rule(f"r{i}", pattern=pat)
            bus.put_targets(f"r{i}", [walq.Target("q", qs[i % queues])])
        buses[n] = bus
    return path, b, buses, b.create_queue("direct")


def bench_put(args, base: str, counts: list[int], batches: list[int]) -> dict:
    path, b, buses, direct = setup_store(base, args.durability, counts, args.queues, args.seed)
    entries = make_entries(4096, random.Random(args.seed + 1))
    matched, hits = {}, {}
    for n in counts:  # the copies each bus makes per event, counted untimed
        m = buses[n]._matcher()[0]
        hits[n] = [len(m.match(envelope(e))) for e in entries]
        matched[n] = sum(hits[n]) / len(entries)

    def idle_share(n, size):
        """Share of a row's calls whose events match no rule: they write
        nothing, so they wait for no fdatasync."""
        i, idle = 0, 0
        for _ in range(2000):
            idle += not any(hits[n][i:i + size])
            i = (i + size) % (len(entries) - size)
        return idle / 2000

    def putter(bus, size):
        state = [0]

        def fn():
            i = state[0]
            state[0] = (i + size) % (len(entries) - size)
            res = bus.put_events(entries[i:i + size])
            assert not res.failed
        return fn

    body = b"x" * 100
    rows = {"send (1 queue, 100 B)": (lambda: direct.send(body), 1)}
    for size in batches:
        for n in counts:
            rows[f"put_events {n} rules, batch {size}"] = (putter(buses[n], size), size)
    names = list(rows)
    rates = {k: [] for k in names}
    lats = {k: [] for k in names}
    raw = []
    try:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            raw.append(raw_fdatasync(base, "overwrite", min(1.0, args.seconds)).ops_per_s)
            done = {k: [0, 0.0] for k in names}
            slices = max(1, round(args.seconds / args.slice))
            for i in range(slices):
                for name in order[i % len(order):] + order[:i % len(order)]:
                    fn, _ = rows[name]
                    calls, secs, lat = run_row(fn, args.seconds / slices)
                    done[name][0] += calls
                    done[name][1] += secs
                    lats[name] += lat
            for name in order:
                calls, secs = done[name]
                rates[name].append(calls * rows[name][1] / secs)
                print(f"round {r + 1} {name:32s} {calls * rows[name][1] / secs:8.0f} events/s", flush=True)
    finally:
        b.close()
        shutil.rmtree(path, ignore_errors=True)
    print()
    print(f"raw pwrite+fdatasync (overwrite, 128 B) per round: {', '.join(f'{x:.0f}' for x in raw)}/s")
    out = {"raw_fdatasync": raw, "matched_per_event": matched, "rows": {}}
    body_rows = []
    for name in names:
        p = percentiles(lats[name], (50, 99))
        m = median(rates[name])
        n_rules = next((n for n in counts if name.startswith(f"put_events {n} ")), None)
        size = rows[name][1]
        ref = f"put_events {counts[0]} rules, batch {size}"
        vs = m / median(rates[ref]) if n_rules is not None and ref in rates else float("nan")
        idle = idle_share(n_rules, size) if n_rules else 0.0
        body_rows.append([name, f"{matched[n_rules]:.1f}" if n_rules else "-", f"{idle:.0%}", f"{m:,.0f}",
                          ", ".join(f"{x:,.0f}" for x in rates[name]), f"{p[50] * 1e6:,.0f} us",
                          f"{p[99] * 1e6:,.0f} us", "-" if vs != vs else f"{vs:.2f}x"])
        out["rows"][name] = {"rates": rates[name], "median": m, "p50": p[50], "p99": p[99], "vs_fewest": vs,
                             "calls_routing_nothing": idle}
    table(["row", "rules matched / event", "calls routing nothing", "events/s (median)", "rounds", "p50 / call",
           "p99 / call", f"vs {counts[0]} rules"], body_rows)
    verdicts = []
    for size in batches:
        lo, hi = f"put_events {counts[0]} rules, batch {size}", f"put_events {counts[-1]} rules, batch {size}"
        # Paired within each round, so that the disk's drift between rounds
        # (its fdatasync rate moves several-fold here) cancels out.
        per_round = [a / b for a, b in zip(rates[hi], rates[lo])]
        ratio = median(per_round)
        ok = ratio >= 0.5
        verdicts.append(ok)
        print(f"target batch {size}: {counts[-1]} rules >= 0.5x {counts[0]} rules: {ratio:.2f}x, median of the "
              f"rounds' ratios {', '.join(f'{x:.2f}x' for x in per_round)} (ratio of the rows' medians "
              f"{median(rates[hi]) / median(rates[lo]):.2f}x) {'PASS' if ok else 'FAIL'}")
        out.setdefault("ratios", {})[size] = {"per_round": per_round, "median": ratio}
    out["pass"] = all(verdicts)
    return out


# -- 2. the matcher alone --------------------------------------------------------------


def load_peers(rules: list[dict]) -> dict:
    """name -> (one-rule evaluator(i, event) or None, why not)."""
    peers = {}
    try:
        from moto.events.models import EventPattern

        moto = [EventPattern.load(json.dumps(r)) for r in rules]
        peers["moto"] = (lambda i, ev: moto[i].matches_event(ev), "")
    except ImportError as exc:
        peers["moto"] = (None, f"moto not installed ({exc}); pip install '.[bench]'")
    try:
        from localstack.services.events.event_rule_engine import EventPatternCompiler, EventRuleEngine

        compiled = [EventPatternCompiler().compile_event_pattern(json.dumps(r)) for r in rules]
        engine = EventRuleEngine()
        # What localstack.utils.event_matcher.matches_event does, less compiling
        # the pattern again on every call (kept in our favour of the peer).
        peers["localstack"] = (lambda i, ev: engine.evaluate_pattern_on_event(compiled[i], ev), "")
    except Exception as exc:  # noqa: BLE001 - any failure to import or compile means: skip
        peers["localstack"] = (None, f"LocalStack not usable here ({type(exc).__name__}: {exc}); "
                                     "pip install localstack-core")
    return peers


def bench_match(args, n_rules: int) -> dict:
    rng = random.Random(args.seed + n_rules)
    rules = make_rules(n_rules, rng)
    events = [envelope(e) for e in make_entries(args.events, random.Random(args.seed + 2))]
    few = events[: args.peer_events]
    t0 = time.perf_counter()
    m = Matcher("pattern")
    for i, r in enumerate(rules):
        m.add(i, compile_pattern(r))
    m.match(events[0])  # the index is built at the first match
    build = time.perf_counter() - t0
    peers = load_peers(rules)
    for name, (fn, why) in peers.items():
        if fn is None:
            print(f"SKIP {name}: {why}")
    live = {name: fn for name, (fn, _) in peers.items() if fn is not None}

    def run_walq(evs):
        match = m.match
        t = time.perf_counter()
        res = [match(e) for e in evs]
        return time.perf_counter() - t, res

    def run_peer(fn, evs):
        idx = range(len(rules))
        t = time.perf_counter()
        res = [{i for i in idx if fn(i, e)} for e in evs]
        return time.perf_counter() - t, res

    times = {k: [] for k in ["walq", *live]}
    disagree = {}
    for _ in range(args.rounds):
        secs, walq_res = run_walq(events)
        times["walq"].append(secs / len(events))
        for name, fn in live.items():
            secs, res = run_peer(fn, few)
            times[name].append(secs / len(few))
            disagree[name] = [j for j, (a, b) in enumerate(zip(walq_res, res)) if a != b]
    matched = sum(len(r) for r in walq_res) / len(events)
    w = median(times["walq"])
    rows, out = [], {"rules": n_rules, "build_s": build, "matched_per_event": matched, "peers": {}}
    rows.append(["walq Matcher", f"{len(events):,}", f"{w * 1e6:,.1f}", f"{1 / w:,.0f}",
                 ", ".join(f"{x * 1e6:,.1f}" for x in times["walq"]), "-", "-"])
    verdicts = []
    for name in live:
        t = median(times[name])
        speed = t / w
        ok = speed >= 10 and not disagree[name]
        verdicts.append(ok)
        rows.append([f"{name}", f"{len(few):,}", f"{t * 1e6:,.1f}", f"{1 / t:,.0f}",
                     ", ".join(f"{x * 1e6:,.1f}" for x in times[name]), f"{speed:,.0f}x",
                     str(len(disagree[name]))])
        out["peers"][name] = {"us": t * 1e6, "rounds_us": [x * 1e6 for x in times[name]], "speedup": speed,
                              "disagreements": len(disagree[name])}
    out["walq_us"] = w * 1e6
    out["walq_rounds_us"] = [x * 1e6 for x in times["walq"]]
    print(f"\nmatcher alone, {n_rules} rules ({matched:.1f} match per event; index built in {build * 1e3:.0f} ms):")
    table(["matcher", "events", "us / event (median)", "events/s", "rounds (us)", "walq faster by",
           "disagreements"], rows)
    for name in live:
        p = out["peers"][name]
        print(f"target walq >= 10x {name}: {p['speedup']:,.0f}x, {p['disagreements']} disagreements "
              f"{'PASS' if p['speedup'] >= 10 and not p['disagreements'] else 'FAIL'}")
        for j in disagree[name][:3]:
            print(f"  e.g. event {j}: walq {sorted(walq_res[j])} vs {name} "
                  f"{sorted(i for i in range(len(rules)) if live[name](i, events[j]))}")
    out["pass"] = all(verdicts) and bool(verdicts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="directory on the disk to measure")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per put_events row per round")
    ap.add_argument("--slice", type=float, default=0.5, help="seconds a row runs before the next takes its turn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rules", default="10,100,1000", help="rule counts, fewest first")
    ap.add_argument("--batches", default="1,10", help="put_events batch sizes (entries per call, <= 10)")
    ap.add_argument("--queues", type=int, default=16, help="distinct target queues per bus")
    ap.add_argument("--durability", default="always", choices=("always", "batch", "os"),
                    help='"os" shows the CPU cost alone (no fsync)')
    ap.add_argument("--events", type=int, default=20_000, help="events through walq's matcher")
    ap.add_argument("--peer-events", type=int, default=300, help="events through moto's and LocalStack's")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-put", action="store_true")
    ap.add_argument("--skip-match", action="store_true")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--max-wait", type=float, default=20.0, help="seconds to wait for quiet CPUs first")
    args = ap.parse_args()
    counts = sorted(int(x) for x in args.rules.split(","))
    batches = [int(x) for x in args.batches.split(",")]
    os.makedirs(args.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="walq-bench-bus-", dir=args.dir)
    info = machine(base)
    info["commit"] = git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print("machine:")
    print_machine(info)
    waited, busy = wait_quiet(max_wait=args.max_wait)
    print(f"waited {waited:.1f}s for quiet CPUs (others' share {busy:.0%})")
    out = {"machine": info, "args": vars(args)}
    try:
        if not args.skip_put:
            print(f"\n1. put_events, durability {args.durability!r}, {args.queues} queues per bus")
            out["put"] = bench_put(args, base, counts, batches)
        if not args.skip_match:
            print("\n2. the matcher alone")
            out["match"] = {n: bench_match(args, n) for n in counts}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
