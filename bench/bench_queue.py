"""Queue benchmarks: walq beside persist-queue's SQLiteAckQueue,
litequeue and a plain SQLite table queue, 100-byte messages, in one run.

    python bench/bench_queue.py [--dir D] [--quick] [--json FILE]

Sections:

1. Single-process operations, each on a fresh store, in interleaved rounds
   (the shared disk drifts; every peer gets the same slices of it):
   ``send`` in a loop; ``send_batch`` of 10 and of 100; ``receive(10)`` +
   ``delete_batch`` of what it got, on a queue pre-filled with ``--depth``
   messages.  Every call is timed (perf_counter) for p50/p99.
2. 4 producer + 4 consumer processes end to end: producers send unique bodies
   (``send_batch`` of 10; persist-queue, which has no batch, one ``put`` at a
   time), consumers ``receive(10)`` (walq long-polls; the SQLite peers poll
   every 1 ms) and delete what they got.  Messages/s = messages consumed /
   (last consume - start).  Every consumed body is checked: none lost, none
   delivered twice.  walq ``"always"`` and SQLite FULL, the 4+4 target and its
   reference, run three times (``--e2e-rounds``), alternating, each round
   beside the disk's raw fdatasync rate; the target is judged on walq's
   median round, and every round is printed.
3. Long-poll wake-up: a receiver in another process blocked in
   ``q.receive(wait=5)``; the sender stamps CLOCK_MONOTONIC into the body just
   before ``send``; latency = receive return - that stamp.  walq only: the
   peers cannot block on another process's insert.

Durability pairs: walq ``"always"`` vs SQLite ``synchronous=FULL`` (a call
returns after fdatasync); walq ``"os"`` and ``"batch"`` vs ``NORMAL`` (no sync
per call).  Then every queue target with PASS/FAIL.  A ratio
target is judged twice - on the pooled rates and on the median of the
per-round ratios (each round runs both sides within about a minute); it is
PASS or FAIL when both agree and UNSTABLE when a shared, drifting disk makes
them disagree.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import peers  # noqa: E402
from common import fmt_rate, git_commit, machine, percentile, print_machine, raw_fdatasync, table  # noqa: E402

PAYLOAD = b"m" * 100
REPO = os.path.dirname(HERE)

CONFIGS = [
    ("walq", "always"),
    ("walq", "batch"),
    ("walq", "os"),
    ("sqlite", "FULL"),
    ("sqlite", "NORMAL"),
    ("sqlite", "FULL-LAZY-LEASE"),
    ("persist-queue", "FULL"),
    ("persist-queue", "NORMAL"),
    ("litequeue", "FULL"),
    ("litequeue", "NORMAL"),
]
OPS = [("send", 1), ("send_batch", 10), ("send_batch", 100), ("receive+delete", 10)]
#: The SQLite mode each walq mode is compared with.
PAIR = {"always": "FULL", "batch": "NORMAL", "os": "NORMAL"}
LABEL = {
    "walq": "walq",
    "sqlite": "SQLite table",
    "persist-queue": "persist-queue SQLiteAckQueue",
    "litequeue": "litequeue",
}


class Result:
    """Messages moved in ``seconds`` by ``calls`` calls, each call timed."""

    def __init__(self, msgs=0, calls=0, seconds=0.0, lat=None, cpu=0.0, note=""):
        self.msgs, self.calls, self.seconds, self.cpu, self.note = msgs, calls, seconds, cpu, note
        self.lat = lat if lat is not None else array("d")
        self._sorted = None
        self.rounds = [self.rate] if seconds else []  # msgs/s of each round

    def merge(self, other: "Result") -> None:
        self.msgs += other.msgs
        self.calls += other.calls
        self.seconds += other.seconds
        self.cpu += other.cpu
        self.lat.extend(other.lat)
        self._sorted = None
        self.rounds.extend(other.rounds)
        if other.note and other.note not in self.note:
            self.note = f"{self.note}; {other.note}" if self.note else other.note

    @property
    def rate(self) -> float:
        return self.msgs / self.seconds if self.seconds else float("nan")

    @property
    def call_rate(self) -> float:
        return self.calls / self.seconds if self.seconds else float("nan")

    def pct(self, q: float) -> float:
        if not self.lat:
            return float("nan")
        if self._sorted is None or len(self._sorted) != len(self.lat):
            self._sorted = sorted(self.lat)
        return percentile(self._sorted, q)

    def as_dict(self) -> dict:
        return {"msgs": self.msgs, "calls": self.calls, "seconds": self.seconds, "msgs_per_s": self.rate,
                "rounds_msgs_per_s": self.rounds, "p50_s": self.pct(50), "p99_s": self.pct(99),
                "cpu_s": self.cpu, "note": self.note}

    def spread(self) -> str:
        """The lowest and highest round, when there were several."""
        if len(self.rounds) < 2:
            return "-"
        return f"{fmt_rate(min(self.rounds))}-{fmt_rate(max(self.rounds))}"


def fmt_lost(r: dict) -> str:
    if r["lost"] is None:
        return f"? ({r['left_undelivered']:,} still queued: not drained)"
    return f"{r['lost']:,}"


def fmt_lat(seconds: float) -> str:
    """Microseconds below 10 ms, else milliseconds with a unit."""
    if seconds != seconds:
        return "-"
    if seconds >= 0.01:
        return f"{seconds * 1e3:,.1f} ms"
    return f"{seconds * 1e6:,.0f}"


# -- single-process operations ---------------------------------------------------------


def run_op(base: str, kind: str, dur: str, op: str, size: int, seconds: float, depth: int) -> Result | None:
    """One measurement of ``op`` on a fresh store; None if the library cannot do it."""
    d = tempfile.mkdtemp(prefix=f"{kind}-{dur}-", dir=base)
    os.sync()  # the previous measurement's writeback must not land on this one
    q = peers.make(kind, dur, d)
    try:
        if op == "send_batch" and not q.supports_batch:
            return None
        body = q.wrap(PAYLOAD)
        perf = time.perf_counter
        lat = array("d")
        note = ""
        if op == "send":
            send = q.send
            for _ in range(20):
                send(body)
            c0 = time.process_time()
            t0 = perf()
            deadline = t0 + seconds
            while True:
                a = perf()
                send(body)
                b = perf()
                lat.append(b - a)
                if b >= deadline:
                    break
            msgs = len(lat)
        elif op == "send_batch":
            send_batch = q.send_batch
            bodies = [body] * size
            for _ in range(3):
                send_batch(bodies)
            c0 = time.process_time()
            t0 = perf()
            deadline = t0 + seconds
            while True:
                a = perf()
                send_batch(bodies)
                b = perf()
                lat.append(b - a)
                if b >= deadline:
                    break
            msgs = len(lat) * size
        else:
            q.prefill(depth + 50, PAYLOAD)
            os.sync()
            rd = q.receive_delete
            for _ in range(5):
                rd(size)
            msgs = 0
            c0 = time.process_time()
            t0 = perf()
            deadline = t0 + seconds
            while True:
                a = perf()
                got = len(rd(size))
                b = perf()
                if got:
                    lat.append(b - a)
                    msgs += got
                if got < size:
                    note = f"drained the {depth:,}-message queue"
                    b = a if not got else b
                    break
                if b >= deadline:
                    break
        elapsed = b - t0
        return Result(msgs, len(lat), elapsed, lat, time.process_time() - c0, note)
    finally:
        q.close()
        shutil.rmtree(d, ignore_errors=True)


def single_ops(base: str, n_rounds: int, seconds: float, depth: int, configs) -> tuple[dict, dict]:
    """Every (config, op) once per round, rotating the order; also the disk's
    raw pwrite+fdatasync rate once per round."""
    jobs = [(k, d, op, n) for k, d in configs for op, n in OPS if applies(d, op)]
    out: dict = {}
    disk: dict = {}
    for r in range(n_rounds):
        shift = (r * len(jobs)) // max(1, n_rounds)
        order = jobs[shift:] + jobs[:shift]
        raw = raw_fdatasync(base, "overwrite", min(0.5, seconds))
        if "raw" in disk:
            disk["raw"].merge(Result(raw.ops, raw.ops, raw.seconds, array("d", raw.latencies)))
        else:
            disk["raw"] = Result(raw.ops, raw.ops, raw.seconds, array("d", raw.latencies))
        print(f"  round {r + 1}/{n_rounds}: disk raw pwrite+fdatasync {fmt_rate(raw.ops_per_s)}/s", flush=True)
        for kind, dur, op, n in order:
            res = run_op(base, kind, dur, op, n, seconds, depth)
            key = (kind, dur, op, n)
            if res is None:
                out.setdefault(key, None)
                continue
            if out.get(key) is None:
                out[key] = res
            else:
                out[key].merge(res)
            print(f"  round {r + 1}/{n_rounds}  {kind:<14} {dur:<7} {op_name(op, n):<26} "
                  f"{fmt_rate(res.rate):>10} msgs/s", flush=True)
    return out, disk


def applies(dur: str, op: str) -> bool:
    """FULL-LAZY-LEASE differs from FULL only in receive: its sends are FULL's."""
    return dur != "FULL-LAZY-LEASE" or op == "receive+delete"


