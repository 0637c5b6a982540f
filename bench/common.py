"""Benchmark helpers: the disk's raw fdatasync rate, percentiles, tables, machine facts.

Every benchmark run measures the raw fdatasync rate of the same directory it
benchmarks in, because the disk is shared and its speed drifts: a durable
number means little without the disk's own limit measured beside it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

RAW_WRITE_SIZE = 128  # one framed 100-byte record: 24 B header + 100 B + padding to 8


# -- statistics ----------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of an ascending list, linearly interpolated."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def percentiles(values, qs=(50, 90, 99, 99.9)) -> dict[float, float]:
    """``{q: value}`` for each percentile ``q`` of ``values`` (any order)."""
    s = sorted(values)
    return {q: percentile(s, q) for q in qs}


def median(values) -> float:
    return percentile(sorted(values), 50)


@dataclass
class Measurement:
    """Operations (and records) done in ``seconds``, with optional per-op latencies (s)."""

    name: str
    ops: int
    seconds: float
    records_per_op: int = 1
    latencies: list[float] = field(default_factory=list)
    note: str = ""
    cpu: float | None = None  # CPU seconds (user + system) the benchmarked processes used
    syncs: int | None = None  # fdatasyncs the benchmarked code issued
    extra: dict = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.ops * self.records_per_op

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else float("nan")

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else float("nan")

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if getattr(self, "_sorted_n", None) != len(self.latencies):
            self._sorted = sorted(self.latencies)
            self._sorted_n = len(self.latencies)
        return percentile(self._sorted, q)

    def merge(self, other: "Measurement") -> None:
        """Adds another round of the same benchmark (interleaved rounds)."""
        self.ops += other.ops
        self.seconds += other.seconds
        self.latencies.extend(other.latencies)
        if self.cpu is not None and other.cpu is not None:
            self.cpu += other.cpu
        if self.syncs is not None and other.syncs is not None:
            self.syncs += other.syncs
        for k, v in other.extra.items():
            self.extra[k] = self.extra.get(k, 0) + v

    def cpu_per_record(self) -> float:
        """CPU seconds per record, or nan when not measured."""
        return self.cpu / self.records if self.cpu is not None and self.records else float("nan")


# -- the disk's limit ------------------------------------------------------------


def raw_fdatasync(directory: str, layout: str, seconds: float, write_size: int = RAW_WRITE_SIZE,
                  max_ops: int = 1_000_000, remove: bool = True) -> Measurement:
    """pwrite ``write_size`` bytes at the next offset + fdatasync, in a loop.

    ``layout``:
      * ``"append"``: the file grows with every write (size metadata to journal);
      * ``"fallocate"``: the file was posix_fallocate'd first (on ext4 and xfs
        the extents are *unwritten*: the first write into each block converts
        it, which is a metadata change too) - what walq's segments do today;
      * ``"overwrite"``: the file was filled with zeros and synced first, so
        every write lands on allocated, written blocks - what SQLite's WAL does
        when it reuses its file, and what a recycled segment would do.

    ``remove=False`` leaves the file for the caller to delete later: on a file
    system mounted with ``discard`` a deletion makes the next journal commits
    slower, which would tax whatever is measured next.
    """
    fd, path = tempfile.mkstemp(prefix=f"raw-fdatasync-{layout}-", suffix=".bin", dir=directory)
    # Room for the run at up to 40,000 syncs/s (faster than any disk here).
    span = min(max_ops, int(seconds * 40_000) + 1000) * write_size
    wrap = span + 1  # offset at which writing starts over at 0 (overwrite only)
    try:
        if layout == "fallocate":
            os.posix_fallocate(fd, 0, span)  # metadata only: cheap however large
            os.fsync(fd)
        elif layout == "overwrite":
            # A 64 MiB file (a segment) written over and over, as SQLite reuses its WAL.
            wrap = min(span, 64 << 20) // write_size * write_size
            chunk = b"\0" * (1 << 20)
            for off in range(0, wrap + len(chunk), len(chunk)):
                os.pwrite(fd, chunk, off)
            os.fsync(fd)
        elif layout != "append":
            raise ValueError(f"unknown layout {layout!r}")
        buf = os.urandom(write_size)
        lat: list[float] = []
        perf = time.perf_counter
        off = 0
        meter = LoadMeter()
        c0 = time.process_time()
        t0 = perf()
        deadline = t0 + seconds
        while True:
            a = perf()
            os.pwrite(fd, buf, off)
            os.fdatasync(fd)
            b = perf()
            lat.append(b - a)
            off += write_size
            if off >= wrap:
                off = 0
            if b >= deadline or off + write_size > span:
                break
        elapsed = perf() - t0
        cpu = time.process_time() - c0
        load = meter.stop()
    finally:
        os.close(fd)
        if remove:
            os.unlink(path)
    return Measurement(f"raw pwrite {write_size} B + fdatasync ({layout})", len(lat), elapsed,
                       latencies=lat, cpu=cpu, syncs=len(lat), extra=load)


# -- output ----------------------------------------------------------------------


def run_row(fn, seconds: float) -> tuple[int, float, list[float]]:
    """Calls ``fn`` until ``seconds`` have passed: (calls, elapsed seconds,
    each call's latency in seconds)."""
    lat = []
    clock = time.perf_counter
    t0 = clock()
    end = t0 + seconds
    while True:
        a = clock()
        fn()
        b = clock()
        lat.append(b - a)
        if b >= end:
            break
    return len(lat), clock() - t0, lat


def fmt_rate(x: float) -> str:
    if x != x:  # nan
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:,.1f}"


