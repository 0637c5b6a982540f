"""``walq stats`` (counts per queue, once or watched) and ``walq compact``."""

from __future__ import annotations

import os
import sys
import time

import click

from walq.cli.common import Seconds, WalqCommand, data_option, echo_json, human_age, human_bytes, open_store, store_path
from walq.errors import QueueDoesNotExist
from walq.tools.progress import Progress
from walq.tools.table import format_table


def stats_rows(broker, prefix: str = "") -> list[dict]:
    """One dict per queue: its kind and QueueStats fields."""
    out = []
    for name in broker.list_queues(prefix):
        try:
            q = broker.get_queue(name)
            s = q.stats()
            fifo = q.attributes.fifo
        except QueueDoesNotExist:
            continue  # deleted meanwhile
        out.append({"queue": name, "fifo": fifo, "visible": s.visible, "in_flight": s.in_flight,
                    "delayed": s.delayed, "oldest_age_s": round(s.oldest_age_s, 3), "total": s.total,
                    "disk_bytes": s.disk_bytes})
    return out


def delivery_rows(broker) -> list[dict]:
    """One dict per HTTP or handler subscription of a topic and per HTTP or
    handler target of a bus: what the workers counted (delivered, failed
    attempts, dead-lettered, dropped) and how many deliveries wait.  The
    catalogs are read raw, so this works on a store opened read-only."""
    from walq.bus import inspect as bus_inspect
    from walq.bus.bus import DELIVERED, rule_arn
    from walq.topic import inspect as topic_inspect
    from walq.topic.topic import topic_arn
    from walq.worker import counters

    found = []  # (key, source, kind, endpoint, internal queue)
    topics, _problems = topic_inspect._catalog_state(broker.path)
    for name, t in sorted(topics.items()):
        arn = topic_arn(broker, name)
        for sub in t["subs"].values():
            if sub["protocol"] != "sqs":
                found.append((f"{arn}:{sub['id']}", f"topic {name}", sub["protocol"], sub["endpoint"], sub["queue"]))
    for e in sorted(bus_inspect.catalog_state(broker.path).buses.values(), key=lambda e: e.name):
        for rule, targets in e.targets.items():
            arn = rule_arn(broker, e.name, rule)
            for t in targets:
                if t.get("kind") in DELIVERED:
                    found.append((f"{arn}:{t['id']}", f"rule {arn.split(':rule/', 1)[1]}", t["kind"],
                                  t.get("endpoint", ""), t["queue"]))
    counts = counters.read_all(broker) if found else {}
    out = []
    for key, source, kind, endpoint, queue in found:
        c = counts.get(key, counters.DeliveryCounts())
        try:
            qs = broker.get_queue(queue).stats()
            pending = qs.visible + qs.in_flight + qs.delayed
        except QueueDoesNotExist:
            pending = 0
        out.append({"target": key, "source": source, "kind": kind, "endpoint": endpoint, "delivered": c.delivered,
                    "failed": c.failed, "dead_lettered": c.dead_lettered, "dropped": c.dropped, "pending": pending})
    return out


def delivery_table(rows: list[dict]) -> str:
    """The deliveries part of the ``walq stats`` table."""
    return format_table(
        ["DELIVERIES OF", "KIND", "ENDPOINT", "DELIVERED", "FAILED", "DEAD-LETTERED", "DROPPED", "PENDING"],
        [[r["source"], r["kind"], r["endpoint"], r["delivered"], r["failed"], r["dead_lettered"], r["dropped"],
          r["pending"]] for r in rows],
        right={3, 4, 5, 6, 7},
    )


def stats_table(rows: list[dict]) -> str:
    """The ``walq stats`` table."""
    if not rows:
        return "(no queues)"
    return format_table(
        ["QUEUE", "TYPE", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST", "DISK"],
        [[r["queue"], "fifo" if r["fifo"] else "standard", r["visible"], r["in_flight"], r["delayed"],
          human_age(r["oldest_age_s"]), human_bytes(r["disk_bytes"])] for r in rows],
        right={2, 3, 4, 5, 6},
    )




@click.command(cls=WalqCommand)
@click.option("--prefix", default="", help="Only queues whose name starts with this (and no deliveries).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue (and per delivery target) "
              "instead of a table.")
@click.option("--watch", is_flag=True, help="Refresh until interrupted (Ctrl-C).")
@click.option("--interval", type=Seconds(0.01, 86400), default=2.0, show_default=True,
              help="Seconds between refreshes (0.01-86400).")
@click.option("--count", type=click.IntRange(1), default=None, help="With --watch: stop after this many refreshes.")
@data_option
@click.pass_context
def stats(ctx, prefix, as_json, watch, interval, count, data):
    """Show every queue: visible, in flight, delayed, oldest age, disk use;
    then every HTTP and handler subscription and bus target: what workers
    delivered, failed, dead-lettered and dropped, and what waits (not with
    --prefix; with --json, one object per target with a "target" key)."""
    path = store_path(ctx, data)
    tty = sys.stdout.isatty()
    with open_store(path) as b:
        n = 0
        try:
            while True:
                rows = stats_rows(b, prefix)
                deliveries = [] if prefix else delivery_rows(b)
                if as_json:
                    for r in rows + deliveries:
                        echo_json(r)
                else:
                    if watch and tty:
                        click.clear()
                    if watch:
                        click.echo(f"walq stats  {os.path.abspath(path)}  {time.strftime('%H:%M:%S')}")
                    click.echo(stats_table(rows))
                    if deliveries:
                        click.echo("")
                        click.echo(delivery_table(deliveries))
                n += 1
                if not watch or (count is not None and n >= count):
                    return
                if not tty and not as_json:
                    click.echo("")
                time.sleep(interval)
        except KeyboardInterrupt:
            return


@click.command(cls=WalqCommand)
@click.argument("queue_names", metavar="[QUEUE]...", nargs=-1)
@data_option
@click.pass_context
def compact(ctx, queue_names, data):
    """Checkpoint QUEUEs (default: every queue) and remove the segments
    nothing live needs; prints the disk use before and after.

    walq does this by itself as records accumulate; this does it now (before
    a backup, or after a large purge).
    """
    path = store_path(ctx, data)
    with open_store(path, queue=queue_names[0] if queue_names else None) as b:
        names = list(queue_names) or b.list_queues()
        queues = [b.get_queue(n) for n in names]  # QueueDoesNotExist before any work
        rows = []
        with Progress(len(queues), "compact") as bar:
            for q in queues:
                before = q.stats().disk_bytes
                q.checkpoint()
                rows.append([q.name, human_bytes(before), human_bytes(q.stats().disk_bytes)])
                bar.advance(note=q.name)
    click.echo(format_table(["QUEUE", "DISK BEFORE", "DISK AFTER"], rows) if rows else "(no queues)")



COMMANDS = [stats, compact]
