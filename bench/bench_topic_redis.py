"""Topic benchmark: walq's publish to 10 queues beside Redis Streams with 10
consumer groups, both fsyncing every write, in the same run.

    python bench/bench_topic_redis.py [--dir D] [--seconds S] [--rounds N]

The script starts ``redis-server`` (Debian's package) on a free loopback
port with a temporary directory and ``--appendonly yes --appendfsync always
--save ""``, and stops it at the end; without redis-server (or the ``redis``
client, in the ``bench`` extra) it says so and exits.

Rows (one process, one thread, 100-byte messages; walq under "always",
envelope delivery, 10 unfiltered queue subscriptions):
- "walq publish -> 10 queues" beside "redis XADD (10 groups)": one command
  per round trip, the stream read by 10 consumer groups.
- end to end, one message through all ten consumers: walq publish, then
  ``receive(1)`` + ``delete`` on each of the 10 queues; Redis XADD, then
  ``XREADGROUP COUNT 1`` + ``XACK`` for each of the 10 groups.
- "walq send (1 queue)" for scale.
Rows take turns in short slices each round; msgs/s is the median of rounds.
Target: walq's publish at least 1x Redis's XADD.
Results and the exact command: bench/RESULTS.md ("Topics").
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import walq  # noqa: E402
from common import git_commit, machine, median, percentiles, print_machine, run_row, raw_fdatasync, wait_quiet  # noqa: E402

BODY = b"x" * 100
GROUPS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(server: str, workdir: str):
    """A redis-server fsyncing every write; (process, client)."""
    import redis

    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
                             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                             "--daemonize", "no", "--protected-mode", "no", "--logfile", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"redis-server did not start (exit code {proc.poll()})")
            time.sleep(0.05)
    got = client.config_get("appendfsync")
    assert got.get("appendfsync") == "always" or got.get(b"appendfsync") == b"always", got
    return proc, client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="directory on the disk to measure")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per row per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slice", type=float, default=0.5, help="seconds a row runs before the next takes its turn")
    ap.add_argument("--max-wait", type=float, default=20.0, help="seconds to wait for quiet CPUs first")
    args = ap.parse_args()
    server = shutil.which("redis-server")
    try:
        import redis  # noqa: F401
    except ImportError:
        redis = None
    if server is None or redis is None:
        print("skipped: " + ("redis-server is not installed (apt-get install redis-server)" if server is None
                             else "the redis client is not installed (pip install redis)"))
        return
    os.makedirs(args.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="walq-bench-topic-redis-", dir=args.dir)
    info = machine(base)
    info["commit"] = git_commit(ROOT)
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    info["redis"] = subprocess.run([server, "--version"], capture_output=True, text=True).stdout.strip()
    print("machine:")
    print_machine(info)
    waited, busy = wait_quiet(max_wait=args.max_wait)
    print(f"waited {waited:.1f}s for quiet CPUs (others' share {busy:.0%})")
    rdir = os.path.join(base, "redis")
    os.mkdir(rdir)
    proc, r = start_redis(server, rdir)
    b = walq.open(os.path.join(base, "walq"), durability="always")
    try:
        q = b.create_queue("direct")
        t = b.create_topic("t")
        e2e_t = b.create_topic("e2e")
        e2e_q = []
        for i in range(GROUPS):
            t.subscribe(b.create_queue(f"t-q{i}"))
            e2e_q.append(b.create_queue(f"e2e-q{i}"))
            e2e_t.subscribe(e2e_q[-1])
        for stream in ("s", "e2e"):
            for g in range(GROUPS):
                r.xgroup_create(stream, f"g{g}", id="$", mkstream=True)

        def walq_e2e():
            e2e_t.publish(BODY)
            for qq in e2e_q:
                for m in qq.receive(1):
                    qq.delete(m.receipt)

        def redis_e2e():
            r.xadd("e2e", {"m": BODY})
            for g in range(GROUPS):
                got = r.xreadgroup(f"g{g}", "c", {"e2e": ">"}, count=1)
                for _stream, entries in got:
                    for mid, _fields in entries:
                        r.xack("e2e", f"g{g}", mid)

        rows = {
            "walq send (1 queue)": lambda: q.send(BODY),
            "walq publish -> 10 queues": lambda: t.publish(BODY),
            "redis XADD (10 groups)": lambda: r.xadd("s", {"m": BODY}),
            "walq publish + 10x receive/delete": walq_e2e,
            "redis XADD + 10x XREADGROUP/XACK": redis_e2e,
        }
        names = list(rows)
        for fn in rows.values():
            fn()
        rates: dict[str, list[float]] = {k: [] for k in names}
        lats: dict[str, list[float]] = {k: [] for k in names}
        raw = []
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            raw.append(raw_fdatasync(base, "overwrite", min(1.0, args.seconds)).ops_per_s)
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
                print(f"round {rnd + 1} {name:36s} {n / secs:8.0f} msgs/s", flush=True)
            # The streams would only grow: trim what every group has read.
            r.xtrim("s", maxlen=0)
        # Both sides delivered everything they were given.
        for qq in e2e_q:
            assert qq.receive(1) == [], "a walq copy was left behind"
        pending = r.xpending("e2e", "g0")
        assert pending["pending"] == 0, pending
    finally:
        b.close()
        r.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)
    print()
    print(f"raw pwrite+fdatasync (overwrite, 128 B), per round: {', '.join(f'{x:.0f}' for x in raw)}/s")
    print("| row | msgs/s (median of rounds) | rounds | p50 | p99 |")
    print("|---|---:|---|---:|---:|")
    for name in names:
        p = percentiles(lats[name], (50, 99))
        print(f"| {name} | {median(rates[name]):,.0f} | {', '.join(f'{x:,.0f}' for x in rates[name])} | "
              f"{p[50] * 1e6:.0f} us | {p[99] * 1e6:.0f} us |")
    per_round = [a / c for a, c in zip(rates["walq publish -> 10 queues"], rates["redis XADD (10 groups)"])]
    x = median(rates["walq publish -> 10 queues"]) / median(rates["redis XADD (10 groups)"])
    e2e = median(rates["walq publish + 10x receive/delete"]) / median(rates["redis XADD + 10x XREADGROUP/XACK"])
    print(f"\npublish / XADD per round: {', '.join(f'{v:.2f}x' for v in per_round)}")
    print(f"end to end walq / redis: {e2e:.2f}x")
    print(f"target walq publish >= 1x redis XADD: {x:.2f}x {'PASS' if x >= 1 else 'FAIL'}")


if __name__ == "__main__":
    main()
