"""``walq crash-bench``: kill -9 producers and consumers, recover, check.

Each cycle starts producer and consumer processes on one queue of a store
(``python -m walq.tools.crashbench producer|consumer ...``), lets them run, and
kills them with SIGKILL at random moments - each at its own moment, or all at
once with ``killpg`` - some of them while they are still opening the store.
Then, with no process left, it

1. checks every file (``walq verify --strict``): after kill -9 no published
   record may fail its checksum (a torn tail past the published end is fine);
2. reopens the store and times it (recovery plus loading the queue's index);
3. rebuilds the queue's live messages from its files (the newest checkpoint,
   then every later record, read with walq/tools/inspect.py's raw reader) and
   checks that every confirmed send that no consumer tried to delete is still
   stored, intact, and counted by the library's index.

After the last cycle it receives everything left (with a clock moved past
every lease) and checks the invariants over the whole run:

* **no confirmed send lost**: a send whose call returned (the producer wrote
  ``C key`` to its report after the call) is delivered or stored until a
  consumer tries to delete it;
* **no deleted message redelivered**: no receive that *started* after a
  delete of that message *returned* hands it out again (times from
  CLOCK_MONOTONIC, which every process shares);
* **no corrupt record returned**: every body a consumer or the final drain
  receives is checked against its key (the bodies check themselves).

Workers report to their own files with one ``write()`` per line (O_APPEND),
so a kill can cut a report short but never garble it.  A send or delete
whose report line was lost to the kill is simply unconfirmed: nothing is
claimed about it.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import walq
from walq.tools import inspect as winspect
from walq.tools.subprocesses import module_command
from walq.errors import CorruptionError, WalqError
from walq.queue import checkpoint as ckpt
from walq.queue import records as R

QUEUE = "crashbench"
_CARRY = getattr(R, "CARRY", -1)
#: Share of kills aimed at a worker that is still starting (importing,
#: opening the store, running recovery) rather than one that is running.
STARTUP_KILL_SHARE = 0.2
_STARTUP_S = 0.4  # roughly how long a worker takes to import walq and open the store
_READY_TIMEOUT_S = 30.0


# -- self-checking message bodies --------------------------------------------------------


def make_body(key: str) -> bytes:
    """A body of 16-1,500 bytes that names its key and checks itself."""
    h = hashlib.blake2b(key.encode(), digest_size=16).digest()
    n = 16 + int.from_bytes(h[:2], "little") % 1500
    filler = (h.hex().encode() * (n // 32 + 1))[:n]
    return key.encode() + b"|" + filler


def check_body(body: bytes) -> str:
    """The key of an intact ``make_body`` body; ValueError if it is damaged."""
    key, sep, _rest = body.partition(b"|")
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"body does not start with a key: {body[:40]!r}") from None
    if not sep or body != make_body(text):
        raise ValueError(f"damaged body for key {text[:40]!r} ({len(body)} bytes)")
    return text


# -- results -------------------------------------------------------------------------------


@dataclass
class Kill:
    worker: str
    phase: str  # "startup" or "running"
    after_s: float  # since the worker was started


@dataclass
class Cycle:
    index: int
    kills: list[Kill]
    group_kill: bool
    open_s: float = 0.0
    log_records: int = 0
    log_bytes: int = 0  # bytes of valid records in the queue's log
    disk_bytes: int = 0  # bytes allocated to the queue's segment files
    segments: int = 0
    live: int = 0
    confirmed: int = 0  # confirmed sends so far
    deleted: int = 0  # confirmed deletes so far
    problems: list[str] = field(default_factory=list)
    worker_errors: list[str] = field(default_factory=list)  # stderr of workers that died by themselves


@dataclass
class BenchResult:
    config: dict
    cycles: list[Cycle] = field(default_factory=list)
    confirmed: int = 0
    delete_attempted: int = 0
    deleted: int = 0
    deliveries: int = 0
    redelivered: int = 0  # messages delivered more than once before a delete (at-least-once)
    drained: int = 0
    unconfirmed_stored: int = 0  # sends cut short by a kill that nevertheless made it
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)  # delivered after their delete returned
    corrupt: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def messages_checked(self) -> int:
        """Confirmed sends whose fate was checked, plus every body checked."""
        return self.confirmed + self.deliveries + self.drained

    def open_percentiles(self) -> dict[str, float]:
        return percentiles([c.open_s for c in self.cycles if c.open_s])

    def to_json(self) -> dict:
        return {
            "config": self.config,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "summary": {
                "cycles": len(self.cycles),
                "open_s": self.open_percentiles(),
                "messages_checked": self.messages_checked,
                "confirmed_sends": self.confirmed,
                "delete_attempted": self.delete_attempted,
                "confirmed_deletes": self.deleted,
                "deliveries_checked": self.deliveries,
                "redelivered": self.redelivered,
                "drained": self.drained,
                "unconfirmed_stored": self.unconfirmed_stored,
                "lost": len(self.lost),
                "duplicated": len(self.duplicated),
                "corrupt": len(self.corrupt),
            },
            "violations": self.violations,
            "lost_keys": self.lost[:100],
            "duplicated_keys": self.duplicated[:100],
            "corrupt": self.corrupt[:100],
            "cycles": [asdict(c) for c in self.cycles],
        }


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max of ``values`` (linear interpolation), rounded to µs."""
    s = sorted(values)
    if not s:
        return {}

    def pct(q: float) -> float:
        pos = (len(s) - 1) * q / 100
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return {"p50": round(pct(50), 6), "p90": round(pct(90), 6), "p99": round(pct(99), 6), "max": round(s[-1], 6),
            "n": len(s)}


