"""The ``walq`` command: operate, inspect and crash-test a store.

    walq [--data DIR] COMMAND [ARGS]...

Every command works on the store directory given by ``--data`` (before or
after the command name), else ``$WALQ_DATA``, else ``./walq-data``.  Results
go to stdout (JSON lines where a script would parse them), progress and
errors to stderr.  The exit codes (``EXIT_*`` below) are listed in
``walq --help``; a walq error is one line (``Error: ...``), never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict

import click

import walq
from walq import inspect as winspect
from walq.errors import CorruptionError, QueueDoesNotExist, WalqError
from walq.progress import Progress

__all__ = ["main", "EXIT_OK", "EXIT_DAMAGE", "EXIT_USAGE", "EXIT_NO_QUEUE", "EXIT_ERROR"]

EXIT_OK = 0  # success
EXIT_DAMAGE = 1  # verify found damage, crash-bench found a violated invariant, a damaged store
EXIT_USAGE = 2  # bad options or arguments (click's own code)
EXIT_NO_QUEUE = 3  # the named queue does not exist
EXIT_ERROR = 4  # any other error: walq refused the request, a file could not be read, ...

DEFAULT_DATA = "./walq-data"

_EPILOG = f"""\b
Every command takes --data DIR (default: $WALQ_DATA, else {DEFAULT_DATA}).
\b
Exit codes:
  0  success
  1  damage found (verify, a damaged store) or an invariant violated (crash-bench)
  2  usage error: unknown option, missing or malformed argument
  3  the named queue does not exist
  4  any other error (walq refused the request, I/O error, missing extra)
"""


class CliError(click.ClickException):
    """An error printed as one line, with the exit code scripts rely on."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


class WalqGroup(click.Group):
    """Turns walq errors raised by any subcommand into one-line errors and exit codes."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except QueueDoesNotExist as exc:
            raise CliError(_one_line(exc), EXIT_NO_QUEUE) from None
        except CorruptionError as exc:
            raise CliError(f"damaged store: {_one_line(exc)} (run walq verify)", EXIT_DAMAGE) from None
        except WalqError as exc:
            raise CliError(_one_line(exc), EXIT_ERROR) from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise CliError(f"{exc.strerror or _one_line(exc)}{where}", EXIT_ERROR) from None


# -- shared options and helpers ------------------------------------------------------


def data_option(f):
    """``--data DIR`` on a subcommand (overrides the group's)."""
    return click.option("--data", "data", metavar="DIR", default=None,
                        help="Store directory (default: $WALQ_DATA, else ./walq-data).")(f)


def _data(ctx: click.Context, data: str | None) -> str:
    if data is not None:
        return data
    root = ctx.find_root()
    return (root.obj or {}).get("data") or os.environ.get("WALQ_DATA") or DEFAULT_DATA


@contextlib.contextmanager
def _broker(data: str, *, create: bool = False, queue: str | None = None):
    """Opens the store; refuses to create one by accident (a mistyped --data)."""
    if not create and not winspect.is_store(data):
        if queue is not None:
            raise QueueDoesNotExist(f"queue {queue!r} does not exist (no walq store at {data})")
        raise CliError(f"no walq store at {data} (create one with: walq --data {data} queue create NAME)")
    b = walq.open(data)
    try:
        yield b
    finally:
        b.close()


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")))


def _attrs_json(attrs) -> dict:
    return asdict(attrs)  # dead_letter becomes {"queue", "max_receives"} or None


def _age(seconds: float) -> str:
    s = int(seconds)
    if seconds < 10:
        return f"{seconds:.1f}s" if seconds else "-"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_table(headers: list[str], rows: list[list], right: set[int] | None = None) -> str:
    """A plain aligned table (columns in ``right`` are right-aligned)."""
    right = right if right is not None else set(range(1, len(headers)))
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     .rstrip())
    return "\n".join(lines)


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


