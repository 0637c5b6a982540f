"""Log benchmarks: records/s and latency of walq's log beside
the disk's raw fdatasync rate and SQLite, all measured in one run.

    python bench/bench_log.py [--dir D] [--quick] [--json FILE] [--max-wait S]

Results, the exact command and the analysis of each target: bench/RESULTS.md.
The machine is shared: before each benchmark the script waits (briefly) for
other processes to leave the CPUs, and every row reports how much CPU other
processes used while it ran ("others' CPU"); a high value means the row
measured the neighbours, not walq.

Sections (100-byte records throughout):

1. Durable peers, run in interleaved rounds so that drift of the shared disk
   hits every peer alike: raw pwrite+fdatasync (appended, fallocated and
   overwritten file), SQLite WAL ``synchronous=FULL`` (one insert per
   transaction, and 100 per transaction), ``Log.append()`` and
   ``Log.append_batch(100)`` under ``"always"``.
2. Non-durable: ``append()`` and ``append_batch(100)`` under ``"batch"`` and
   ``"os"``, SQLite ``synchronous=NORMAL``.  Throughput comes from a loop
   without per-call clocks; latency percentiles from a second, timed loop.
3. ``"always"`` with 1, 4 and 8 appender processes on one log, each appending
   for a fixed time and timing every append.
4. Open time of a ~1 GB log (``--quick``: ~100 MB): after a clean close and
   after kill -9 of a writer in the middle of appending, with a warm page
   cache and (as root) a cold one.

Then every target of the log with PASS/FAIL.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    CLK_TCK,
    LoadMeter,
    Measurement,
    cpu_probe,
    drop_page_cache,
    fmt_ms,
    fmt_rate,
    fmt_us,
    git_commit,
    machine,
    median,
    other_load,
    print_machine,
    raw_fdatasync,
    table,
    wait_quiet,
)

from walq.log import Log, LogOptions  # noqa: E402
from walq.log.fileio import OsIO  # noqa: E402

PAYLOAD = b"r" * 100
BATCH = 100
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CountingIO(OsIO):
    """The real file system, counting fdatasyncs (to show group commit at work)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0

    def fdatasync(self, fd: int, path: str) -> None:
        self.syncs += 1
        super().fdatasync(fd, path)


# -- loops -------------------------------------------------------------------------


def timed_loop(name: str, fn, seconds: float, records_per_op: int = 1) -> Measurement:
    """Calls ``fn()`` until ``seconds`` pass, timing every call."""
    perf = time.perf_counter
    lat = array("d")
    meter = LoadMeter()
    c0 = time.process_time()
    t0 = perf()
    deadline = t0 + seconds
    while True:
        a = perf()
        fn()
        b = perf()
        lat.append(b - a)
        if b >= deadline:
            break
    elapsed = perf() - t0
    cpu = time.process_time() - c0
    return Measurement(name, len(lat), elapsed, records_per_op, list(lat), cpu=cpu, extra=meter.stop())


def bulk_loop(name: str, fn, seconds: float, records_per_op: int = 1, chunk: int = 1000) -> Measurement:
    """Calls ``fn()`` in chunks until ``seconds`` pass; no per-call clock."""
    perf = time.perf_counter
    n = 0
    meter = LoadMeter()
    c0 = time.process_time()
    t0 = perf()
    deadline = t0 + seconds
    rng = range(chunk)
    while True:
        for _ in rng:
            fn()
        n += chunk
        if perf() >= deadline:
            break
    elapsed = perf() - t0
    cpu = time.process_time() - c0
    return Measurement(name, n, elapsed, records_per_op, cpu=cpu, extra=meter.stop())


# -- the peers -----------------------------------------------------------------------