def op_name(op: str, n: int) -> str:
    if op == "send":
        return "send"
    if op == "send_batch":
        return f"send_batch({n})"
    return f"receive({n}) + delete_batch"


# -- 4 producers + 4 consumers -------------------------------------------------------------


def _body(pid: int, i: int) -> bytes:
    return f"p{pid}-{i:010d}-".encode().ljust(100, b".")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _producer(kind, dur, path, pid, count, batch, seconds, barrier, results) -> None:
    q = peers.make(kind, dur, path)
    barrier.wait()
    c0 = _cpu()
    perf = time.monotonic
    deadline = perf() + seconds
    sent = 0
    if batch > 1 and q.supports_batch:
        send_batch = q.send_batch
        wrap = q.wrap
        while sent < count and perf() < deadline:
            n = min(batch, count - sent)
            send_batch([wrap(_body(pid, sent + j)) for j in range(n)])
            sent += n
    else:
        send, wrap = q.send, q.wrap
        while sent < count and perf() < deadline:
            send(wrap(_body(pid, sent)))
            sent += 1
    t_end = perf()
    cpu = _cpu() - c0
    q.close()
    results.put(("producer", pid, sent, t_end, cpu))


def _consumer(kind, dur, path, cid, barrier, producers_done, hard_deadline_s, out_file, results) -> None:
    q = peers.make(kind, dur, path)
    rd = q.receive_delete
    keys = []
    barrier.wait()
    c0 = _cpu()
    perf = time.monotonic
    hard = perf() + hard_deadline_s
    last = 0.0
    empty_after_done = 0
    drained = True
    while True:
        done_before = producers_done.is_set()
        got = rd(10, wait=0.2)
        if got:
            last = perf()
            for b in got:
                if isinstance(b, str):
                    b = b.encode()
                keys.append(b[:14])
            empty_after_done = 0
        elif done_before:
            empty_after_done += 1
            if empty_after_done >= 2:
                break
        if perf() > hard:
            drained = False
            break
    cpu = _cpu() - c0
    q.close()
    with open(out_file, "wb") as f:
        f.write(b"\n".join(keys))
    results.put(("consumer", cid, len(keys), last, drained, cpu))