def stats_table(rows: list[dict]) -> str:
    """The ``walq stats`` table."""
    if not rows:
        return "(no queues)"
    return format_table(
        ["QUEUE", "TYPE", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST", "DISK"],
        [[r["queue"], "fifo" if r["fifo"] else "standard", r["visible"], r["in_flight"], r["delayed"],
          _age(r["oldest_age_s"]), _bytes(r["disk_bytes"])] for r in rows],
        right={2, 3, 4, 5, 6},
    )


def _message_json(m) -> dict:
    out = {"message_id": m.message_id}
    out.update(winspect.body_json(m.body))
    out["attributes"] = winspect.attributes_json(m.attributes)
    out.update(receipt=m.receipt, receive_count=m.receive_count, sent_at=m.sent_at,
               first_received_at=m.first_received_at)
    for key in ("group", "dedup_id", "sequence"):
        if getattr(m, key) is not None:
            out[key] = getattr(m, key)
    return out


def _parse_attr(text: str):
    """``NAME=VALUE`` (String), ``NAME:Number=42``, ``NAME:Binary=<base64>``."""
    if "=" not in text:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE (or NAME:Number=VALUE, NAME:Binary=BASE64)",
                                 param_hint="--attr")
    name, value = text.split("=", 1)
    kind = "String"
    if ":" in name:
        name, kind = name.rsplit(":", 1)
    kind = kind.capitalize()
    if kind == "String":
        return name, value
    if kind == "Number":
        try:
            return name, int(value)
        except ValueError:
            try:
                return name, float(value)
            except ValueError:
                raise click.BadParameter(f"{text!r}: {value!r} is not a number", param_hint="--attr") from None
    if kind == "Binary":
        try:
            return name, base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise click.BadParameter(f"{text!r}: {value!r} is not base64", param_hint="--attr") from None
    raise click.BadParameter(f"{text!r}: type must be String, Number or Binary", param_hint="--attr")


_INT_SETTINGS = ("visibility_timeout", "retention", "delay", "max_message_size", "receive_wait")
_BOOL = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False, "off": False}


def _parse_setting(text: str) -> tuple[str, object]:
    """``key=value`` for ``walq queue set``: ints, booleans, ``dead_letter=QUEUE:MAX|none``."""
    if "=" not in text:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="SETTINGS")
    key, value = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if key == "dead_letter":
        if value.lower() in ("", "none", "off"):
            return key, None
        if ":" not in value:
            raise click.BadParameter(f"{text!r}: use dead_letter=QUEUE:MAX_RECEIVES or dead_letter=none",
                                     param_hint="SETTINGS")
        q, n = value.rsplit(":", 1)
        try:
            return key, walq.RedrivePolicy(q, int(n))
        except ValueError as exc:
            if isinstance(exc, WalqError):
                raise
            raise click.BadParameter(f"{text!r}: max receives {n!r} is not an integer", param_hint="SETTINGS") \
                from None
    if key == "content_based_dedup":
        if value.lower() not in _BOOL:
            raise click.BadParameter(f"{text!r}: use true or false", param_hint="SETTINGS")
        return key, _BOOL[value.lower()]
    if key not in _INT_SETTINGS:
        return key, value  # walq names the problem: unknown key, or one that cannot change
    try:
        return key, int(value)
    except ValueError:
        raise click.BadParameter(f"{text!r}: {value!r} is not an integer", param_hint="SETTINGS") from None


# -- the group -------------------------------------------------------------------------


@click.group(cls=WalqGroup, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", metavar="DIR", envvar="WALQ_DATA", default=DEFAULT_DATA, show_default=True,
              help="Store directory [env: WALQ_DATA].")
@click.version_option(walq.__version__, prog_name="walq")
@click.pass_context
def main(ctx: click.Context, data: str) -> None:
    """walq: persistent SQS-style message queues in a local directory.

    Operate queues (queue, send, receive, ack, purge, stats, dlq), inspect
    the files (verify, dump), and see it work (demo, crash-bench, bench).
    """
    ctx.ensure_object(dict)
    ctx.obj["data"] = data


# -- queue -----------------------------------------------------------------------------------


@main.group(cls=WalqGroup)
def queue() -> None:
    """Create, list, delete and configure queues."""


