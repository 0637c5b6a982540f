"""``walq bench``: a small throughput benchmark on the disk that holds a store.

For each durability mode it measures, with 100-byte messages on a fresh
queue in a temporary directory beside the store:

* ``send`` - one message per call;
* ``send_batch(100)`` - 100 messages per call;
* ``receive(10)+delete_batch`` - take up to 10, then ack them in one call
  (from the messages the sends left; the index has caught up with them
  before the clock starts).

First it measures the disk's own rate of 128-byte ``pwrite`` + ``fdatasync``
in the same directory: the ceiling for one durable write at a time, and the
number to read the ``"always"`` rows against (group commit and batches are
how walq gets past it).  The repository's ``bench/`` directory holds the full
benchmarks with peers; this one needs nothing but walq.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import walq

BODY = b"x" * 100
OPERATIONS = ("send", "send_batch(100)", "receive(10)+delete_batch")


@dataclass
class Row:
    """One measurement: ``messages`` handled in ``seconds`` by ``calls`` calls."""

    mode: str
    operation: str
    messages: int
    calls: int
    seconds: float
    latencies: list[float] = field(default_factory=list, repr=False)  # per call, seconds

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def latency(self, q: float) -> float:
        s = sorted(self.latencies)
        if not s:
            return float("nan")
        return s[min(len(s) - 1, int(q / 100 * len(s)))]

    def to_json(self) -> dict:
        return {"mode": self.mode, "operation": self.operation, "messages": self.messages, "calls": self.calls,
                "seconds": round(self.seconds, 4), "messages_per_s": round(self.rate, 1),
                "call_p50_ms": round(self.latency(50) * 1000, 4), "call_p99_ms": round(self.latency(99) * 1000, 4)}


@dataclass
class BenchResult:
    directory: str
    seconds: float
    rows: list[Row] = field(default_factory=list)
    machine: str = ""


def steps(modes) -> int:
    """How many measurements ``run`` makes (for a progress bar)."""
    return 1 + len(OPERATIONS) * len(modes)


def _bench_dir(data: str) -> str:
    """A fresh directory on the store's disk: beside the store, or in the
    nearest existing parent of where it would be."""
    base = os.path.abspath(data)
    while not os.path.isdir(base):
        parent = os.path.dirname(base)
        if parent == base:
            break
        base = parent
    return tempfile.mkdtemp(prefix=".walq-bench-", dir=base)


def run(data: str, *, seconds: float = 1.0, modes=("always", "batch", "os"), on_step=None) -> BenchResult:
    """Runs every measurement; ``on_step(note)`` after each."""
    work = _bench_dir(data)
    result = BenchResult(work, seconds, machine=f"{platform.system()} {platform.machine()}, "
                                                f"Python {platform.python_version()}")
    step = on_step or (lambda note: None)
    try:
        result.rows.append(_raw_fdatasync(work, seconds))
        step("disk: pwrite+fdatasync")
        for mode in modes:
            with walq.open(os.path.join(work, mode), durability=mode) as b:
                q = b.create_queue("bench")
                result.rows.append(_timed(mode, "send", seconds, lambda: (q.send(BODY), 1)[1]))
                step(f"{mode}: send")
                batch = [BODY] * 100
                result.rows.append(_timed(mode, "send_batch(100)", seconds, lambda: (q.send_batch(batch), 100)[1]))
                step(f"{mode}: send_batch(100)")

                # Untimed: fold the sends just made into the index (a process
                # catches up with appends when it next decides something).
                q.stats()

                def take() -> int:
                    msgs = q.receive(10)
                    if msgs:
                        q.delete_batch([m.receipt for m in msgs])
                    return len(msgs)

                result.rows.append(_timed(mode, "receive(10)+delete_batch", seconds, take))
                step(f"{mode}: receive(10)+delete_batch")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _timed(mode: str, operation: str, seconds: float, call) -> Row:
    """Calls ``call`` (which returns how many messages it handled) for
    ``seconds``, or until it handles none."""
    lat = []
    messages = calls = 0
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    while True:
        t = clock()
        if t >= end:
            break
        n = call()
        lat.append(clock() - t)
        if n == 0:
            break
        messages += n
        calls += 1
    return Row(mode, operation, messages, calls, clock() - start, lat)


def _raw_fdatasync(work: str, seconds: float) -> Row:
    """128-byte pwrite + fdatasync, appending to a file: the disk's limit for
    one durable write at a time."""
    path = os.path.join(work, "raw")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    record = b"r" * 128
    off = 0

    def one() -> int:
        nonlocal off
        os.pwrite(fd, record, off)
        os.fdatasync(fd)
        off += len(record)
        return 1

    try:
        return _timed("disk", "pwrite+fdatasync 128 B", min(seconds, 1.0), one)
    finally:
        os.close(fd)
        os.unlink(path)


def format_table(r: BenchResult) -> str:
    """The ``walq bench`` table."""
    from walq.tools.table import format_table as table

    rows = [[row.mode, row.operation, f"{row.rate:,.0f}", f"{row.latency(50) * 1000:.3f}",
             f"{row.latency(99) * 1000:.3f}"] for row in r.rows]
    head = (f"walq bench: 100-byte messages, {r.seconds:g} s per measurement, in {os.path.dirname(r.directory)} "
            f"({r.machine})")
    return head + "\n" + table(["MODE", "OPERATION", "MSG/S", "P50 MS/CALL", "P99 MS/CALL"], rows, right={2, 3, 4})
