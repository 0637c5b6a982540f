"""Old code against new code, alternating, on a host too noisy for one run each.

    python bench/compare_trees.py e2e [--rounds 4] [--durability always] TREE [TREE ...]
    python bench/compare_trees.py cycle [--rounds 3] [--durability always] [--pause S] TREE [TREE ...]
    python bench/compare_trees.py batch [--rounds 3] [--durability always] TREE [TREE ...]

A TREE is a directory holding a built walq: a source tree after ``pip install -e .``, or a
snapshot of any commit::

    mkdir /tmp/old && git archive REV | tar -x -C /tmp/old
    (cd /tmp/old && python -c "import sys; sys.path.insert(0, 'native'); \\
        from ffi_build import ffibuilder; ffibuilder.compile(tmpdir='build_ffi')" \\
        && find build_ffi -name '_native*.so' -exec cp {} walq/ \\;)

Each measurement runs in a fresh interpreter with ``PYTHONPATH=TREE``, so the trees never mix.
Rounds alternate between the trees, because the shared disk and CPUs drift by 2x within
minutes (bench/RESULTS-queue.md).

- ``e2e``: bench_queue's 4 producer + 4 consumer run (25,000 messages per producer), from the
  tree's own ``bench/``: messages/s and CPU µs per message on each side.
- ``cycle``: one process, a queue of 60,000 messages, 5,000 x (``receive(10)`` +
  ``delete_batch``): wall time per cycle and main-thread CPU per call.  ``--pause S`` sleeps
  S seconds before each call (not counted): what a call costs on a CPU that has just idled.
- ``batch``: one process, 3,000 x ``send_batch(100)`` of plain bodies, the checkpoints they
  come due for included (the queue grows to 305,000): wall and CPU per call; then the best of
  three ``checkpoint()`` calls at that size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

E2E = """
import json, sys, tempfile
sys.path.insert(0, sys.argv[1] + "/bench")
import bench_queue
r = bench_queue.end_to_end(tempfile.mkdtemp(), "walq", sys.argv[2], 25000, 6.0)
print(json.dumps({"msgs_per_s": r["msgs_per_s"], "lost": r["lost"], "twice": r["duplicates"],
                  "producer_cpu_us": r["producer_cpu_us_per_msg"], "consumer_cpu_us": r["consumer_cpu_us_per_msg"]}))
"""

CYCLE = """
import json, shutil, sys, tempfile, time
import walq
durability, pause = sys.argv[2], float(sys.argv[3])
d = tempfile.mkdtemp()
b = walq.open(d, durability=durability)
q = b.create_queue("q")
for _ in range(60):
    q.send_batch([b"x" * 100] * 1000)
q.stats()
clock, cpu_clock = time.perf_counter, time.thread_time
wall = recv_cpu = del_cpu = 0.0
for i in range(5200):
    if pause:
        time.sleep(pause)
    t, c = clock(), cpu_clock()
    msgs = q.receive(10)
    w, c1 = clock() - t, cpu_clock() - c
    if pause:
        time.sleep(pause)
    t, c = clock(), cpu_clock()
    q.delete_batch([m.receipt for m in msgs])
    if i >= 200:  # warmed up
        wall += w + clock() - t
        recv_cpu += c1
        del_cpu += cpu_clock() - c
b.close()
shutil.rmtree(d)
print(json.dumps({"wall_us": wall / 5000 * 1e6, "receive_cpu_us": recv_cpu / 5000 * 1e6,
                  "delete_cpu_us": del_cpu / 5000 * 1e6}))
"""


BATCH = """
import json, shutil, sys, tempfile, time
import walq
durability = sys.argv[2]
d = tempfile.mkdtemp()
b = walq.open(d, durability=durability)
q = b.create_queue("q")
bodies = [b"x" * 100] * 100
clock, cpu_clock = time.perf_counter, time.thread_time
for _ in range(50):
    q.send_batch(bodies)
t, c = clock(), cpu_clock()
for _ in range(3000):  # the queue grows to 305,000, checkpointing as it goes
    q.send_batch(bodies)
wall, cpu = (clock() - t) / 3000, (cpu_clock() - c) / 3000
q.stats()
best = None
for _ in range(3):
    t = clock()
    q.checkpoint()
    best = min(best or 1e9, clock() - t)
b.close()
shutil.rmtree(d)
print(json.dumps({"send_batch_wall_us": wall * 1e6, "send_batch_cpu_us": cpu * 1e6, "checkpoint_ms": best * 1e3}))
"""


def run(tree: str, script: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", script, tree, *args], env=env, check=True,
                         capture_output=True, text=True, cwd=tree).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("e2e", "cycle", "batch"))
    ap.add_argument("trees", nargs="+", help="directories holding a built walq")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (e2e 4, cycle 3)")
    ap.add_argument("--durability", default="always", choices=("always", "batch", "os"))
    ap.add_argument("--pause", type=float, default=0.0, help="cycle: seconds slept before each call")
    args = ap.parse_args(argv)
    rounds = args.rounds or (4 if args.what == "e2e" else 3)
    results: dict[str, list[dict]] = {t: [] for t in args.trees}
    for r in range(rounds):
        for tree in args.trees:
            if args.what == "e2e":
                got = run(tree, E2E, args.durability)
            elif args.what == "batch":
                got = run(tree, BATCH, args.durability)
            else:
                got = run(tree, CYCLE, args.durability, str(args.pause))
            results[tree].append(got)
            print(f"round {r + 1} {tree}: " + ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}"
                                                        for k, v in got.items()), flush=True)
    print()
    for tree, rows in results.items():
        keys = [k for k, v in rows[0].items() if isinstance(v, float)]
        print(f"{tree}: " + ", ".join(f"{k} median {statistics.median(r[k] for r in rows):,.1f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