def fmt_us(seconds: float) -> str:
    if seconds != seconds:
        return "-"
    us = seconds * 1e6
    if us >= 100:
        return f"{us:,.0f}"
    return f"{us:,.1f}"


def fmt_ms(seconds: float) -> str:
    if seconds != seconds:
        return "-"
    return f"{seconds * 1e3:,.1f}"


def table(headers: list[str], rows: list[list], out=None, markdown: bool = True) -> str:
    """Formats rows as a Markdown table (numbers right-aligned) and prints it."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(_looks_numeric(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(headers))
    ]

    def line(r):
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)]
        return "| " + " | ".join(parts) + " |" if markdown else "  ".join(parts)

    lines = [line(cells[0])]
    if markdown:
        lines.append("|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                                     for w, num in zip(widths, numeric)) + "|")
    lines += [line(r) for r in cells[1:]]
    text = "\n".join(lines)
    print(text, file=out or sys.stdout, flush=True)
    return text


def _looks_numeric(s: str) -> bool:
    s = s.replace(",", "").replace("x", "").replace("%", "").strip()
    if s in ("-", ""):
        return True
    try:
        float(s)
        return True
    except ValueError:
        return False


# -- the machine -------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mount_of(directory: str) -> tuple[str, str, str, str]:
    """``(device, mount point, fs type, options)`` of the mount holding ``directory``."""
    real = os.path.realpath(directory)
    best = ("?", "?", "?", "?")
    best_len = -1
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 4:
                    continue
                dev, mnt, fstype, opts = parts[:4]
                mnt = mnt.replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > best_len:
                    best, best_len = (dev, mnt, fstype, opts), len(mnt)
    except OSError:
        pass
    return best


def mem_total_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return float("nan")


def git_commit(repo_dir: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", repo_dir, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        head = out.stdout.strip() or "?"
        dirty = subprocess.run(
            ["git", "-C", repo_dir, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return head + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine(directory: str) -> dict[str, str]:
    """Facts that decide what the numbers mean."""
    import sqlite3

    dev, mnt, fstype, opts = mount_of(directory)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    return {
        "cpu": cpu_model(),
        "nproc": f"{affinity} (os.cpu_count {os.cpu_count()})",
        "memory": f"{mem_total_gib():.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "filesystem": f"{fstype} on {dev} mounted at {mnt} ({opts})",
        "bench dir": os.path.realpath(directory),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
    }


def print_machine(info: dict[str, str]) -> None:
    width = max(map(len, info))
    for k, v in info.items():
        print(f"  {k.ljust(width)} : {v}")
    sys.stdout.flush()


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat() -> list[int]:
    """user nice system idle iowait irq softirq steal ticks of all CPUs."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return [0] * 8
    return fields + [0] * (8 - len(fields))