def bench_log(base: str, mode: str, batch: bool, seconds: float, latency_seconds: float) -> Measurement:
    """``append()`` or ``append_batch(100)`` on a fresh log in ``mode``."""
    path = tempfile.mkdtemp(prefix=f"log-{mode}-", dir=base)
    io = CountingIO()
    log = Log(path, LogOptions(durability=mode), io=io)
    try:
        if batch:
            payloads = [PAYLOAD] * BATCH
            fn = lambda: log.append_batch(payloads)  # noqa: E731
            name, per_op, chunk = f"Log.append_batch({BATCH})", BATCH, 10
        else:
            fn = lambda: log.append(PAYLOAD)  # noqa: E731
            name, per_op, chunk = "Log.append()", 1, 1000
        for _ in range(10):
            fn()
        syncs0 = io.syncs
        if mode == "always":
            m = timed_loop(name, fn, seconds, per_op)
            m.syncs = io.syncs - syncs0
        else:
            m = bulk_loop(name, fn, seconds, per_op, chunk)
            m.syncs = io.syncs - syncs0
            m.latencies = timed_loop(name, fn, latency_seconds, per_op).latencies
        m.note = mode
        return m
    finally:
        log.close()  # files stay until the run ends (see rounds())


def bench_sqlite(base: str, synchronous: str, per_txn: int, seconds: float, latency_seconds: float) -> Measurement:
    """SQLite WAL: ``per_txn`` inserts of a 100-byte blob per transaction."""
    path = os.path.join(tempfile.mkdtemp(prefix=f"sqlite-{synchronous}-", dir=base), "q.db")
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        sql = "INSERT INTO q (body) VALUES (?)"
        if per_txn == 1:
            fn = lambda: db.execute(sql, (PAYLOAD,))  # noqa: E731
            name = "SQLite insert, 1 per txn"
        else:
            rows = [(PAYLOAD,)] * per_txn

            def fn():
                db.execute("BEGIN")
                db.executemany(sql, rows)
                db.execute("COMMIT")

            name = f"SQLite insert, {per_txn} per txn"
        for _ in range(10):
            fn()
        if synchronous == "FULL":
            m = timed_loop(name, fn, seconds, per_txn)
        else:
            m = bulk_loop(name, fn, seconds, per_txn, 1000 if per_txn == 1 else 10)
            m.latencies = timed_loop(name, fn, latency_seconds, per_txn).latencies
        m.note = f"WAL, synchronous={synchronous}"
        return m
    finally:
        db.close()


# Before each benchmark, wait up to 20 s for other processes to leave the CPUs
# (the machine is shared); at most WAIT_BUDGET seconds in all (--max-wait).
WAIT_BUDGET = [60.0]


def settle() -> None:
    allowed = min(20.0, WAIT_BUDGET[0])
    if allowed <= 0:
        return
    waited, busy = wait_quiet(max_wait=allowed)
    WAIT_BUDGET[0] -= waited
    if waited > 1:
        print(f"  (waited {waited:.0f} s for other processes to calm down: machine {busy:.0%} busy)", flush=True)


def rounds(benches: list[tuple[str, callable]], n_rounds: int) -> dict[str, Measurement]:
    """Runs each benchmark once per round, in a rotating order; merges the rounds.

    Between two benchmarks everything dirty is written back (``os.sync``), so
    that no benchmark pays for the previous one's writeback; files are only
    deleted when the whole run ends, because on a ``discard`` mount deletions
    slow down the journal commits that follow them."""
    out: dict[str, Measurement] = {}
    for r in range(n_rounds):
        order = benches[r % len(benches):] + benches[: r % len(benches)]
        for key, run in order:
            os.sync()
            settle()
            probe = cpu_probe()
            PROBES.append(probe)
            m = run()
            m.extra["probe_s"] = probe
            m.extra["probes"] = 1
            if key in out:
                out[key].merge(m)
            else:
                out[key] = m
            print(f"  round {r + 1}/{n_rounds}  {key:<24} {fmt_rate(m.records_per_s):>12} records/s"
                  f"   (others used {other_load(m):.0%} of the CPUs; vCPU probe {probe * 1e3:.1f} ms)", flush=True)
    return out