# -- the ledger: what the workers confirmed ------------------------------------------------


class Ledger:
    """Everything the workers reported, across cycles."""

    def __init__(self) -> None:
        self.confirmed: set[str] = set()
        self.attempted: set[str] = set()
        self.deleted_at: dict[str, float] = {}  # key -> earliest time a delete returned
        self.last_receive: dict[str, float] = {}  # key -> latest time a receive that got it started
        self.deliveries: dict[str, int] = {}
        self.corrupt: list[str] = []
        self.errors: list[str] = []

    def read(self, path: str, worker: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        for raw in data.split(b"\n")[:-1]:  # a line without its newline was cut by the kill
            parts = raw.decode("ascii", "replace").split(" ")
            tag = parts[0]
            if tag == "C":
                self.confirmed.update(parts[1:])
            elif tag == "R":
                t0 = float(parts[1])
                for k in parts[2:]:
                    if t0 > self.last_receive.get(k, -1.0):
                        self.last_receive[k] = t0
                    self.deliveries[k] = self.deliveries.get(k, 0) + 1
            elif tag == "A":
                self.attempted.update(parts[1:])
            elif tag == "D":
                t1 = float(parts[1])
                for k in parts[2:]:
                    if t1 < self.deleted_at.get(k, float("inf")):
                        self.deleted_at[k] = t1
            elif tag == "X":
                self.corrupt.append(f"{worker}: {' '.join(parts[1:])}")
            elif tag == "E":
                self.errors.append(f"{worker}: {' '.join(parts[1:])}")

    def duplicated(self) -> list[str]:
        """Keys received by a receive that started after their delete returned."""
        return sorted(k for k, t1 in self.deleted_at.items() if self.last_receive.get(k, -1.0) > t1)


# -- the parent ------------------------------------------------------------------------------


def plotting_error() -> str | None:
    """Why --plot cannot work here (matplotlib missing), or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib, which is not installed: pip install 'walq[plot]' (or pip install matplotlib)"
    return None


def run(data: str, *, cycles: int = 20, producers: int = 2, consumers: int = 2, run_time: float = 1.0,
        kill_group: bool = False, durability: str = "always", segment_size: int = 1 << 20,
        visibility_timeout: int = 2, checkpoint_every: int = 200, seed: int | None = None,
        on_cycle=None, log=None) -> BenchResult:
    """Runs the benchmark on the store at ``data`` (queue ``crashbench``, recreated)."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    t_start = time.monotonic()
    config = dict(data=os.path.abspath(data), cycles=cycles, producers=producers, consumers=consumers,
                  run_time=run_time, kill_group=kill_group, durability=durability, segment_size=segment_size,
                  visibility_timeout=visibility_timeout, checkpoint_every=checkpoint_every, seed=seed,
                  python=sys.version.split()[0], walq=walq.__version__)
    result = BenchResult(config)
    opts = dict(durability=durability, segment_size=segment_size)
    with walq.open(data, **opts) as b:
        if QUEUE in b.list_queues(QUEUE):
            b.delete_queue(QUEUE)
        b.create_queue(QUEUE, visibility_timeout=visibility_timeout)
    qdir = winspect.queue_dir(data, QUEUE)
    ledger = Ledger()
    work = tempfile.mkdtemp(prefix="walq-crash-bench-")
    try:
        for c in range(1, cycles + 1):
            cycle = _run_cycle(c, data, qdir, work, ledger, rng, producers=producers, consumers=consumers,
                               run_time=run_time, kill_group=kill_group, opts=opts, vt=visibility_timeout,
                               checkpoint_every=checkpoint_every)
            result.cycles.append(cycle)
            for p in cycle.problems:
                result.violations.append(f"cycle {c}: {p}")
                if log:
                    log(f"cycle {c}: {p}")
            if on_cycle:
                on_cycle(cycle)
            if any(p.startswith("reopen failed") for p in cycle.problems):
                break
        if not any(p.startswith("reopen failed") for c in result.cycles for p in c.problems):
            _drain(data, ledger, result, opts, visibility_timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.confirmed = len(ledger.confirmed)
    result.delete_attempted = len(ledger.attempted)
    result.deleted = len(ledger.deleted_at)
    result.deliveries = sum(ledger.deliveries.values())
    result.redelivered = sum(1 for n in ledger.deliveries.values() if n > 1)
    result.duplicated = sorted(set(result.duplicated) | set(ledger.duplicated()))
    result.corrupt = ledger.corrupt + result.corrupt
    if result.lost:
        result.violations.append(f"{len(result.lost)} confirmed sends lost (e.g. {', '.join(result.lost[:3])})")
    if result.duplicated:
        result.violations.append(f"{len(result.duplicated)} messages delivered after their delete returned "
                                 f"(e.g. {', '.join(result.duplicated[:3])})")
    if result.corrupt:
        result.violations.append(f"{len(result.corrupt)} corrupt bodies returned (e.g. {result.corrupt[0]})")
    for e in ledger.errors:
        result.violations.append(f"worker error: {e}")
    result.seconds = time.monotonic() - t_start
    return result


def _spawn(role: str, wid: str, data: str, work: str, opts: dict, vt: int, checkpoint_every: int, seed: int,
           pgid: int | None, new_group: bool) -> tuple[subprocess.Popen, str, str]:
    report = os.path.join(work, f"{wid}.{role}.log")
    errpath = os.path.join(work, f"{wid}.{role}.err")
    cmd = [*module_command("walq.tools.crashbench"), role, "--data", data, "--id", wid, "--report", report,
           "--durability", opts["durability"], "--segment-size", str(opts["segment_size"]),
           "--visibility-timeout", str(vt), "--checkpoint-every", str(checkpoint_every), "--seed", str(seed)]
    kw: dict = {}
    if new_group:
        # A group of its own, in our session (so that the others may join it).
        kw["preexec_fn"] = lambda: os.setpgid(0, 0)
    elif pgid is not None:
        kw["preexec_fn"] = lambda: os.setpgid(0, pgid)
    with open(errpath, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                close_fds=True, **kw)
    return proc, report, errpath


def _run_cycle(c: int, data: str, qdir: str, work: str, ledger: Ledger, rng: random.Random, *, producers: int,
               consumers: int, run_time: float, kill_group: bool, opts: dict, vt: int,
               checkpoint_every: int) -> Cycle:
    roles = ["producer"] * producers + ["consumer"] * consumers
    rng.shuffle(roles)
    workers = []  # (name, proc, report, errpath, started)
    pgid = None
    for i, role in enumerate(roles):
        wid = f"{c}.{i}"
        proc, report, errpath = _spawn(role, wid, data, work, opts, vt, checkpoint_every, rng.randrange(1 << 30),
                                       pgid, new_group=kill_group and pgid is None)
        if kill_group and pgid is None:
            pgid = proc.pid
        workers.append((f"{role} {wid}", proc, report, errpath, time.monotonic()))
    kills: list[Kill] = []
    if kill_group:
        if rng.random() < STARTUP_KILL_SHARE:
            phase, at = "startup", workers[0][4] + rng.uniform(0, _STARTUP_S)
        else:
            phase, at = "running", _all_ready(workers) + rng.uniform(0, run_time)
        _sleep_until(at)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for name, proc, _r, _e, started in workers:
            kills.append(Kill(name, phase, round(at - started, 4)))
    else:
        plan = []
        for name, proc, report, _e, started in workers:
            if rng.random() < STARTUP_KILL_SHARE:
                plan.append((started + rng.uniform(0, _STARTUP_S), "startup", name, proc, started, report))
            else:
                plan.append((None, "running", name, proc, started, report))
        # Running-phase kills are timed from when each worker said it was ready.
        pending = list(plan)
        ready_at: dict[str, float] = {}
        deadline = time.monotonic() + _READY_TIMEOUT_S + run_time
        offsets = {p[2]: rng.uniform(0, run_time) for p in plan}
        while pending and time.monotonic() < deadline:
            now = time.monotonic()
            still = []
            for at, phase, name, proc, started, report in pending:
                if at is None and name not in ready_at and (_is_ready(report) or proc.poll() is not None):
                    ready_at[name] = now
                when = at if at is not None else (ready_at[name] + offsets[name] if name in ready_at else None)
                if when is not None and now >= when:
                    _kill(proc)
                    kills.append(Kill(name, phase, round(now - started, 4)))
                else:
                    still.append((at, phase, name, proc, started, report))
            pending = still
            time.sleep(0.002)
        for at, phase, name, proc, started, report in pending:
            _kill(proc)
            kills.append(Kill(name, "timeout", round(time.monotonic() - started, 4)))
    cycle = Cycle(c, kills, kill_group)
    for name, proc, report, errpath, _s in workers:
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            lines = _tail(errpath)
            cycle.problems.append(f"{name} exited by itself (status {proc.returncode}): "
                                  f"{lines[-1] if lines else '(no output)'}")
            cycle.worker_errors.append(f"{name}:\n" + "\n".join(lines[-40:]))
        ledger.read(report, name)
    _check_after_kill(data, qdir, ledger, cycle, opts)
    cycle.confirmed = len(ledger.confirmed)
    cycle.deleted = len(ledger.deleted_at)
    return cycle


def _check_after_kill(data: str, qdir: str, ledger: Ledger, cycle: Cycle, opts: dict) -> None:
    # 1. Every file, before anything reopens it: after kill -9 no published
    #    record may fail its checksum.
    report = winspect.verify_store(data, strict=True)
    for p in report.damage:
        cycle.problems.append(f"verify: {p.describe()}")
    # 2. Reopen (recovery) and load the queue's index, timed.
    t0 = time.perf_counter()
    try:
        b = walq.open(data, **opts)
        try:
            q = b.get_queue(QUEUE)
            st = q.stats()
            cycle.open_s = time.perf_counter() - t0
            index_live = st.total
            cycle.disk_bytes = st.disk_bytes
        finally:
            b.close()
    except (WalqError, OSError) as exc:
        cycle.problems.append(f"reopen failed: {type(exc).__name__}: {exc}")
        return
    # 3. An independent replay of the log: every confirmed send no consumer
    #    tried to delete must be there, intact, and the index must agree.
    try:
        live, records, nbytes, segments, bad = replay(qdir)
    except CorruptionError as exc:
        cycle.problems.append(f"replay: {exc}")
        return
    cycle.log_records, cycle.log_bytes, cycle.segments, cycle.live = records, nbytes, segments, len(live)
    for b_ in bad:
        cycle.problems.append(f"corrupt record in the log: {b_}")
    stored = set(live.values())
    missing = sorted(ledger.confirmed - ledger.attempted - stored)
    if missing:
        cycle.problems.append(f"{len(missing)} confirmed sends missing from the log (e.g. {', '.join(missing[:3])})")
    if len(live) != index_live:
        cycle.problems.append(f"the index counts {index_live} live messages, the log replay {len(live)}")
    if len(stored) != len(live):
        cycle.problems.append(f"{len(live) - len(stored)} messages stored twice")


def replay(qdir: str) -> tuple[dict[int, str], int, int, int, list[str]]:
    """The live messages of a queue (seq -> key), read from its files: the
    newest checkpoint's live set, then every record after it.

    Also returns the record and byte counts of the log, its segment count,
    and what failed a check: a body that does not check itself, or a live
    message whose SEND record the log no longer holds.  (A log trimmed by a
    checkpoint cannot be replayed from its first record alone: the records
    it dropped decided which messages are live.)
    """
    sends: dict[int, str] = {}
    later: list = []  # records the checkpoint does not cover
    bad: list[str] = []
    records = nbytes = 0
    positions = ckpt.list_checkpoints(qdir)
    # Where compaction copied a message (old seq -> its copy).  A standard
    # queue's delete is written without the lock and may name the old seq.
    redirect: dict[int, int] = {}
    applied = 0
    live_at_checkpoint: list[int] = []
    if positions:
        path = os.path.join(qdir, ckpt.checkpoint_name(positions[-1]))
        with open(path, "rb") as f:
            idx = ckpt.decode(f.read(), path)
        applied, live_at_checkpoint = idx.applied, list(idx.state)
        redirect.update(idx.redirect)
    for rec in winspect.iter_log(qdir):
        records += 1
        nbytes += 24 + len(rec.payload)
        if rec.type == R.SEND:
            try:
                sends[rec.seq] = check_body(R.decode_send(rec.payload).body)
            except ValueError as exc:
                bad.append(f"record {rec.seq} at {rec.path}:{rec.offset}: {exc}")
                sends[rec.seq] = f"?{rec.seq}"
        if rec.seq >= applied:
            later.append(rec)
    # A message live at the checkpoint may have been copied forward (CARRY,
    # after the checkpoint) and its original trimmed: only a message still
    # live at the end needs its SEND record.
    live: dict[int, str | None] = {m: sends.get(m) for m in live_at_checkpoint}
    for rec in later:
        t = rec.type
        if t == R.SEND:
            live[rec.seq] = sends[rec.seq]
        elif t in (R.DELETE, R.MOVED):
            for m in R.decode_seqs(rec.payload):
                while m not in live and m in redirect:
                    m = redirect[m]
                live.pop(m, None)
        elif t == _CARRY:
            # Compaction copied each message: the copy replaces the original
            # if the original was still live, else it goes too.
            for new, old, _lease, _deadline, _orig in R.decode_carry(rec.payload):
                if old in live:
                    del live[old]
                    redirect[old] = new
                else:
                    live.pop(new, None)
        elif t == R.PURGE:
            upto = R.decode_purge(rec.payload)
            for m in [m for m in live if m < upto]:
                del live[m]
    for m in sorted(m for m, key in live.items() if key is None):
        bad.append(f"message {m} is live but its SEND record is not in the log")
        del live[m]
    return live, records, nbytes, len(winspect.segment_files(qdir)), bad


def _drain(data: str, ledger: Ledger, result: BenchResult, opts: dict, vt: int) -> None:
    """Receives every message left, with a clock past every lease."""
    shift = vt + 60.0
    drained: set[str] = set()
    store_now = walq.StoreClock(data).now  # the store's time, as the workers' leases were
    with walq.open(data, clock=lambda: store_now() + shift, **opts) as b:
        q = b.get_queue(QUEUE)
        while True:
            msgs = q.receive(1000, wait=0)
            if not msgs:
                break
            for m in msgs:
                try:
                    key = check_body(m.body)
                except ValueError as exc:
                    result.corrupt.append(f"drain: message {m.message_id}: {exc}")
                    continue
                if key in ledger.deleted_at:
                    result.duplicated.append(key)
                if key not in ledger.confirmed:
                    result.unconfirmed_stored += 1
                drained.add(key)
                result.drained += 1
            q.delete_batch([m.receipt for m in msgs])
    result.lost = sorted(ledger.confirmed - ledger.attempted - drained)


def _is_ready(report: str) -> bool:
    try:
        return os.path.getsize(report) > 0
    except FileNotFoundError:
        return False


def _all_ready(workers) -> float:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(_is_ready(r) or p.poll() is not None for _n, p, r, _e, _s in workers):
            break
        time.sleep(0.002)
    return time.monotonic()


def _sleep_until(t: float) -> None:
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def _kill(proc: subprocess.Popen) -> None:
    try:
        proc.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip().splitlines()
    except FileNotFoundError:
        return []


# -- reporting --------------------------------------------------------------------------------


def cycle_note(c: Cycle) -> str:
    """A short progress note for one cycle."""
    return f"cycle {c.index}: open {c.open_s * 1000:.1f} ms, {c.confirmed} sent, {c.deleted} deleted" + \
        (f", {len(c.problems)} PROBLEMS" if c.problems else "")


def format_summary(r: BenchResult) -> str:
    cfg = r.config
    pct = r.open_percentiles()
    kill = "all at once (killpg)" if cfg["kill_group"] else "each at its own random moment"
    biggest = max(r.cycles, key=lambda c: c.log_bytes, default=None)
    lines = [
        f"crash-bench: {len(r.cycles)} cycles in {r.seconds:.1f}s, {cfg['producers']} producers + "
        f"{cfg['consumers']} consumers killed {kill}, durability={cfg['durability']}, seed {cfg['seed']}",
    ]
    if pct:
        lines.append(
            f"recovery (open) time: p50 {pct['p50'] * 1000:.1f} ms  p90 {pct['p90'] * 1000:.1f} ms  "
            f"p99 {pct['p99'] * 1000:.1f} ms  max {pct['max'] * 1000:.1f} ms"
            + (f"  (log up to {biggest.log_bytes / 2**20:.1f} MiB, {biggest.log_records} records)" if biggest else ""))
    lines += [
        f"messages checked: {r.messages_checked}  ({r.confirmed} confirmed sends, {r.deliveries} deliveries, "
        f"{r.drained} drained at the end; {r.deleted} confirmed deletes, {r.redelivered} redelivered after their "
        f"lease ran out or was given up)",
        f"lost: {len(r.lost)}   duplicated (delivered after delete): {len(r.duplicated)}   "
        f"corrupt: {len(r.corrupt)}",
        "OK: every invariant held" if r.ok else f"FAILED: {len(r.violations)} violations",
    ]
    lines += [f"  - {v}" for v in r.violations[:20]]
    return "\n".join(lines)


def plot(r: BenchResult, path: str) -> None:
    """Recovery (open) time against the size of the queue's log, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [c.log_bytes / 2**20 for c in r.cycles if c.open_s]
    ys = [c.open_s * 1000 for c in r.cycles if c.open_s]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = ax.scatter(xs, ys, s=18, c=[c.index for c in r.cycles if c.open_s], cmap="viridis")
    fig.colorbar(points, ax=ax, label="cycle")
    ax.set_xlabel("queue log size (MiB of records)")
    ax.set_ylabel("recovery + index load time (ms)")
    cfg = r.config
    ax.set_title(f"walq crash-bench: {len(xs)} kill -9 cycles, durability={cfg['durability']}")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the worker processes --------------------------------------------------------------------


class _Report:
    """Report lines, one write() each, appended to a file."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def __call__(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


def producer(q, report: _Report, wid: str, rng: random.Random) -> None:
    i = 0
    parent = os.getppid()
    # The parent kills every worker; if it died first, nobody would, and an
    # orphan would load the machine forever.
    while os.getppid() == parent:
        if rng.random() < 0.5:
            key = f"{wid}.{i}"
            i += 1
            q.send(make_body(key), attributes={"key": key})
            report(f"C {key}")
        else:
            keys = [f"{wid}.{i + j}" for j in range(rng.randint(2, 20))]
            i += len(keys)
            res = q.send_batch([{"body": make_body(k), "attributes": {"key": k}} for k in keys])
            if res.successful:
                report("C " + " ".join(keys[j] for j, _r in res.successful))
            for j, err in res.failed:
                report(f"E send {keys[j]}: {err}")


def consumer(q, report: _Report, rng: random.Random, vt: int, checkpoint_every: int) -> None:
    deleted = 0
    parent = os.getppid()
    while os.getppid() == parent:  # see producer()
        t0 = time.monotonic()
        msgs = q.receive(rng.randint(1, 10), wait=0.1, visibility_timeout=vt)
        if not msgs:
            continue
        good = []
        for m in msgs:
            try:
                key = check_body(m.body)
                if m.attributes.get("key") != key:
                    raise ValueError(f"attribute key {m.attributes.get('key')!r} does not match body key {key!r}")
            except ValueError as exc:
                report(f"X {m.message_id} {exc}")
                continue
            good.append((key, m))
        if not good:
            continue
        report(f"R {t0!r} " + " ".join(k for k, _m in good))
        todo = []
        for key, m in good:
            r = rng.random()
            if r < 0.04:
                continue  # abandoned: its lease runs out and it comes back
            if r < 0.07:
                try:
                    m.change_visibility(0)  # handed back at once
                except WalqError:
                    pass
                continue
            todo.append((key, m))
        if not todo:
            continue
        report("A " + " ".join(k for k, _m in todo))
        res = q.delete_batch([m.receipt for _k, m in todo])
        t1 = time.monotonic()
        if res.successful:
            report(f"D {t1!r} " + " ".join(todo[j][0] for j, _r in res.successful))
        for j, err in res.failed:
            report(f"E delete {todo[j][0]}: {err}")
        deleted += len(res.successful)
        if deleted >= checkpoint_every:
            q.checkpoint()
            deleted = 0


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m walq.tools.crashbench", description="walq crash-bench worker")
    ap.add_argument("role", choices=["producer", "consumer"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--durability", default="always")
    ap.add_argument("--segment-size", type=int, default=1 << 20)
    ap.add_argument("--visibility-timeout", type=int, default=2)
    ap.add_argument("--checkpoint-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    b = walq.open(a.data, durability=a.durability, segment_size=a.segment_size)
    q = b.get_queue(QUEUE)
    report = _Report(a.report)
    report("S")  # ready: the store is open
    if a.role == "producer":
        producer(q, report, a.id, rng)
    else:
        consumer(q, report, rng, a.visibility_timeout, a.checkpoint_every)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