def kernel_thread_ticks() -> int:
    """CPU ticks used so far by kernel threads (journal commits, block I/O
    workers...), which mostly work for whoever writes and syncs: a
    benchmark's own I/O keeps them busy, so they are not "other" load."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ppid, flags = int(rest[1]), int(rest[6])
        if pid == "2" or ppid == 2 or flags & 0x00200000:  # PF_KTHREAD
            total += int(rest[11]) + int(rest[12])
    return total


class LoadMeter:
    """Measures, over a benchmark's window, how busy the whole machine was.

    ``stop()`` returns clock ticks for the window: ``busy_ticks`` (any CPU
    use but I/O interrupts), ``steal_ticks`` (the hypervisor gave our CPUs to
    another guest), ``user_sys_ticks`` (processes and kernel threads),
    ``kthread_ticks`` and ``total_ticks``.  With the benchmark's own CPU
    seconds, :func:`other_load` tells how much of the machine *other*
    processes used: the disk and the 2 cores are shared with whatever else
    runs here, and a contended run measures the neighbours, not walq."""

    def __init__(self) -> None:
        self.start = _proc_stat()
        self.kstart = kernel_thread_ticks()

    def stop(self) -> dict:
        end = _proc_stat()
        kend = kernel_thread_ticks()
        d = [b - a for a, b in zip(self.start, end)]
        return {"busy_ticks": d[0] + d[1] + d[2] + d[5] + d[6], "steal_ticks": d[7],
                "user_sys_ticks": d[0] + d[1] + d[2], "kthread_ticks": kend - self.kstart,
                "total_ticks": sum(d)}


def other_load(m: "Measurement") -> float:
    """Fraction of all CPUs that other processes (not this benchmark, not
    kernel threads, not interrupts) used while ``m`` ran, plus stolen time."""
    total = m.extra.get("total_ticks", 0)
    if not total or m.cpu is None:
        return float("nan")
    own = m.extra.get("window_cpu", m.cpu) * CLK_TCK
    others = m.extra.get("user_sys_ticks", 0) - m.extra.get("kthread_ticks", 0) - own
    return (max(0.0, others) + m.extra.get("steal_ticks", 0)) / total


def cpu_times() -> tuple[int, int, int]:
    """``(busy, steal, total)`` clock ticks of all CPUs so far, from /proc/stat."""
    d = _proc_stat()
    return d[0] + d[1] + d[2] + d[5] + d[6], d[7], sum(d)


def cpu_probe(iterations: int = 200_000) -> float:
    """Seconds for a fixed pure-Python loop (best of 3): this VM's vCPU speed
    drifts by up to ~1.7x over minutes with no other process running and no
    stolen time (a busy neighbour on the host), so rates of CPU-bound rows
    are only comparable when their probes agree."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        x = 0
        for i in range(iterations):
            x += i & 7
        best = min(best, time.perf_counter() - t0)
    return best


def machine_busy(sample: float = 1.0) -> float:
    """Fraction of all CPUs busy (or stolen) over ``sample`` seconds while we sleep."""
    b0, s0, t0 = cpu_times()
    time.sleep(sample)
    b1, s1, t1 = cpu_times()
    return ((b1 - b0) + (s1 - s0)) / max(1, t1 - t0)


def wait_quiet(threshold: float = 0.25, max_wait: float = 20.0) -> tuple[float, float]:
    """Waits (up to ``max_wait`` s) until other processes use under
    ``threshold`` of the CPUs; returns (seconds waited, last busy fraction)."""
    t0 = time.monotonic()
    busy = machine_busy(0.5)
    while busy > threshold and time.monotonic() - t0 < max_wait:
        busy = machine_busy(1.0)
    return time.monotonic() - t0, busy


def drop_page_cache() -> bool:
    """Writes back and drops the page cache (root only); False if not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False
