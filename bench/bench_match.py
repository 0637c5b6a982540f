"""Filter-policy matching: walq's indexed Matcher against moto's SNS matcher.

    python bench/bench_match.py [--policies 1000] [--messages 100000]
                                [--moto-messages 500] [--rounds 3] [--seed 7]

1. Throughput: ``--policies`` distinct SNS filter policies (attribute scope; a
   mix of exact values, prefixes, numeric ranges, anything-but and exists)
   against ``--messages`` messages' attributes. walq's ``Matcher.match`` runs
   every message; moto's ``FilterPolicyMatcher.matches`` (one evaluation per
   policy per message: 10^8 calls at full size, hours in Python) runs the first
   ``--moto-messages`` of the same messages, and both are reported per message.
   The two must return the same subscriptions on those messages (checked).
   Target: walq at least 10x moto.
2. Scaling: ``Matcher.match`` with the first 10 policies vs all of them, over
   the same messages. Target: all of them at most 3x the time of 10.

Each figure is the median of ``--rounds`` rounds; within a round the
measurements are interleaved (walq, moto, walq-10, walq-all) so that a load
change on the host hits all of them alike. Single process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from walq.match import Matcher, compile_filter_policy  # noqa: E402

EVENTS = [f"{noun}.{verb}" for noun in ("order", "invoice", "payment", "shipment", "refund", "user",
                                         "cart", "review", "ticket", "coupon")
          for verb in ("created", "updated", "deleted", "approved", "rejected", "paid", "sent",
                       "failed", "opened", "closed", "archived", "restored", "merged", "split",
                       "flagged", "cleared", "locked", "unlocked", "queued", "expired")]  # 200
REGIONS = [f"{area}-{n}" for area in ("us-east", "us-west", "eu-west", "eu-central", "ap-south")
           for n in range(1, 5)]  # 20
PRICE_MAX = 10_000.0


def make_policies(n: int, rng: random.Random) -> list[dict]:
    """``n`` distinct attribute-scope policies: each anchored on an exact event
    type, a customer prefix or a price range, plus up to two of anything-but,
    exists, a second exact field or a range."""
    seen, policies = set(), []
    while len(policies) < n:
        kind = rng.random()
        policy: dict = {}
        if kind < 0.5:
            policy["event"] = rng.sample(EVENTS, rng.choice((1, 1, 2, 3)))
        elif kind < 0.75:
            policy["customer"] = [{"prefix": f"cust-{rng.randrange(1000):03d}"}]
        else:
            low = round(rng.uniform(0, PRICE_MAX * 0.99), 2)
            high = round(low + rng.uniform(10, PRICE_MAX * 0.01), 2)
            policy["price"] = [{"numeric": [">=", low, "<", high]}]
        for _ in range(rng.choice((0, 1, 1, 2))):
            extra = rng.random()
            if extra < 0.35:
                policy["region"] = [{"anything-but": rng.sample(REGIONS, rng.choice((1, 2, 3)))}]
            elif extra < 0.6:
                policy["coupon"] = [{"exists": rng.random() < 0.5}]
            elif extra < 0.8:
                policy["tier"] = rng.sample(["free", "pro", "team", "enterprise"], rng.choice((1, 2)))
            elif "price" not in policy:
                policy["price"] = [{"numeric": [">", round(rng.uniform(0, PRICE_MAX), 2)]}]
        text = json.dumps(policy, sort_keys=True)
        if text not in seen:
            seen.add(text)
            policies.append(policy)
    return policies


def make_messages(n: int, rng: random.Random) -> list[dict]:
    """Attributes as walq's queue messages hold them: str and float values."""
    messages = []
    for _ in range(n):
        attrs = {
            "event": rng.choice(EVENTS),
            "region": rng.choice(REGIONS),
            "customer": f"cust-{rng.randrange(100_000):05d}",
            "price": round(rng.uniform(0, PRICE_MAX), 2),
            "tier": rng.choice(["free", "pro", "team", "enterprise"]),
        }
        if rng.random() < 0.3:
            attrs["coupon"] = f"C{rng.randrange(1000)}"
        messages.append(attrs)
    return messages


