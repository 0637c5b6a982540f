"""Index benchmarks: open time, resident memory, disk use.

    python bench/bench_index.py [--dir D] [--messages N]

1. Open a queue that has seen N sends, half of them received and deleted
   (a fresh process: checkpoint load + tail replay).  Target: < 0.5 s at 1M.
2. Resident memory of a process holding a queue with N pending messages.
   Target: < 200 MB at 1M.
3. Steady send/delete load with small segments: disk use stays within
   2x live data + two segments.

Each measurement runs in a fresh subprocess so that one does not warm the next.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time, walq
d, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
if mode == "fill_half":
    b = walq.open(d, durability="os"); q = b.create_queue("big")
    for i in range(n // 1000):
        q.send_batch([b"x" * 100] * 1000)
    done = 0
    while done < n // 2:
        ms = q.receive(1000)
        q.delete_batch([m.receipt for m in ms]); done += len(ms)
    b.close()
elif mode == "fill":
    b = walq.open(d, durability="os"); q = b.create_queue("big")
    for i in range(n // 1000):
        q.send_batch([b"x" * 100] * 1000)
    b.close()
elif mode == "open":
    t = time.perf_counter()
    b = walq.open(d, durability="os"); q = b.get_queue("big"); s = q.stats()
    out["open_s"] = time.perf_counter() - t
    out["visible"] = s.visible
    q.receive(10)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    b.close()
elif mode == "steady":
    seg = 1 << 20
    b = walq.open(d, durability="os", segment_size=seg); q = b.create_queue("steady")
    body = b"y" * 1000
    peak = 0
    live_bytes = 0
    for _ in range(50):  # a standing backlog of 5,000 live messages
        q.send_batch([body] * 100)
    for round_ in range(n):
        q.send_batch([body] * 100)
        ms = q.receive(100)
        q.delete_batch([m.receipt for m in ms])
        if round_ % 50 == 0:
            q.checkpoint()
            s = q.stats()
            peak = max(peak, s.disk_bytes)
            live_bytes = max(live_bytes, s.total * (len(body) + 80))
    out["peak_disk_bytes"] = peak
    out["bound_bytes"] = 2 * live_bytes + 2 * seg
    b.close()
print(json.dumps(out))
"""


def run(d: str, mode: str, n: int) -> dict:
    """Runs one phase in a fresh interpreter; returns what it printed."""
    res = subprocess.run([sys.executable, "-c", CHILD, d, mode, str(n)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="directory on the disk to test (default: a temp dir)")
    ap.add_argument("--messages", type=int, default=1_000_000)
    args = ap.parse_args()
    base = tempfile.mkdtemp(dir=args.dir, prefix="walq-bench-index-")
    n = args.messages
    try:
        half = os.path.join(base, "half")
        t = time.perf_counter()
        run(half, "fill_half", n)
        fill_s = time.perf_counter() - t
        opens = [run(half, "open", n)["open_s"] for _ in range(3)]
        print(f"{n:,} sends, half deleted (filled in {fill_s:.1f} s): open times "
              + ", ".join(f"{x * 1000:.0f} ms" for x in opens)
              + f"  -> {'PASS' if min(opens) < 0.5 else 'FAIL'} (< 0.5 s)")
        pending = os.path.join(base, "pending")
        run(pending, "fill", n)
        first = run(pending, "open", n)   # replays the whole log, writes a checkpoint
        again = run(pending, "open", n)
        print(f"{n:,} pending: first open (no checkpoint yet) {first['open_s']:.2f} s, "
              f"{first['maxrss_mb']:.0f} MB; reopen {again['open_s']:.2f} s, {again['maxrss_mb']:.0f} MB "
              f"-> {'PASS' if again['maxrss_mb'] < 200 else 'FAIL'} (< 200 MB)")
        steady = run(os.path.join(base, "steady"), "steady", 400)
        print(f"steady send/delete, 1 MiB segments: peak disk {steady['peak_disk_bytes'] / 2**20:.1f} MiB, "
              f"bound {steady['bound_bytes'] / 2**20:.1f} MiB "
              f"-> {'PASS' if steady['peak_disk_bytes'] <= steady['bound_bytes'] else 'FAIL'}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
