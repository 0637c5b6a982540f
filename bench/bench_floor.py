"""The floor under the log's multi-process targets: group commit without Python.

    python bench/bench_floor.py [--dir D] [--rounds 3] [--seconds 3] [--json FILE]

The log's target asks that 8 appender processes under "always" reach 5x the rate of one,
with a p99 latency of at most 4 fdatasync latencies.  This script measures, in
interleaved rounds on the same disk:

* ``group_commit_floor.c``: the log's group-commit protocol (flock'd append,
  sync by whoever wins the sync flock, futex wake-up) in C, with nothing else -
  no framing, no checksums, no Python.  What it reaches is a ceiling for walq on
  this machine;
* walq's ``Log.append()`` under "always", from bench_log (1 and 8 processes);
* the raw ``pwrite`` + ``fdatasync`` latency of an overwritten file, the
  reference of the p99 target.

It needs a C compiler (``cc``) and Linux.  Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_log import bench_processes, rounds  # noqa: E402
from common import LoadMeter, Measurement, fmt_rate, fmt_us, machine, print_machine, raw_fdatasync, table  # noqa: E402

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "group_commit_floor.c")


def build(workdir: str) -> str:
    """Compiles group_commit_floor.c into ``workdir``; returns the binary's path."""
    exe = os.path.join(workdir, "group_commit_floor")
    cc = os.environ.get("CC", "cc")
    try:
        subprocess.run([cc, "-O2", "-o", exe, SOURCE], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"bench_floor: cannot compile {SOURCE} with {cc!r}: {exc}")
    return exe


def bench_floor(exe: str, base: str, nproc: int, seconds: float, yields: int) -> Measurement:
    """``nproc`` C appenders under the log's group-commit protocol for ``seconds``."""
    d = tempfile.mkdtemp(prefix=f"floor-{nproc}-", dir=base)
    try:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        meter = LoadMeter()
        run = subprocess.run([exe, str(nproc), str(seconds), d, str(yields)], capture_output=True, text=True,
                             timeout=seconds + 120)
        if run.returncode != 0:
            raise RuntimeError(f"group_commit_floor failed: {run.stderr.strip()}")
        load = meter.stop()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rows = [line.split() for line in run.stdout.split("\n") if line.strip()]
        count = sum(int(r[0]) for r in rows)
        window = max(float(r[2]) for r in rows) - min(float(r[1]) for r in rows)
        lat = array("d")
        for i in range(nproc):
            with open(os.path.join(d, f"lat.{i}"), "rb") as f:
                lat.frombytes(f.read())
        syncs = int(run.stderr.split()[-1])
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    # The directory stays until the run ends (main): on a "discard" mount a
    # deletion slows down the journal commits that follow it (bench_log.rounds).
    # The CPU includes the prefill of the data file, outside the window: "others'
    # CPU" reads low rather than high.
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return Measurement(f"C floor, {nproc} process(es)", count, window, 1, list(lat), "always", cpu=cpu, syncs=syncs,
                       extra=load)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="directory on the disk to measure (default: /tmp)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per benchmark per round")
    ap.add_argument("--yields", type=int, default=0, help="the C syncer's sched_yield()s before it syncs")
    ap.add_argument("--json", help="also write every number to this file")
    args = ap.parse_args(argv)

    print_machine(machine(args.dir))
    print(f"  command               : python bench/bench_floor.py {' '.join(argv or sys.argv[1:])}\n")
    base = tempfile.mkdtemp(prefix="walq-bench-floor-", dir=args.dir)
    try:
        exe = build(base)
        benches = [("raw-overwrite", lambda: raw_fdatasync(base, "overwrite", 1.5, remove=False))]
        for n in (1, 8):
            benches.append((f"floor-{n}", lambda n=n: bench_floor(exe, base, n, args.seconds, args.yields)))
            benches.append((f"walq-{n}", lambda n=n: bench_processes(base, n, args.seconds)))
        got = rounds(benches, args.rounds)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    sync_p50 = got["raw-overwrite"].pct(50)
    print(f"\nraw 128 B pwrite + fdatasync (overwrite): p50 {fmt_us(sync_p50)} µs, "
          f"{fmt_rate(got['raw-overwrite'].ops_per_s)} syncs/s\n")
    rows = []
    for impl in ("floor", "walq"):
        one = got[f"{impl}-1"].records_per_s
        for n in (1, 8):
            m = got[f"{impl}-{n}"]
            rows.append([
                "C, group commit only" if impl == "floor" else "walq Log.append()", n, fmt_rate(m.records_per_s),
                f"{m.records_per_s / one:.2f}x", fmt_us(m.pct(50)), fmt_us(m.pct(99)),
                f"{m.pct(99) / sync_p50:.1f}", f"{m.records / m.syncs:.1f}" if m.syncs else "-",
            ])
    table(["appenders", "processes", "records/s", "vs 1 process", "p50 µs", "p99 µs", "p99 / fdatasync p50",
           "records/fdatasync"], rows)
    f8, w8 = got["floor-8"], got["walq-8"]
    print("\nissue 2 targets: 8 processes >= 5x one, p99 <= 4 fdatasync p50s")
    print(f"  C floor: {f8.records_per_s / got['floor-1'].records_per_s:.2f}x, p99 {f8.pct(99) / sync_p50:.1f}")
    print(f"  walq   : {w8.records_per_s / got['walq-1'].records_per_s:.2f}x, p99 {w8.pct(99) / sync_p50:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: {"records_per_s": m.records_per_s, "p50": m.pct(50), "p99": m.pct(99), "syncs": m.syncs,
                           "records": m.records, "seconds": m.seconds} for k, m in got.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