def as_sns(attrs: dict) -> dict:
    """The same attributes in SNS's wire form, as moto takes them."""
    return {name: ({"Type": "Number", "Value": repr(v)} if isinstance(v, float) else {"Type": "String", "Value": v})
            for name, v in attrs.items()}


def run_walq(matcher: Matcher, messages: list) -> tuple[float, list]:
    match = matcher.match
    t0 = time.perf_counter()
    results = [match(m) for m in messages]
    return time.perf_counter() - t0, results


def run_moto(matchers: list, messages: list) -> tuple[float, list]:
    t0 = time.perf_counter()
    results = [{i for i, fm in matchers if fm.matches(m, "")} for m in messages]
    return time.perf_counter() - t0, results


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--moto-messages", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    from moto.sns.utils import FilterPolicyMatcher  # the bench extra

    rng = random.Random(args.seed)
    policies = make_policies(args.policies, rng)
    messages = make_messages(args.messages, rng)
    moto_messages = [as_sns(m) for m in messages[: args.moto_messages]]

    t0 = time.perf_counter()
    full = Matcher("attributes")
    for i, policy in enumerate(policies):
        full.add(i, compile_filter_policy(policy))
    build_s = time.perf_counter() - t0
    small = Matcher("attributes")
    for i, policy in enumerate(policies[:10]):
        small.add(i, policy)
    moto = [(i, FilterPolicyMatcher(p, "MessageAttributes")) for i, p in enumerate(policies)]

    walq_t, moto_t, small_t, full_t = [], [], [], []
    mismatches = matched = 0
    for _ in range(args.rounds):
        t, walq_results = run_walq(full, messages)
        walq_t.append(t / len(messages))
        t, moto_results = run_moto(moto, moto_messages)
        moto_t.append(t / len(moto_messages))
        t, _ = run_walq(small, messages)
        small_t.append(t / len(messages))
        t, _ = run_walq(full, messages)
        full_t.append(t / len(messages))
        mismatches = sum(a != b for a, b in zip(walq_results, moto_results))
        matched = sum(len(r) for r in walq_results)

    w, m, s, f = (statistics.median(x) for x in (walq_t, moto_t, small_t, full_t))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": git_commit(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": platform.processor() or platform.machine(),
        "policies": args.policies,
        "messages": args.messages,
        "moto_messages": args.moto_messages,
        "rounds": args.rounds,
        "matcher_build_s": round(build_s, 3),
        "matched_policies_per_message": round(matched / len(messages), 2),
        "walq_us_per_message": round(w * 1e6, 2),
        "moto_us_per_message": round(m * 1e6, 1),
        "walq_messages_per_s": round(1 / w),
        "moto_messages_per_s": round(1 / m, 1),
        "speedup_vs_moto": round(m / w, 1),
        "moto_disagreements": mismatches,
        "walq_10_policies_us": round(s * 1e6, 2),
        "walq_all_policies_us": round(f * 1e6, 2),
        "all_over_10": round(f / s, 2),
        # Paired within each round, so that a load change between rounds cancels out.
        "all_over_10_per_round": [round(a / b, 2) for a, b in zip(full_t, small_t)],
        "rounds_us": {"walq": [round(x * 1e6, 2) for x in walq_t], "moto": [round(x * 1e6, 1) for x in moto_t],
                      "walq_10": [round(x * 1e6, 2) for x in small_t],
                      "walq_all": [round(x * 1e6, 2) for x in full_t]},
    }
    print(json.dumps(report, indent=2))
    print(f"\nthroughput: walq {report['walq_messages_per_s']:,} msg/s, moto {report['moto_messages_per_s']:,} msg/s "
          f"-> {report['speedup_vs_moto']}x (target >= 10x: {'PASS' if m / w >= 10 else 'FAIL'})")
    print(f"scaling: 10 policies {report['walq_10_policies_us']} us, {args.policies} policies "
          f"{report['walq_all_policies_us']} us -> {report['all_over_10']}x "
          f"(target <= 3x: {'PASS' if f / s <= 3 else 'FAIL'}); per round "
          f"{', '.join(f'{r}x' for r in report['all_over_10_per_round'])}")
    if mismatches:
        print(f"WARNING: walq and moto disagree on {mismatches} of {len(moto_messages)} messages")


if __name__ == "__main__":
    main()