@queue.command("create")
@click.argument("name")
@click.option("--visibility-timeout", type=int, help="Seconds a received message stays leased (0-43200; 30).")
@click.option("--retention", type=int, help="Seconds a message is kept (60-1209600; 345600 = 4 days).")
@click.option("--delay", type=int, help="Seconds before a new message becomes visible (0-900; 0).")
@click.option("--max-message-size", type=int, help="Bytes of body plus attributes (1024-1048576).")
@click.option("--receive-wait", type=int, help="Default long-poll seconds for receive (0-20; 0).")
@click.option("--dead-letter", metavar="QUEUE", help="Dead-letter queue (must exist, same kind).")
@click.option("--max-receives", type=int, default=None, help="Receives before a message moves to --dead-letter (5).")
@click.option("--content-based-dedup", is_flag=True, help="FIFO: deduplicate by SHA-256 of the body.")
@click.option("--dedup-scope", type=click.Choice(["queue", "group"]), help="FIFO: dedup per queue or per group.")
@data_option
@click.pass_context
def queue_create(ctx, name, visibility_timeout, retention, delay, max_message_size, receive_wait, dead_letter,
                 max_receives, content_based_dedup, dedup_scope, data):
    """Create queue NAME (FIFO if NAME ends in .fifo); prints its attributes.

    Creating a queue that exists with the same attributes is not an error.
    """
    if max_receives is not None and dead_letter is None:
        raise click.UsageError("--max-receives needs --dead-letter")
    kw = {k: v for k, v in dict(visibility_timeout=visibility_timeout, retention=retention, delay=delay,
                                max_message_size=max_message_size, receive_wait=receive_wait,
                                dedup_scope=dedup_scope).items() if v is not None}
    if content_based_dedup:
        kw["content_based_dedup"] = True
    if dead_letter is not None:
        kw["dead_letter"] = walq.RedrivePolicy(dead_letter, 5 if max_receives is None else max_receives)
    with _broker(_data(ctx, data), create=True) as b:
        q = b.create_queue(name, **kw)
        _echo_json(_attrs_json(q.attributes))


@queue.command("list")
@click.option("--prefix", default="", help="Only names starting with this.")
@data_option
@click.pass_context
def queue_list(ctx, prefix, data):
    """List queue names, one per line."""
    with _broker(_data(ctx, data)) as b:
        for name in b.list_queues(prefix):
            click.echo(name)


@queue.command("delete")
@click.argument("name")
@data_option
@click.pass_context
def queue_delete(ctx, name, data):
    """Delete queue NAME and all its messages."""
    with _broker(_data(ctx, data), queue=name) as b:
        b.delete_queue(name)
        click.echo(f"deleted queue {name}")


@queue.command("attributes")
@click.argument("name")
@data_option
@click.pass_context
def queue_attributes(ctx, name, data):
    """Print queue NAME's attributes as JSON."""
    with _broker(_data(ctx, data), queue=name) as b:
        _echo_json(_attrs_json(b.get_queue(name).attributes))


@queue.command("set")
@click.argument("name")
@click.argument("settings", nargs=-1, required=True, metavar="KEY=VALUE...")
@data_option
@click.pass_context
def queue_set(ctx, name, settings, data):
    """Change attributes of queue NAME; prints the new attributes.

    \b
    Keys: visibility_timeout, retention, delay, max_message_size,
    receive_wait (integers, seconds or bytes), content_based_dedup
    (true/false), dedup_scope (queue/group), dead_letter (QUEUE:MAX_RECEIVES
    or none).  Dashes work too: visibility-timeout=60.
    """
    changes = dict(_parse_setting(s) for s in settings)
    with _broker(_data(ctx, data), queue=name) as b:
        q = b.get_queue(name)
        q.set_attributes(**changes)
        _echo_json(_attrs_json(q.attributes))


# -- messages ----------------------------------------------------------------------------------


@main.command()
@click.argument("queue_name", metavar="QUEUE")
@click.argument("body", required=False)
@click.option("--attr", "attrs", multiple=True, metavar="NAME[:TYPE]=VALUE",
              help="Message attribute (repeatable); TYPE is String (default), Number or Binary (base64).")
@click.option("--group", help="Message group (required for FIFO queues).")
@click.option("--dedup-id", help="FIFO deduplication id.")
@click.option("--delay", type=int, help="Seconds before the message is visible (standard queues, 0-900).")
@click.option("--lines", is_flag=True, help="Send each non-empty line of the input as its own message.")
@data_option
@click.pass_context
def send(ctx, queue_name, body, attrs, group, dedup_id, delay, lines, data):
    """Send BODY (or standard input) to QUEUE; prints {"message_id": ...}.

    With no BODY, or BODY "-", the message is read from standard input.
    """
    attributes = dict(_parse_attr(a) for a in attrs) or None
    if body is None or body == "-":
        stdin = sys.stdin.buffer
        if stdin.isatty():
            raise click.UsageError("give a BODY argument or pipe the message on standard input")
        raw = stdin.read()
    else:
        raw = body.encode("utf-8")
    with _broker(_data(ctx, data), queue=queue_name) as b:
        q = b.get_queue(queue_name)
        if not lines:
            r = q.send(raw, attributes=attributes, delay=delay, group=group, dedup_id=dedup_id)
            _echo_json(_send_json(r))
            return
        entries = [ln for ln in raw.splitlines() if ln.strip()]
        if not entries:
            raise CliError("no non-empty lines to send")
        failed = 0
        for start in range(0, len(entries), 100):
            chunk = [dict(body=e, attributes=attributes, delay=delay, group=group, dedup_id=dedup_id)
                     for e in entries[start : start + 100]]
            res = q.send_batch(chunk)
            for i, r in res.successful:
                _echo_json(_send_json(r))
            for i, err in res.failed:
                failed += 1
                click.echo(f"Error: line {start + i + 1}: {_one_line(err)}", err=True)
        if failed:
            raise CliError(f"{failed} of {len(entries)} messages were refused")


