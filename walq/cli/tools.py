"""``walq verify``, ``dump``, ``demo``, ``crash-bench`` and ``bench``: looking
at the files, and seeing walq work."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import click

from walq.tools import inspect as winspect
from walq.cli.common import (EXIT_DAMAGE, EXIT_OK, CliError, Seconds, WalqCommand, data_option, echo_json, human_bytes, open_store,
                             store_path)
from walq.cli.stats import stats_rows, stats_table
from walq.errors import QueueDoesNotExist
from walq.tools.progress import Progress


@click.command(cls=WalqCommand)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--strict", is_flag=True,
              help="Also call a torn record damage when log.ctl says it was published (use after kill -9, "
                   "not after a power cut).")
@click.option("--quiet", "-q", is_flag=True, help="Print damage only (no notes, no progress).")
@data_option
@click.pass_context
def verify(ctx, as_json, strict, quiet, data):
    """Check every checksum in the store without opening it.

    Reads every segment of every log (the catalogs, each queue, topic and
    event bus, each archive) and every checkpoint, checks each bus's outbox
    mark and cursor and what rules' targets name, and prints each problem
    with its file, offset and bytes.
    DAMAGE lines make the exit code 1; TORN and NOTE lines are what a crash
    normally leaves (the next open sets torn tails aside) and do not.
    Safe to run while other processes use the store: it writes nothing, and
    reads each log as of one moment (holding its append lock while it maps
    the files, so a segment trimmed meanwhile is not mistaken for damage).
    """
    path = store_path(ctx, data)
    if not winspect.is_store(path):
        raise CliError(f"no walq store at {path}")
    with Progress(winspect.count_files(path), "verify", enabled=not quiet and not as_json) as bar:
        report = winspect.verify_store(path, strict=strict,
                                       progress=lambda p: bar.advance(note=os.path.relpath(p, path)))
    if as_json:
        echo_json(report.to_json())
    else:
        for p in report.problems:
            if p.kind == winspect.DAMAGE or not quiet:
                click.echo(p.describe())
        if not quiet:
            verdict = "OK" if report.ok else f"DAMAGED ({len(report.damage)} problem" \
                f"{'s' if len(report.damage) != 1 else ''})"
            click.echo(f"{verdict}: {report.logs} logs, {report.segments} segments, {report.records} records, "
                       f"{report.checkpoints} checkpoints, {human_bytes(report.bytes_checked)} read")
    ctx.exit(EXIT_OK if report.ok else EXIT_DAMAGE)


@click.command(cls=WalqCommand)
@click.argument("queue_name", metavar="[QUEUE]", required=False)
@click.option("--catalog", is_flag=True,
              help="Dump the catalog log instead of a queue, then each topic and event bus (rules, targets, "
                   "archives, replays).")
@click.option("--segment", type=click.Path(exists=True, dir_okay=False), help="Dump one segment file.")
@click.option("--from", "start", type=click.IntRange(0), default=0, help="First sequence number to print.")
@click.option("--limit", type=click.IntRange(0), default=None, help="Print at most this many records.")
@click.option("--no-body", is_flag=True, help="Print body sizes instead of bodies.")
@data_option
@click.pass_context
def dump(ctx, queue_name, catalog, segment, start, limit, no_body, data):
    """Print the records of QUEUE's log (or --catalog, or --segment FILE) as
    JSON lines: sends with their bodies, leases, deletes, visibility changes.

    Reads the files directly, without locks or recovery. Damage is printed
    inline as a {"damage": ...} line and reading goes on past it (exit 1).
    """
    if sum(bool(x) for x in (queue_name, catalog, segment)) != 1:
        raise click.UsageError("give exactly one of QUEUE, --catalog or --segment FILE")
    path = store_path(ctx, data)
    if segment:
        records = winspect.dump_segment(segment, start=start, bodies=not no_body)
    else:
        if not winspect.is_store(path):
            if queue_name:
                raise QueueDoesNotExist(f"queue {queue_name!r} does not exist (no walq store at {path})")
            raise CliError(f"no walq store at {path}")
        if catalog:
            records = winspect.dump_log(os.path.join(path, "catalog"), kind="catalog", start=start)
        else:
            records = winspect.dump_log(winspect.queue_dir(path, queue_name), kind="queue", start=start,
                                        bodies=not no_body)
    damaged = False
    for i, rec in enumerate(records):
        if limit is not None and i >= limit:
            break
        damaged = damaged or "damage" in rec
        echo_json(rec)
    if damaged:
        click.echo(f"damage found (reported inline); run `walq repair --data {path}`", err=True)
        ctx.exit(EXIT_DAMAGE)


@click.command(cls=WalqCommand)
@click.option("--dry-run", is_flag=True, help="Report what would be done and lost; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@data_option
@click.pass_context
def repair(ctx, dry_run, as_json, data):
    """Make a damaged store usable again, keeping every record that validates.

    Needs the store to itself (refused while any other process has it
    open). Damaged and replaced files go to DIR/quarantine/<time>/ with a
    report (report.json, report.txt) naming every lost record by sequence,
    and message ids where readable. Records set aside as torn tails that
    still validate come back; a damaged checkpoint falls back to an older
    one or a full replay; the catalog is rebuilt from each queue's
    queue.json. Exit code 0 when the store was intact or is now repaired.
    """
    from walq.tools.repair import repair as repair_store

    path = store_path(ctx, data)
    if not winspect.is_store(path):
        raise CliError(f"no walq store at {path}")
    report = repair_store(path, dry_run=dry_run)
    if as_json:
        echo_json(report.to_json())
    else:
        click.echo(report.to_text(), nl=False)
    ctx.exit(EXIT_OK)


# -- demonstrations and benchmarks -------------------------------------------------------


@click.command(cls=WalqCommand)
@click.option("--baristas", type=click.IntRange(1, 16), default=3, show_default=True,
              help="Barista (consumer) processes.")
@click.option("--orders", type=click.IntRange(1, 1000), default=12, show_default=True, help="Orders to take.")
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same orders).")
@click.option("--kill/--no-kill", default=True, show_default=True,
              help="kill -9 a barista in the middle of an order (and start another).")
@data_option
@click.pass_context
def demo(ctx, baristas, orders, seed, kill, data):
    """Run the coffee-shop example: an order-taker process sends orders,
    barista processes make them, one barista is killed with SIGKILL while
    it holds an order (which comes back when its lease ends and is made by
    another), an order nobody can make ends in the dead-letter queue, and
    the demo checks that every confirmed order was made exactly once.

    Uses (and first recreates) the queues coffee-orders and
    coffee-orders-dlq in the store; other queues are left alone.
    """
    from walq.tools import demo as wdemo

    path = store_path(ctx, data)
    result = wdemo.run(path, baristas=baristas, orders=orders, seed=seed, kill=kill, echo=click.echo)
    click.echo("")
    with open_store(path) as b:
        click.echo(stats_table(stats_rows(b, wdemo.PREFIX)))
    click.echo("")
    click.echo(f"Look around: walq --data {path} stats | dump {wdemo.DLQ} | receive {wdemo.DLQ}")
    if not result.ok:
        raise CliError(f"the demo did not finish as expected: {result.problem}")


@click.command("crash-bench", cls=WalqCommand)
@click.option("--cycles", type=click.IntRange(1), default=20, show_default=True, help="Kill-and-recover cycles.")
@click.option("--producers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="Producer processes per cycle (send and send_batch).")
@click.option("--consumers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="Consumer processes per cycle (receive, delete_batch, checkpoint).")
@click.option("--run-time", type=Seconds(0.01, 3600), default=1.0, show_default=True,
              help="Longest a worker runs before it is killed (seconds, 0.01-3600).")
@click.option("--kill-group", is_flag=True,
              help="Kill all workers at one moment with killpg (default: each at its own random moment).")
@click.option("--durability", type=click.Choice(["always", "batch", "os"]), default="always", show_default=True)
@click.option("--segment-size", type=click.IntRange(4096), default=1 << 20, show_default=True,
              help="Segment bytes (small: more rolls and trims under the kills).")
@click.option("--visibility-timeout", type=click.IntRange(1, 3600), default=2, show_default=True,
              help="Lease seconds: a killed consumer's messages come back after this.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=200, show_default=True,
              help="Deletes between the checkpoints each consumer writes.")
@click.option("--seed", type=int, default=None, help="Random seed for kill times and workloads.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default="crash-bench.json",
              show_default=True, help="Where to write the JSON report.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw recovery time against store size to this PNG (needs the 'plot' extra).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Store to crash (absent, empty, or one an earlier crash-bench made; kept afterwards). "
                   "Default: a fresh temporary directory, removed unless an invariant was violated.")
@click.pass_context
def crash_bench(ctx, cycles, producers, consumers, run_time, kill_group, durability, segment_size,
                visibility_timeout, checkpoint_every, seed, report_path, plot_path, directory):
    """Kill producers and consumers with SIGKILL over and over, recover, and
    check that no confirmed send is lost, no deleted message comes back and
    no corrupt record is returned.

    Runs in a store of its own (never the --data store): a fresh temporary
    directory, or --dir; the queue there is "crashbench".  Each
    cycle starts the worker processes, kills them at random moments, then
    checks every file (verify --strict), reopens the store (timing the
    recovery) and compares the queue's contents with what the workers
    confirmed.  Prints recovery-time percentiles and counts and writes a JSON
    report; exits 1 if an invariant was violated.
    """
    from walq.tools import crashbench

    if producers + consumers == 0:
        raise click.UsageError("need at least one producer or consumer")
    if plot_path:
        problem = crashbench.plotting_error()  # fail before the run, not after it
        if problem:
            raise CliError(problem)
    path = _crash_dir(directory)
    with Progress(cycles, "crash-bench") as bar:
        result = crashbench.run(
            path, cycles=cycles, producers=producers, consumers=consumers, run_time=run_time,
            kill_group=kill_group, durability=durability, segment_size=segment_size,
            visibility_timeout=visibility_timeout, checkpoint_every=checkpoint_every, seed=seed,
            on_cycle=lambda c: bar.advance(note=crashbench.cycle_note(c)), log=bar.log,
        )
    with open(report_path, "w") as f:
        json.dump(result.to_json(), f, indent=2)
        f.write("\n")
    click.echo(crashbench.format_summary(result))
    click.echo(f"report: {report_path}")
    if plot_path:
        crashbench.plot(result, plot_path)
        click.echo(f"plot: {plot_path}")
    if not result.ok:
        n = len(result.violations)
        raise CliError(f"{n} invariant violation{'s' if n != 1 else ''} (listed above and in {report_path}; "
                       f"the store is kept in {path})", EXIT_DAMAGE)
    if directory is None:
        shutil.rmtree(path, ignore_errors=True)


def _crash_dir(directory: str | None) -> str:
    """The store crash-bench may wreck: a new temporary directory, or
    ``--dir`` if it holds nothing else (an absent or empty directory, or a
    store whose only queue is crash-bench's own)."""
    from walq.tools import crashbench

    if directory is None:
        return tempfile.mkdtemp(prefix="walq-crash-bench-")
    if os.path.isdir(directory) and os.listdir(directory):
        queues = None
        if winspect.is_store(directory):
            with open_store(directory) as b:
                queues = b.list_queues()
        if queues is None or set(queues) - {crashbench.QUEUE}:
            raise click.BadParameter(f"{directory} holds other data; give an absent or empty directory",
                                     param_hint="--dir")
    return directory


@click.command(cls=WalqCommand)
@click.option("--seconds", type=Seconds(0.01, 600), default=1.0, show_default=True,
              help="Seconds per measurement (0.01-600).")
@click.option("--mode", "modes", type=click.Choice(["always", "batch", "os"]), multiple=True,
              help="Durability modes to measure (repeatable; default all three).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per measurement instead of a table.")
@data_option
@click.pass_context
def bench(ctx, seconds, modes, as_json, data):
    """Measure send, send_batch(100) and receive(10)+delete_batch throughput
    in each durability mode, on the disk that holds the store.

    Works in a temporary directory beside the store (removed afterwards);
    the disk's raw pwrite+fdatasync rate is measured first, for scale.
    """
    from walq.tools import benchmark

    path = store_path(ctx, data)
    modes = modes or ("always", "batch", "os")
    with Progress(benchmark.steps(modes), "bench", enabled=not as_json) as bar:
        result = benchmark.run(path, seconds=seconds, modes=modes, on_step=lambda note: bar.advance(note=note))
    if as_json:
        for row in result.rows:
            echo_json(row.to_json())
    else:
        click.echo(benchmark.format_table(result))


COMMANDS = [verify, dump, repair, demo, crash_bench, bench]