PROBES: list[float] = []  # every cpu_probe() of the run, to show how much the vCPU's speed drifted


# -- many processes --------------------------------------------------------------------


def _mp_worker(path: str, seconds: float, barrier, out_q) -> None:
    io = CountingIO()
    log = Log(path, LogOptions(durability="always"), io=io)
    for _ in range(20):
        log.append(PAYLOAD)
    syncs0 = io.syncs
    barrier.wait()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    perf = time.perf_counter
    lat = array("d")
    t0 = time.monotonic()
    deadline = perf() + seconds
    append = log.append
    while True:
        a = perf()
        append(PAYLOAD)
        b = perf()
        lat.append(b - a)
        if b >= deadline:
            break
    t1 = time.monotonic()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    syncs = io.syncs - syncs0
    log.close()
    usage = {
        "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "voluntary_switches": r1.ru_nvcsw - r0.ru_nvcsw,
        "involuntary_switches": r1.ru_nivcsw - r0.ru_nivcsw,
    }
    out_q.put((len(lat), t0, t1, syncs, usage, lat.tobytes()))


def bench_processes(base: str, nproc: int, seconds: float) -> Measurement:
    """``nproc`` processes append to one log under "always" for ``seconds``."""
    ctx = multiprocessing.get_context("spawn")
    path = tempfile.mkdtemp(prefix=f"log-mp{nproc}-", dir=base)
    Log(path, LogOptions(durability="always")).close()
    barrier = ctx.Barrier(nproc + 1)
    q = ctx.Queue()
    procs = [ctx.Process(target=_mp_worker, args=(path, seconds, barrier, q)) for _ in range(nproc)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    meter = LoadMeter()
    results = [q.get(timeout=seconds + 120)]
    load = meter.stop()  # the first appender is done: the window is over
    results += [q.get(timeout=seconds + 120) for _ in procs[1:]]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"appender process exited with {p.exitcode}")
    count = sum(r[0] for r in results)
    window = max(r[2] for r in results) - min(r[1] for r in results)
    lat: list[float] = []
    for r in results:
        a = array("d")
        a.frombytes(r[5])
        lat.extend(a)
    m = Measurement(f"{nproc} process(es) x Log.append()", count, window, 1, lat, "always",
                    cpu=sum(r[4]["cpu"] for r in results), syncs=sum(r[3] for r in results))
    # CPU of the window only: scale each appender's CPU to the part of its run inside the window.
    inside = load["total_ticks"] / CLK_TCK / max(1, os.cpu_count() or 1)
    m.extra = dict(load)
    m.extra["window_cpu"] = sum(r[4]["cpu"] * min(1.0, inside / max(1e-9, r[2] - r[1])) for r in results)
    m.extra["voluntary_switches"] = sum(r[4]["voluntary_switches"] for r in results)
    m.extra["involuntary_switches"] = sum(r[4]["involuntary_switches"] for r in results)
    return m


# -- open time ---------------------------------------------------------------------------

_WRITER = r"""
import sys
from walq.log import Log, LogOptions
log = Log(sys.argv[1], LogOptions(durability="os"))
p = b"w" * 100
for _ in range(1000):
    log.append(p)
print("ready", flush=True)
while True:
    log.append(p)
"""


def build_log(path: str, segments: float) -> tuple[int, int]:
    """Fills a log with 100-byte records up to ``segments`` default segments.

    Returns (records, bytes of record frames)."""
    opts = LogOptions(durability="os")
    per_segment = (opts.segment_size - 64) // 128  # frame: 24 B header + 100 B + 4 B padding
    total = int(segments * per_segment)
    log = Log(path, opts)
    chunk = [PAYLOAD] * 1000
    done = 0
    while done < total:
        n = min(1000, total - done)
        log.append_batch(chunk if n == 1000 else chunk[:n])
        done += n
    log.sync()
    log.close()
    return total, total * 128