def _send_json(r) -> dict:
    out = {"message_id": r.message_id}
    if r.sequence is not None:
        out["sequence"] = r.sequence
    if r.duplicate:
        out["duplicate"] = True
    return out


@main.command()
@click.argument("queue_name", metavar="QUEUE")
@click.option("--max", "max_messages", type=int, default=1, show_default=True, help="Messages to take (1-1000).")
@click.option("--wait", type=float, default=None, help="Seconds to long-poll (0-20; default: the queue's).")
@click.option("--visibility-timeout", type=float, default=None, help="Lease seconds (default: the queue's).")
@click.option("--ack", is_flag=True, help="Delete the messages after printing them.")
@data_option
@click.pass_context
def receive(ctx, queue_name, max_messages, wait, visibility_timeout, ack, data):
    """Receive messages from QUEUE; prints one JSON object per message.

    Each carries a "receipt": pass it to `walq ack` once the message is
    handled, or use --ack to delete at once.  No output means no message.
    """
    with _broker(_data(ctx, data), queue=queue_name) as b:
        q = b.get_queue(queue_name)
        msgs = q.receive(max_messages, wait=wait, visibility_timeout=visibility_timeout)
        for m in msgs:
            _echo_json(_message_json(m))
        if ack and msgs:
            res = q.delete_batch([m.receipt for m in msgs])
            if res.failed:
                raise CliError(f"{len(res.failed)} of {len(msgs)} acks failed: {_one_line(res.failed[0][1])}")


@main.command()
@click.argument("queue_name", metavar="QUEUE")
@click.argument("receipts", nargs=-1)
@data_option
@click.pass_context
def ack(ctx, queue_name, receipts, data):
    """Delete received messages by RECEIPTS (or one receipt per stdin line)."""
    if not receipts or receipts == ("-",):
        stdin = sys.stdin
        if stdin.isatty():
            raise click.UsageError("give RECEIPTS or pipe them on standard input, one per line")
        receipts = tuple(ln.strip() for ln in stdin if ln.strip())
        if not receipts:
            raise click.UsageError("no receipts on standard input")
    with _broker(_data(ctx, data), queue=queue_name) as b:
        q = b.get_queue(queue_name)
        failed = 0
        for start in range(0, len(receipts), 1000):
            res = q.delete_batch(list(receipts[start : start + 1000]))
            for i, err in res.failed:
                if len(receipts) == 1:
                    raise CliError(_one_line(err))
                failed += 1
                click.echo(f"Error: receipt {receipts[start + i]!r}: {_one_line(err)}", err=True)
        if failed:
            raise CliError(f"{failed} of {len(receipts)} receipts were refused")
        click.echo(f"acknowledged {len(receipts)} message{'s' if len(receipts) != 1 else ''}")


@main.command()
@click.argument("queue_name", metavar="QUEUE")
@data_option
@click.pass_context
def purge(ctx, queue_name, data):
    """Drop every message of QUEUE, in flight included."""
    with _broker(_data(ctx, data), queue=queue_name) as b:
        b.get_queue(queue_name).purge()
        click.echo(f"purged queue {queue_name}")


@main.command()
@click.option("--prefix", default="", help="Only queues whose name starts with this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue instead of a table.")
@click.option("--watch", is_flag=True, help="Refresh until interrupted (Ctrl-C).")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--count", type=int, default=None, help="With --watch: stop after this many refreshes.")
@data_option
@click.pass_context
def stats(ctx, prefix, as_json, watch, interval, count, data):
    """Show every queue: visible, in flight, delayed, oldest age, disk use."""
    path = _data(ctx, data)
    if interval <= 0:
        raise click.BadParameter("must be positive", param_hint="--interval")
    tty = sys.stdout.isatty()
    with _broker(path) as b:
        n = 0
        try:
            while True:
                rows = stats_rows(b, prefix)
                if as_json:
                    for r in rows:
                        _echo_json(r)
                else:
                    if watch and tty:
                        click.clear()
                    if watch:
                        click.echo(f"walq stats  {os.path.abspath(path)}  {time.strftime('%H:%M:%S')}")
                    click.echo(stats_table(rows))
                n += 1
                if not watch or (count is not None and n >= count):
                    return
                if not tty and not as_json:
                    click.echo("")
                time.sleep(interval)
        except KeyboardInterrupt:
            return