def end_to_end(base: str, kind: str, dur: str, per_producer: int, seconds: float, n_prod=4, n_cons=4) -> dict:
    """``n_prod`` producer and ``n_cons`` consumer processes on one queue."""
    ctx = multiprocessing.get_context("spawn")
    path = tempfile.mkdtemp(prefix=f"e2e-{kind}-{dur}-", dir=base)
    os.sync()
    peers.make(kind, dur, path).close()  # create the queue before the race
    batch = 10
    barrier = ctx.Barrier(n_prod + n_cons + 1)
    done = ctx.Event()
    results = ctx.Queue()
    hard = seconds + 15
    procs = []
    outs = []
    for c in range(n_cons):
        out = os.path.join(path, f"consumed-{c}.bin")
        outs.append(out)
        procs.append(ctx.Process(target=_consumer, args=(kind, dur, path, c, barrier, done, hard, out, results)))
    for p in range(n_prod):
        procs.append(ctx.Process(target=_producer,
                                 args=(kind, dur, path, p, per_producer, batch, seconds, barrier, results)))
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    t0 = time.monotonic()
    prod, cons = {}, {}
    while len(prod) < n_prod:
        r = results.get(timeout=seconds + 120)
        (prod if r[0] == "producer" else cons)[r[1]] = r
    done.set()
    t_prod = max(r[3] for r in prod.values())
    while len(cons) < n_cons:
        r = results.get(timeout=hard + 120)
        cons[r[1]] = r
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise RuntimeError(f"{kind} {dur}: a worker exited with {p.exitcode}")
    sent = {pid: r[2] for pid, r in prod.items()}
    consumed = []
    for out in outs:
        with open(out, "rb") as f:
            data = f.read()
        if data:
            consumed.extend(data.split(b"\n"))
    shutil.rmtree(path, ignore_errors=True)
    unique = set(consumed)
    expected = {_body(pid, i)[:14] for pid, n in sent.items() for i in range(n)}
    t_last = max(r[3] for r in cons.values())
    drained = all(r[4] for r in cons.values())
    total_sent = sum(sent.values())
    return {
        "kind": kind,
        "durability": dur,
        "producer_batch": 1 if kind == "persist-queue" else batch,
        "sent": total_sent,
        "consumed": len(consumed),
        "unique": len(unique),
        # Only a drained run can tell lost messages from ones still queued.
        "lost": len(expected - unique) if drained else None,
        "left_undelivered": len(expected - unique),
        "duplicates": len(consumed) - len(unique),
        "unexpected": len(unique - expected),
        "drained": drained,
        "seconds": t_last - t0,
        "msgs_per_s": len(unique) / (t_last - t0) if t_last > t0 else float("nan"),
        "send_msgs_per_s": total_sent / (t_prod - t0) if t_prod > t0 else float("nan"),
        "per_consumer": [cons[c][2] for c in sorted(cons)],
        "producer_cpu_us_per_msg": 1e6 * sum(r[4] for r in prod.values()) / max(1, total_sent),
        "consumer_cpu_us_per_msg": 1e6 * sum(r[5] for r in cons.values()) / max(1, len(consumed)),
    }