def time_open(path: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    log = Log(path, LogOptions(durability="always"))
    dt = time.perf_counter() - t0
    end = log.end
    log.close()
    return dt, end


def kill_writer(path: str) -> None:
    """Starts a writer, lets it append for a random moment, kills it with SIGKILL."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, path], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"writer did not start: {line!r}")
        time.sleep(random.uniform(0.05, 0.25))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"writer ended with {proc.returncode}, not SIGKILL")


def bench_open(base: str, segments: float, warm_runs: int, cold_runs: int) -> dict:
    path = tempfile.mkdtemp(prefix="log-open-", dir=base)
    os.sync()
    t0 = time.perf_counter()
    records, size = build_log(path, segments)
    build_s = time.perf_counter() - t0
    n_seg = sum(1 for f in os.listdir(path) if f.endswith(".seg"))
    print(f"  built {records:,} records ({size / 1e9:.2f} GB of frames) in {n_seg} segment files of 64 MiB "
          f"(the active one {segments % 1:.0%} full) in {build_s:.1f} s", flush=True)
    res: dict = {"records": records, "bytes": size, "segments": n_seg, "cold_available": True}

    time_open(path)  # the first open after the build warms the cache like any later one
    res["clean_warm"] = [time_open(path)[0] for _ in range(warm_runs)]
    res["clean_cold"] = []
    for _ in range(cold_runs):
        if not drop_page_cache():
            res["cold_available"] = False
            break
        res["clean_cold"].append(time_open(path)[0])

    res["kill_warm"], res["kill_cold"] = [], []
    before = len([f for f in os.listdir(path) if f.startswith("torn-")])
    end = time_open(path)[1]
    for i in range(warm_runs + (cold_runs if res["cold_available"] else 0)):
        kill_writer(path)
        cold = i >= warm_runs
        if cold and not drop_page_cache():
            break
        dt, new_end = time_open(path)
        if new_end <= end:
            raise RuntimeError("the killed writer's appends are missing")
        end = new_end
        (res["kill_cold"] if cold else res["kill_warm"]).append(dt)
    res["torn_files"] = len([f for f in os.listdir(path) if f.startswith("torn-")]) - before
    res["final_records"] = end
    return res


# -- report --------------------------------------------------------------------------------


def latency_row(m: Measurement, unit: float | None = None) -> list:
    row = [
        m.name,
        m.note,
        fmt_rate(m.records_per_s),
        fmt_rate(m.ops_per_s),
        fmt_us(m.pct(50)),
        fmt_us(m.pct(99)),
        fmt_us(m.pct(99.9)),
    ]
    row.append(f"{m.records / m.syncs:,.1f}" if m.syncs else "-")
    row.append(fmt_us(m.cpu_per_record()))
    row.append(f"{other_load(m):.0%}")
    if unit:
        row.append(f"{m.pct(99) / unit:.2f}")
    return row


HEAD = ["benchmark", "mode", "records/s", "calls/s", "p50 µs", "p99 µs", "p99.9 µs", "records/fdatasync",
        "CPU µs/record", "others' CPU"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="directory on the disk to measure (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="short durations and a ~100 MB log (a smoke run)")
    ap.add_argument("--json", help="also write every number to this JSON file")
    ap.add_argument("--max-wait", type=float, default=WAIT_BUDGET[0],
                    help="seconds to wait in all, up to 20 before each benchmark, for other processes "
                         "to leave the CPUs under 25%% busy (default: %(default)s)")
    args = ap.parse_args(argv)
    WAIT_BUDGET[0] = args.max_wait

    if args.quick:
        n_rounds, dur, lat_dur, mp_dur, mp_rounds = 1, 0.7, 0.3, 1.5, 1
        open_segments, warm_runs, cold_runs = 1.5, 3, 2
    else:
        n_rounds, dur, lat_dur, mp_dur, mp_rounds = 3, 1.5, 0.5, 3.0, 2
        open_segments, warm_runs, cold_runs = 15.9, 5, 3

    os.makedirs(args.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="walq-bench-", dir=args.dir)
    # A kill (SIGTERM) still removes the scratch directory: run the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    print(f"# walq log benchmarks{' (--quick)' if args.quick else ''}")
    print(f"command: python bench/bench_log.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, walq commit {git_commit(REPO)}")
    info = machine(base)
    print_machine(info)
    out_json: dict = {"machine": info, "quick": args.quick}
    try:
        # 1. durable peers, interleaved ------------------------------------------------
        print(f"\n## 1. Durable: the disk, SQLite FULL and the log under 'always' ({n_rounds} rounds x {dur} s each)")
        durable = rounds(
            [
                ("raw-append", lambda: raw_fdatasync(base, "append", dur, remove=False)),
                ("raw-fallocate", lambda: raw_fdatasync(base, "fallocate", dur, remove=False)),
                ("raw-overwrite", lambda: raw_fdatasync(base, "overwrite", dur, remove=False)),
                ("raw-append-12800", lambda: raw_fdatasync(base, "append", dur, BATCH * 128, remove=False)),
                ("raw-fallocate-12800", lambda: raw_fdatasync(base, "fallocate", dur, BATCH * 128, remove=False)),
                ("raw-overwrite-12800", lambda: raw_fdatasync(base, "overwrite", dur, BATCH * 128, remove=False)),
                ("sqlite-full-1", lambda: bench_sqlite(base, "FULL", 1, dur, 0)),
                ("sqlite-full-100", lambda: bench_sqlite(base, "FULL", BATCH, dur, 0)),
                ("log-always-append", lambda: bench_log(base, "always", False, dur, 0)),
                ("log-always-batch", lambda: bench_log(base, "always", True, dur, 0)),
            ],
            n_rounds,
        )
        raw_keys = ["raw-append", "raw-fallocate", "raw-overwrite"]
        ref_key = max(raw_keys, key=lambda k: durable[k].ops_per_s)
        ref = durable[ref_key]
        sync_rate, sync_lat = ref.ops_per_s, ref.pct(50)
        print()
        table(
            ["raw fdatasync", "syncs/s", "p50 µs", "p99 µs", "p99.9 µs", "CPU µs/sync", "others' CPU"],
            [[durable[k].name, fmt_rate(durable[k].ops_per_s), fmt_us(durable[k].pct(50)),
              fmt_us(durable[k].pct(99)), fmt_us(durable[k].pct(99.9)), fmt_us(durable[k].cpu_per_record()),
              f"{other_load(durable[k]):.0%}"]
             for k in raw_keys + ["raw-append-12800", "raw-fallocate-12800", "raw-overwrite-12800"]],
        )
        print(f"\nreference (the disk's limit, fastest layout): {ref.name}: {fmt_rate(sync_rate)} syncs/s, "
              f"median latency {fmt_us(sync_lat)} µs")
        print()
        table(HEAD, [latency_row(durable[k]) for k in
                     ["sqlite-full-1", "log-always-append", "sqlite-full-100", "log-always-batch"]])

        # 2. non-durable ----------------------------------------------------------------------
        print(f"\n## 2. Not synced per call: 'batch', 'os', SQLite NORMAL ({n_rounds} rounds x {dur} s + {lat_dur} s timed)")
        fast = rounds(
            [
                ("log-batch-append", lambda: bench_log(base, "batch", False, dur, lat_dur)),
                ("log-batch-batch", lambda: bench_log(base, "batch", True, dur, lat_dur)),
                ("log-os-append", lambda: bench_log(base, "os", False, dur, lat_dur)),
                ("log-os-batch", lambda: bench_log(base, "os", True, dur, lat_dur)),
                ("sqlite-normal-1", lambda: bench_sqlite(base, "NORMAL", 1, dur, lat_dur)),
                ("sqlite-normal-100", lambda: bench_sqlite(base, "NORMAL", BATCH, dur, lat_dur)),
            ],
            n_rounds,
        )
        print()
        table(HEAD, [latency_row(fast[k]) for k in
                     ["log-batch-append", "log-os-append", "sqlite-normal-1",
                      "log-batch-batch", "log-os-batch", "sqlite-normal-100"]])

        # 3. many processes ---------------------------------------------------------------------
        print(f"\n## 3. 'always', N appender processes on one log ({mp_rounds} rounds x {mp_dur} s each)")
        mp = rounds([(f"procs-{n}", (lambda n=n: bench_processes(base, n, mp_dur))) for n in (1, 4, 8)], mp_rounds)
        print()
        table(HEAD + ["p99 / fdatasync p50"], [latency_row(mp[f"procs-{n}"], sync_lat) for n in (1, 4, 8)])
        print()
        table(["processes", "machine CPU busy", "stolen by the host", "used by other processes",
               "context switches/record (voluntary)", "(involuntary)"],
              [[n, f"{m.extra['busy_ticks'] / max(1, m.extra['total_ticks']):.0%}",
                f"{m.extra['steal_ticks'] / max(1, m.extra['total_ticks']):.0%}", f"{other_load(m):.0%}",
                f"{m.extra['voluntary_switches'] / m.records:.2f}", f"{m.extra['involuntary_switches'] / m.records:.2f}"]
               for n, m in ((n, mp[f"procs-{n}"]) for n in (1, 4, 8))])

        # 4. open time ---------------------------------------------------------------------------
        print(f"\n## 4. Open time of a {'~100 MB' if args.quick else '~1 GB'} log (100-byte records, 64 MiB segments)")
        settle()
        meter = LoadMeter()
        c0 = time.process_time()
        op = bench_open(base, open_segments, warm_runs, cold_runs)
        load_m = Measurement("open", 1, 1, cpu=time.process_time() - c0, extra=meter.stop())
        op["others_cpu"] = other_load(load_m)
        rows = []
        for key, label in [("clean_warm", "after clean close, warm cache"), ("clean_cold", "after clean close, cold cache"),
                           ("kill_warm", "after kill -9 of a writer, warm cache"),
                           ("kill_cold", "after kill -9 of a writer, cold cache")]:
            v = op[key]
            rows.append([label, len(v), fmt_ms(median(v)) if v else "-", fmt_ms(min(v)) if v else "-",
                         fmt_ms(max(v)) if v else "-"])
        print()
        table(["open", "runs", "median ms", "min ms", "max ms"], rows)
        if not op["cold_available"]:
            print("(cold cache not measured: /proc/sys/vm/drop_caches is not writable)")
        print(f"torn tails cut by those recoveries: {op['torn_files']}; other processes used "
              f"{op['others_cpu']:.0%} of the CPUs meanwhile (the openers' CPU not counted: an upper bound)")

        # targets ---------------------------------------------------------------------------------
        print("\n## Targets (the log)")
        t_rows = []

        def target(name, value, goal, ok, *ms):
            load = max((other_load(m) for m in ms), default=float("nan"))
            t_rows.append([name, value, goal, "PASS" if ok else "FAIL", "-" if load != load else f"{load:.0%}"])

        a1, s1 = durable["log-always-append"], durable["sqlite-full-1"]
        target("append() 'always' >= SQLite FULL 1 insert/txn",
               f"{fmt_rate(a1.records_per_s)} vs {fmt_rate(s1.records_per_s)} /s ({a1.records_per_s / s1.records_per_s:.2f}x)",
               ">= 1.00x", a1.records_per_s >= s1.records_per_s, a1, s1)
        b1 = durable["log-always-batch"]
        target("append_batch(100) 'always' >= 80% of 100 x raw fdatasync/s",
               f"{fmt_rate(b1.records_per_s)} /s = {b1.records_per_s / (100 * sync_rate):.0%} of {fmt_rate(100 * sync_rate)}",
               ">= 80%", b1.records_per_s >= 0.8 * 100 * sync_rate, b1, ref)
        r12 = durable["raw-overwrite-12800"]
        t_rows.append(["(info) append_batch(100) 'always' vs 100 x raw 12,800 B write + fdatasync (overwrite)",
                       f"{fmt_rate(b1.records_per_s)} /s = {b1.records_per_s / (100 * r12.ops_per_s):.0%} "
                       f"of {fmt_rate(100 * r12.ops_per_s)}", "-", "info",
                       f"{max(other_load(b1), other_load(r12)):.0%}"])
        o1 = fast["log-os-append"]
        target("append() 'os' >= 300,000 records/s", f"{fmt_rate(o1.records_per_s)} /s", ">= 300,000",
               o1.records_per_s >= 300_000, o1)
        p1, p8 = mp["procs-1"], mp["procs-8"]
        target("8 processes 'always' >= 5x 1 process", f"{fmt_rate(p8.records_per_s)} vs {fmt_rate(p1.records_per_s)} /s "
               f"({p8.records_per_s / p1.records_per_s:.2f}x)", ">= 5.00x", p8.records_per_s >= 5 * p1.records_per_s,
               p1, p8)
        target("8 processes 'always' p99 <= 4 fdatasync latencies",
               f"{fmt_us(p8.pct(99))} µs = {p8.pct(99) / sync_lat:.2f} x {fmt_us(sync_lat)} µs", "<= 4.00",
               p8.pct(99) <= 4 * sync_lat, p8, ref)
        size_note = "" if not args.quick else " [--quick: ~100 MB, not 1 GB]"
        kw = median(op["kill_warm"])
        target(f"open after kill -9, warm cache{size_note}", f"{fmt_ms(kw)} ms (median)", "< 1000 ms", kw < 1.0)
        if op["kill_cold"]:
            kc = median(op["kill_cold"])
            target(f"open after kill -9, cold cache{size_note}", f"{fmt_ms(kc)} ms (median)", "< 1000 ms", kc < 1.0)
        table(["target", "measured", "goal", "result", "others' CPU"], t_rows)
        if PROBES:
            print(f"\nvCPU speed probe (a fixed Python loop before each benchmark): {min(PROBES) * 1e3:.1f}-"
                  f"{max(PROBES) * 1e3:.1f} ms, median {median(PROBES) * 1e3:.1f} ms: the vCPU was up to "
                  f"{max(PROBES) / min(PROBES) - 1:.0%} slower at times during this run")
        contended = [r[0] for r in t_rows if r[4].endswith("%") and int(r[4][:-1]) > 15]
        if contended:
            print("\nWARNING: other processes used over 15% of the CPUs while these ran, so their numbers "
                  "measure a shared machine, not walq alone:\n  " + "\n  ".join(contended))
        print(f"\ntotal time {time.time() - started:.0f} s")

        if args.json:
            def dump(m: Measurement) -> dict:
                return {"name": m.name, "mode": m.note, "ops": m.ops, "seconds": m.seconds,
                        "records_per_s": m.records_per_s, "ops_per_s": m.ops_per_s,
                        "p50": m.pct(50), "p90": m.pct(90), "p99": m.pct(99), "p999": m.pct(99.9),
                        "fdatasyncs": m.syncs, "cpu_seconds": m.cpu, "others_cpu": other_load(m),
                        "extra": m.extra}

            out_json.update({
                "durable": {k: dump(v) for k, v in durable.items()},
                "fast": {k: dump(v) for k, v in fast.items()},
                "processes": {k: dump(v) for k, v in mp.items()},
                "open": op,
                "targets": t_rows,
            })
            with open(args.json, "w") as f:
                json.dump(out_json, f, indent=1)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