@main.command()
@click.argument("queue_names", metavar="[QUEUE]...", nargs=-1)
@data_option
@click.pass_context
def compact(ctx, queue_names, data):
    """Checkpoint QUEUEs (default: every queue) and remove the segments
    nothing live needs; prints the disk use before and after.

    walq does this by itself as records accumulate; this does it now (before
    a backup, or after a large purge).
    """
    path = _data(ctx, data)
    with _broker(path, queue=queue_names[0] if queue_names else None) as b:
        names = list(queue_names) or b.list_queues()
        queues = [b.get_queue(n) for n in names]  # QueueDoesNotExist before any work
        rows = []
        with Progress(len(queues), "compact") as bar:
            for q in queues:
                before = q.stats().disk_bytes
                q.checkpoint()
                rows.append([q.name, _bytes(before), _bytes(q.stats().disk_bytes)])
                bar.advance(note=q.name)
    click.echo(format_table(["QUEUE", "DISK BEFORE", "DISK AFTER"], rows) if rows else "(no queues)")


# -- dead letters -----------------------------------------------------------------------------


@main.group(cls=WalqGroup)
def dlq() -> None:
    """Dead-letter queues: which queues feed one, and moving messages back."""


@dlq.command("sources")
@click.argument("name")
@data_option
@click.pass_context
def dlq_sources(ctx, name, data):
    """List the queues whose redrive policy names dead-letter queue NAME."""
    with _broker(_data(ctx, data), queue=name) as b:
        for src in b.dead_letter_sources(name):
            click.echo(src)


@dlq.command("redrive")
@click.argument("name")
@click.option("--to", "destination", metavar="QUEUE", help="Move to this queue instead of each message's source.")
@data_option
@click.pass_context
def dlq_redrive(ctx, name, destination, data):
    """Move the visible messages of dead-letter queue NAME back to their
    source queues (or to --to); prints how many moved."""
    with _broker(_data(ctx, data), queue=name) as b:
        n = b.move_messages(name, destination)
        click.echo(f"moved {n} message{'s' if n != 1 else ''}")


# -- inspecting --------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--strict", is_flag=True,
              help="Also call a torn record damage when log.ctl says it was published (use after kill -9, "
                   "not after a power cut).")
@click.option("--quiet", "-q", is_flag=True, help="Print damage only (no notes, no progress).")
@data_option
@click.pass_context
def verify(ctx, as_json, strict, quiet, data):
    """Check every checksum in the store without opening it.

    Reads every segment of every log (the catalog and each queue) and every
    checkpoint, and prints each problem with its file, offset and bytes.
    DAMAGE lines make the exit code 1; TORN and NOTE lines are what a crash
    normally leaves (the next open sets torn tails aside) and do not.
    Safe to run while other processes use the store: it takes no lock and
    writes nothing.
    """
    path = _data(ctx, data)
    if not winspect.is_store(path):
        raise CliError(f"no walq store at {path}")
    with Progress(winspect.count_files(path), "verify", enabled=not quiet and not as_json) as bar:
        report = winspect.verify_store(path, strict=strict,
                                       progress=lambda p: bar.advance(note=os.path.relpath(p, path)))
    if as_json:
        _echo_json(report.to_json())
    else:
        for p in report.problems:
            if p.kind == winspect.DAMAGE or not quiet:
                click.echo(p.describe())
        if not quiet:
            verdict = "OK" if report.ok else f"DAMAGED ({len(report.damage)} problem" \
                f"{'s' if len(report.damage) != 1 else ''})"
            click.echo(f"{verdict}: {report.logs} logs, {report.segments} segments, {report.records} records, "
                       f"{report.checkpoints} checkpoints, {_bytes(report.bytes_checked)} read")
    ctx.exit(EXIT_OK if report.ok else EXIT_DAMAGE)