def end_to_end_rounds(base: str, configs, n_rounds: int, per_producer: int, seconds: float) -> tuple[list, list]:
    """Every config once; walq "always" and SQLite FULL (the 4+4 target and
    its reference) ``n_rounds`` times, alternating, each round beside the
    disk's raw fdatasync rate: the disk's speed swings from minute to minute
    here, and one run says more about that than about the queue.

    Returns the table's rows (a config run in rounds: its median round) and
    the rounds as ``(walq run, SQLite run, raw fdatasync/s)``.
    """
    paired = [("walq", "always"), ("sqlite", "FULL")]
    runs: dict = {}
    rounds_out = []
    for i in range(n_rounds):
        raw = raw_fdatasync(base, "overwrite", 0.5).ops_per_s
        pair = [end_to_end(base, kind, dur, per_producer, seconds) for kind, dur in (paired if i % 2 == 0 else paired[::-1])]
        w, q = sorted(pair, key=lambda r: r["kind"] != "walq")
        rounds_out.append((w, q, raw))
        for r in pair:
            runs.setdefault((r["kind"], r["durability"]), []).append(r)
            _print_e2e(r, f"round {i + 1}/{n_rounds} ")
    out = []
    for kind, dur in configs:
        if (kind, dur) in runs:
            got = sorted(runs[(kind, dur)], key=lambda r: r["msgs_per_s"])
            out.append(got[len(got) // 2])
            continue
        r = end_to_end(base, kind, dur, per_producer, seconds)
        _print_e2e(r, "")
        out.append(r)
    return out, rounds_out


def _print_e2e(r: dict, prefix: str) -> None:
    print(f"  {prefix}{r['kind']:<14} {r['durability']:<15} {fmt_rate(r['msgs_per_s']):>10} msgs/s end to end  "
          f"sent {r['sent']:,} consumed {r['consumed']:,} lost {fmt_lost(r)} twice {r['duplicates']:,}", flush=True)


# -- long-poll wake-up ----------------------------------------------------------------------


def _long_poll_receiver(path: str, dur: str, conn) -> None:
    import walq

    b = walq.open(path, durability=dur)
    q = b.get_queue("longpoll")
    conn.send("ready")
    while True:
        msgs = q.receive(1, wait=5)
        t = time.monotonic_ns()
        if not msgs:
            conn.send(None)
            continue
        m = msgs[0]
        q.delete_batch([m.receipt])
        if m.body.startswith(b"stop"):
            break
        conn.send(t - int(m.body[:20]))
    b.close()
    conn.send("bye")


def long_poll(base: str, dur: str, trials: int) -> Result:
    """Median/p99 of (receive return - send start), receiver in another process."""
    import walq

    ctx = multiprocessing.get_context("spawn")
    path = tempfile.mkdtemp(prefix=f"longpoll-{dur}-", dir=base)
    os.sync()
    b = walq.open(path, durability=dur)
    q = b.create_queue("longpoll")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_long_poll_receiver, args=(path, dur, child))
    proc.start()
    if parent.recv() != "ready":
        raise RuntimeError("long-poll receiver did not start")
    lat = array("d")
    misses = 0
    try:
        for _ in range(trials):
            time.sleep(random.uniform(0.003, 0.008))  # the receiver is parked in its futex wait
            t = time.monotonic_ns()
            q.send(str(t).rjust(20, "0").encode().ljust(100, b"."))
            if not parent.poll(10):
                raise RuntimeError("long-poll receiver did not answer")
            v = parent.recv()
            while v is None:  # a wait ran out before the send (cannot happen at 5 s, but be exact)
                misses += 1
                v = parent.recv()
            lat.append(v / 1e9)
        q.send(b"stop".ljust(100, b"."))
        parent.recv()
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
        b.close()
        shutil.rmtree(path, ignore_errors=True)
    return Result(len(lat), len(lat), float(sum(lat)), lat, note=f"{misses} empty waits" if misses else "")


# -- report -----------------------------------------------------------------------------------------


def print_single(res: dict, configs) -> list[list]:
    rows = []
    for op, n in OPS:
        for kind, dur in configs:
            r = res.get((kind, dur, op, n))
            if (kind, dur, op, n) not in res:
                continue
            ratio = "-"
            if kind == "walq" and r is not None:
                parts = []
                for pdur in (PAIR[dur], "FULL-LAZY-LEASE") if dur == "always" else (PAIR[dur],):
                    peer = res.get(("sqlite", pdur, op, n))
                    if peer is not None and peer.rate:
                        parts.append(f"{r.rate / peer.rate:.2f}x vs {pdur}")
                ratio = ", ".join(parts) or "-"
            if r is None:
                rows.append([op_name(op, n), LABEL[kind], dur, "n/a (no batch API)", "-", "-", "-", "-", "-", "-"])
                continue
            cpu = r.cpu / r.msgs * 1e6 if r.msgs else float("nan")
            rows.append([op_name(op, n), LABEL[kind], dur, fmt_rate(r.rate), r.spread(), fmt_rate(r.call_rate),
                         fmt_lat(r.pct(50)), fmt_lat(r.pct(99)), f"{cpu:,.1f}", ratio + (f" ({r.note})" if r.note else "")])
    table(["benchmark", "queue", "durability", "msgs/s", "rounds: min-max", "calls/s", "p50 µs/call", "p99 µs/call",
           "CPU µs/msg", "walq vs SQLite table"], rows)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="directory on the disk to measure (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="short durations (a smoke run, under a minute)")
    ap.add_argument("--json", help="also write every number to this JSON file")
    ap.add_argument("--depth", type=int, help="messages pre-filled for receive+delete (default 50,000; quick 10,000)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds of section 1 (default 5; quick 1)")
    ap.add_argument("--seconds", type=float, help="seconds per measurement in section 1 (default 0.6; quick 0.2)")
    ap.add_argument("--e2e-rounds", type=int, help="rounds of 4+4 walq 'always' and SQLite FULL (default 3; quick 1)")
    args = ap.parse_args(argv)

    missing = [k for k in peers.KINDS if not peers.available(k)]
    if missing:
        print(f"missing: {', '.join(missing)} - pip install persist-queue litequeue (or pip install -e '.[bench]')")
        return 2
    configs = CONFIGS
    if args.quick:
        n_rounds, seconds, depth = 1, 0.2, args.depth or 10_000
        e2e_per_producer, e2e_seconds, e2e_n_rounds = 5_000, 1.5, 1
        e2e_configs = [("walq", "always"), ("walq", "os"), ("sqlite", "FULL"), ("sqlite", "NORMAL")]
        trials = 50
    else:
        n_rounds, seconds, depth = 5, 0.6, args.depth or 50_000
        e2e_per_producer, e2e_seconds, e2e_n_rounds = 25_000, 6.0, 3
        e2e_configs = [("walq", "always"), ("walq", "batch"), ("walq", "os"), ("sqlite", "FULL"),
                       ("sqlite", "FULL-LAZY-LEASE"), ("sqlite", "NORMAL"), ("persist-queue", "FULL"),
                       ("litequeue", "FULL")]
        trials = 200

    n_rounds = args.rounds or n_rounds
    e2e_n_rounds = args.e2e_rounds or e2e_n_rounds
    seconds = args.seconds or seconds
    os.makedirs(args.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="walq-bench-queue-", dir=args.dir)
    started = time.time()
    info = machine(base)
    info["walq commit"] = git_commit(REPO)
    info["libraries"] = ", ".join(peers.library_version(k) for k in peers.KINDS)
    info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["command"] = "python " + " ".join([os.path.relpath(__file__, REPO)] + list(sys.argv[1:] if argv is None else argv))
    print("# walq queue benchmarks (100-byte messages)\n")
    print_machine(info)
    report: dict = {"machine": info, "quick": args.quick}
    try:
        print(f"\n## 1. single-process operations ({n_rounds} interleaved round(s) x {seconds} s; "
              f"receive on a queue pre-filled with {depth:,})\n", flush=True)
        res, disk = single_ops(base, n_rounds, seconds, depth, configs)
        print()
        raw = disk["raw"]
        print(f"disk: raw 128 B pwrite + fdatasync on an overwritten file: {fmt_rate(raw.rate)}/s, "
              f"rounds {raw.spread()}, p50 {fmt_lat(raw.pct(50))} µs, p99 {fmt_lat(raw.pct(99))} µs\n")
        print_single(res, configs)
        report["single"] = {f"{k} {d} {op_name(op, n)}": (r.as_dict() if r else None)
                            for (k, d, op, n), r in res.items()}
        report["disk_raw_fdatasync_per_s"] = raw.rate

        print(f"\n## 2. {4} producer + {4} consumer processes end to end "
              f"(producers: send_batch(10), persist-queue put(); consumers: receive(10) + delete)\n", flush=True)
        e2e, e2e_rounds = end_to_end_rounds(base, e2e_configs, e2e_n_rounds, e2e_per_producer, e2e_seconds)
        print()
        table(["queue", "durability", "msgs/s end to end", "send msgs/s", "sent", "consumed", "lost",
               "delivered twice", "drained", "seconds", "CPU µs/msg produce", "CPU µs/msg consume"],
              [[LABEL[r["kind"]], r["durability"], fmt_rate(r["msgs_per_s"]), fmt_rate(r["send_msgs_per_s"]),
                f"{r['sent']:,}", f"{r['consumed']:,}", fmt_lost(r), f"{r['duplicates']:,}",
                "yes" if r["drained"] else "NO", f"{r['seconds']:.2f}", f"{r['producer_cpu_us_per_msg']:.1f}",
                f"{r['consumer_cpu_us_per_msg']:.1f}"] for r in e2e])
        report["end_to_end"] = e2e
        report["end_to_end_rounds"] = e2e_rounds
        if len(e2e_rounds) > 1:
            print(f"\n4+4 'always' in {len(e2e_rounds)} rounds, each beside SQLite FULL and the disk's raw rate:\n")
            table(["round", "walq 'always' msgs/s", "SQLite FULL msgs/s", "raw fdatasync/s"],
                  [[str(i + 1), fmt_rate(w["msgs_per_s"]), fmt_rate(q["msgs_per_s"]), fmt_rate(raw)]
                   for i, (w, q, raw) in enumerate(e2e_rounds)])

        print(f"\n## 3. long-poll wake-up: receiver in another process in receive(wait=5), {trials} sends\n",
              flush=True)
        lp = {}
        for dur in ("always", "batch", "os"):
            lp[dur] = long_poll(base, dur, trials)
        table(["queue", "durability", "trials", "p50 ms", "p90 ms", "p99 ms", "max ms"],
              [["walq", dur, r.calls, f"{r.pct(50) * 1e3:.3f}", f"{r.pct(90) * 1e3:.3f}",
                f"{r.pct(99) * 1e3:.3f}", f"{max(r.lat) * 1e3:.3f}"] for dur, r in lp.items()])
        report["long_poll"] = {d: {"p50_s": r.pct(50), "p90_s": r.pct(90), "p99_s": r.pct(99),
                                   "max_s": max(r.lat), "trials": r.calls} for d, r in lp.items()}

        # -- targets --
        targets = []

        def target(name, value, goal, ok):
            targets.append([name, value, goal, "PASS" if ok else "FAIL"])

        def ratio_target(name, walq_key, sqlite_key, factor):
            """Pooled ratio and the median of same-round ratios; PASS needs both."""
            w, s = res.get(walq_key), res.get(sqlite_key)
            pooled = w.rate / s.rate
            paired = [a / b for a, b in zip(w.rounds, s.rounds) if b]
            med = statistics.median(paired) if paired else pooled
            ok_p, ok_m = pooled >= factor, med >= factor
            verdict = "PASS" if ok_p and ok_m else "FAIL" if not ok_p and not ok_m else "UNSTABLE"
            targets.append([name, f"{fmt_rate(w.rate)} vs {fmt_rate(s.rate)} = {pooled:.2f}x; "
                                  f"median of {len(paired)} rounds {med:.2f}x", f">= {factor:.2f}x", verdict])

        ratio_target("send under 'always' >= SQLite FULL, 1 insert/txn",
                     ("walq", "always", "send", 1), ("sqlite", "FULL", "send", 1), 1.0)
        ratio_target("send_batch(100) under 'always' >= 2x SQLite FULL",
                     ("walq", "always", "send_batch", 100), ("sqlite", "FULL", "send_batch", 100), 2.0)
        ratio_target("receive(10)+delete_batch under 'always' >= 2x SQLite FULL",
                     ("walq", "always", "receive+delete", 10), ("sqlite", "FULL", "receive+delete", 10), 2.0)
        if res.get(("sqlite", "FULL-LAZY-LEASE", "receive+delete", 10)):
            ratio_target("(info) the same vs SQLite FULL with an unsynced lease txn",
                         ("walq", "always", "receive+delete", 10), ("sqlite", "FULL-LAZY-LEASE", "receive+delete", 10),
                         2.0)
            targets[-1][-1] = "(" + targets[-1][-1] + ")"
        ratio_target("send under 'os' >= 3x SQLite NORMAL, 1 insert/txn",
                     ("walq", "os", "send", 1), ("sqlite", "NORMAL", "send", 1), 3.0)
        runs = [w for w, _q, _raw in e2e_rounds]
        rates = sorted(w["msgs_per_s"] for w in runs)
        med = statistics.median(rates)
        clean = all(w["drained"] and w["lost"] == 0 and w["duplicates"] == 0 and w["unexpected"] == 0 for w in runs)
        spread = f"; rounds {fmt_rate(rates[0])}-{fmt_rate(rates[-1])}" if len(rates) > 1 else ""
        target("4+4 processes under 'always' >= 50,000 msgs/s, no loss, no double delivery",
               f"median {fmt_rate(med)} msgs/s{spread}, lost {sum(w['lost'] or 0 for w in runs)}, "
               f"twice {sum(w['duplicates'] for w in runs)}",
               ">= 50,000, 0, 0", med >= 50_000 and clean)
        m = lp["always"].pct(50)
        target("long-poll wake-up median ('always') < 5 ms", f"{m * 1e3:.3f} ms (p99 {lp['always'].pct(99) * 1e3:.3f})",
               "< 5 ms", m < 0.005)
        print("\n## targets (queues)\n")
        table(["target", "measured", "goal", "result"], targets)
        report["targets"] = targets
        print(f"\ntotal {time.time() - started:.0f} s; load average at the end "
              + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