@main.command()
@click.argument("queue_name", metavar="[QUEUE]", required=False)
@click.option("--catalog", is_flag=True, help="Dump the catalog log instead of a queue.")
@click.option("--segment", type=click.Path(exists=True, dir_okay=False), help="Dump one segment file.")
@click.option("--from", "start", type=int, default=0, help="First sequence number to print.")
@click.option("--limit", type=int, default=None, help="Print at most this many records.")
@click.option("--no-body", is_flag=True, help="Print body sizes instead of bodies.")
@data_option
@click.pass_context
def dump(ctx, queue_name, catalog, segment, start, limit, no_body, data):
    """Print the records of QUEUE's log (or --catalog, or --segment FILE) as
    JSON lines: sends with their bodies, leases, deletes, visibility changes.

    Reads the files directly, without locks or recovery.
    """
    if sum(bool(x) for x in (queue_name, catalog, segment)) != 1:
        raise click.UsageError("give exactly one of QUEUE, --catalog or --segment FILE")
    if limit is not None and limit < 0:
        raise click.BadParameter("must be >= 0", param_hint="--limit")
    path = _data(ctx, data)
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
    for i, rec in enumerate(records):
        if limit is not None and i >= limit:
            break
        _echo_json(rec)


# -- demonstrations and benchmarks -------------------------------------------------------


@main.command()
@click.option("--baristas", type=click.IntRange(1, 16), default=3, show_default=True,
              help="Barista (consumer) processes.")
@click.option("--orders", type=click.IntRange(1, 1000), default=12, show_default=True, help="Orders to take.")
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same orders).")
@data_option
@click.pass_context
def demo(ctx, baristas, orders, seed, data):
    """Run the coffee-shop example: an order-taker process sends orders,
    barista processes make them, an order nobody can make ends in the
    dead-letter queue, and the stats are shown at the end.

    Uses (and first recreates) the queues coffee-orders and
    coffee-orders-dlq in the store; other queues are left alone.
    """
    from walq import demo as wdemo

    path = _data(ctx, data)
    result = wdemo.run(path, baristas=baristas, orders=orders, seed=seed, echo=click.echo)
    click.echo("")
    with _broker(path) as b:
        click.echo(stats_table(stats_rows(b, wdemo.PREFIX)))
    click.echo("")
    click.echo(f"Look around: walq --data {path} stats | dump {wdemo.DLQ} | receive {wdemo.DLQ}")
    if not result.ok:
        raise CliError(f"the demo did not finish as expected: {result.problem}")


@main.command("crash-bench")
@click.option("--cycles", type=click.IntRange(1), default=20, show_default=True, help="Kill-and-recover cycles.")
@click.option("--producers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="Producer processes per cycle (send and send_batch).")
@click.option("--consumers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="Consumer processes per cycle (receive, delete_batch, checkpoint).")
@click.option("--run-time", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="Longest a worker runs before it is killed (seconds).")
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
@data_option
@click.pass_context
def crash_bench(ctx, cycles, producers, consumers, run_time, kill_group, durability, segment_size,
                visibility_timeout, checkpoint_every, seed, report_path, plot_path, data):
    """Kill producers and consumers with SIGKILL over and over, recover, and
    check that no confirmed send is lost, no deleted message comes back and
    no corrupt record is returned.

    Runs on the queue "crashbench" in the store (recreated first).  Each
    cycle starts the worker processes, kills them at random moments, then
    checks every file (verify --strict), reopens the store (timing the
    recovery) and compares the queue's contents with what the workers
    confirmed.  Prints recovery-time percentiles and counts and writes a JSON
    report; exits 1 if an invariant was violated.
    """
    from walq import crashbench

    if producers + consumers == 0:
        raise click.UsageError("need at least one producer or consumer")
    if plot_path:
        problem = crashbench.plotting_error()  # fail before the run, not after it
        if problem:
            raise CliError(problem)
    path = _data(ctx, data)
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
        raise CliError(f"{n} invariant violation{'s' if n != 1 else ''} (listed above and in {report_path})",
                       EXIT_DAMAGE)


@main.command()
@click.option("--seconds", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="Seconds per measurement.")
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
    from walq import benchmark

    path = _data(ctx, data)
    modes = modes or ("always", "batch", "os")
    with Progress(benchmark.steps(modes), "bench", enabled=not as_json) as bar:
        result = benchmark.run(path, seconds=seconds, modes=modes, on_step=lambda note: bar.advance(note=note))
    if as_json:
        for row in result.rows:
            _echo_json(row.to_json())
    else:
        click.echo(benchmark.format_table(result))


from walq.cli_topic import topic as _topic_group  # noqa: E402  (walq topic ...)
main.add_command(_topic_group)
