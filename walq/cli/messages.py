"""``walq send``, ``receive``, ``ack`` and ``purge``: moving messages."""

from __future__ import annotations

import base64
import binascii
import sys

import click

from walq.tools import inspect as winspect
from walq.cli.common import (EXIT_ERROR, EXIT_USAGE, CliError, Seconds, WalqCommand, data_option, echo_json,
                             flag_names, one_line, open_store, store_path)
from walq.cli.signals import StopSignals, stdout_closed
from walq.errors import InvalidParameter


def _message_json(m) -> dict:
    """A received message as the JSON object ``walq receive`` prints."""
    out = {"message_id": m.message_id}
    out.update(winspect.body_json(m.body))
    out["attributes"] = winspect.attributes_json(m.attributes)
    out.update(receipt=m.receipt, receive_count=m.receive_count, sent_at=m.sent_at,
               first_received_at=m.first_received_at)
    for key in ("group", "dedup_id", "sequence"):
        if getattr(m, key) is not None:
            out[key] = getattr(m, key)
    return out


def _parse_attr(text: str) -> tuple[str, object]:
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


@click.command(cls=WalqCommand)
@click.argument("queue_name", metavar="QUEUE")
@click.argument("body", required=False)
@click.option("--attr", "attrs", multiple=True, metavar="NAME[:TYPE]=VALUE",
              help="Message attribute (repeatable); TYPE is String (default), Number or Binary (base64).")
@click.option("--group", help="Message group (required for FIFO queues).")
@click.option("--dedup-id", help="FIFO deduplication id.")
@click.option("--delay", type=int, help="Seconds before the message is visible (standard queues, 0-900).")
@click.option("--lines", is_flag=True, help="Send each non-empty line of the input as its own message.")
@click.option("--raw", is_flag=True,
              help="Send standard input byte for byte (default: drop one trailing newline, as $(...) does).")
@data_option
@click.pass_context
def send(ctx, queue_name, body, attrs, group, dedup_id, delay, lines, raw, data):
    """Send BODY (or standard input) to QUEUE; prints {"message_id": ...}.

    With no BODY, or BODY "-", the message is read from standard input, and
    one trailing newline is dropped (`echo hello | walq send q` sends
    "hello"); --raw keeps the input exactly as read.  BODY given as an
    argument is always sent as it is.
    """
    attributes = dict(_parse_attr(a) for a in attrs) or None
    if body is None or body == "-":
        stdin = sys.stdin.buffer
        if stdin.isatty():
            raise click.UsageError("give a BODY argument or pipe the message on standard input")
        data_in = stdin.read()
        if not raw and not lines:
            data_in = _drop_one_newline(data_in)
    else:
        data_in = body.encode("utf-8")
    with open_store(store_path(ctx, data), queue=queue_name) as b:
        q = b.get_queue(queue_name)
        if not lines:
            r = q.send(data_in, attributes=attributes, delay=delay, group=group, dedup_id=dedup_id)
            echo_json(_send_json(r))
            return
        entries = [ln for ln in data_in.splitlines() if ln.strip()]
        if not entries:
            raise click.UsageError("no non-empty lines to send")
        failed = []
        for start in range(0, len(entries), 100):
            chunk = [dict(body=e, attributes=attributes, delay=delay, group=group, dedup_id=dedup_id)
                     for e in entries[start : start + 100]]
            res = q.send_batch(chunk)
            for i, r in res.successful:
                echo_json(_send_json(r))
            for i, err in res.failed:
                failed.append(err)
                click.echo(f"Error: line {start + i + 1}: {flag_names(one_line(err), ctx.command)}", err=True)
        if failed:
            raise CliError(f"{len(failed)} of {len(entries)} messages were refused", _refusal_code(failed))


def _drop_one_newline(data: bytes) -> bytes:
    """``data`` without one trailing ``\\n`` (or ``\\r\\n``)."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def _refusal_code(errors: list) -> int:
    """Usage error when every refusal was bad input, else the general code."""
    return EXIT_USAGE if all(isinstance(e, InvalidParameter) for e in errors) else EXIT_ERROR


def _send_json(r) -> dict:
    """A SendResult as the JSON object ``walq send`` prints."""
    out = {"message_id": r.message_id}
    if r.sequence is not None:
        out["sequence"] = r.sequence
    if r.duplicate:
        out["duplicate"] = True
    return out


@click.command(cls=WalqCommand)
@click.argument("queue_name", metavar="QUEUE")
@click.option("--max", "max_messages", type=int, default=1, show_default=True, help="Messages to take (1-1000).")
@click.option("--wait", type=Seconds(0, 20), default=None, help="Seconds to long-poll (0-20; default: the queue's).")
@click.option("--visibility-timeout", type=Seconds(0, 43200), default=None,
              help="Lease seconds (0-43200; default: the queue's).")
@click.option("--ack", is_flag=True, help="Delete each message once its line is written.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep receiving, printing messages as they come, until interrupted (Ctrl-C, SIGTERM) "
                   "or the reader of standard output goes away.")
@data_option
@click.pass_context
def receive(ctx, queue_name, max_messages, wait, visibility_timeout, ack, follow, data):
    """Receive messages from QUEUE; prints one JSON object per message.

    Each carries a "receipt": pass it to `walq ack` once the message is
    handled, or use --ack to delete it as soon as its line is written and
    flushed (a message whose line could not be written is not deleted: it
    comes back when its lease ends).  No output means no message.

    \b
    With --follow, long-polls in a loop (up to --max messages at a time)
    and exits 0 on Ctrl-C or SIGTERM, after finishing the messages in hand;
    if standard output is closed (| head), exits 141 like any Unix tool.
    """
    if follow and wait is not None:
        raise click.UsageError("--follow polls by itself; leave out --wait")
    with open_store(store_path(ctx, data), queue=queue_name) as b:
        q = b.get_queue(queue_name)
        if not follow:
            msgs = q.receive(max_messages, wait=wait, visibility_timeout=visibility_timeout)
            _print_and_ack(q, msgs, ack)
            return
        with StopSignals() as stop:
            while not stop.requested:
                if stdout_closed():
                    raise BrokenPipeError("standard output was closed")
                # Short polls: a stop request is seen within a second, and a
                # poll that finds messages returns at once anyway.
                msgs = q.receive(max_messages, wait=1.0, visibility_timeout=visibility_timeout)
                _print_and_ack(q, msgs, ack)


def _print_and_ack(q, msgs: list, ack: bool) -> None:
    """Prints each message as a JSON line; with ``ack``, deletes exactly the
    messages whose line was written and flushed (click.echo flushes)."""
    written = []
    try:
        for m in msgs:
            echo_json(_message_json(m))
            written.append(m.receipt)
    finally:
        if ack and written:
            res = q.delete_batch(written)
            if res.failed:
                raise CliError(f"{len(res.failed)} of {len(written)} acks failed: {one_line(res.failed[0][1])}")


@click.command(cls=WalqCommand)
@click.argument("queue_name", metavar="QUEUE")
@click.argument("receipts", nargs=-1)
@data_option
@click.pass_context
def ack(ctx, queue_name, receipts, data):
    """Delete received messages by RECEIPTS (or one receipt per stdin line)."""
    if not receipts or receipts == ("-",):
        stdin = sys.stdin.buffer
        if stdin.isatty():
            raise click.UsageError("give RECEIPTS or pipe them on standard input, one per line")
        try:
            text = stdin.read().decode("utf-8")
        except UnicodeDecodeError:
            raise click.UsageError("standard input is not UTF-8 text (one receipt per line)") from None
        receipts = tuple(ln.strip() for ln in text.splitlines() if ln.strip())
        if not receipts:
            raise click.UsageError("no receipts on standard input")
    with open_store(store_path(ctx, data), queue=queue_name) as b:
        q = b.get_queue(queue_name)
        failed = []
        for start in range(0, len(receipts), 1000):
            res = q.delete_batch(list(receipts[start : start + 1000]))
            for i, err in res.failed:
                if len(receipts) == 1:
                    raise CliError(one_line(err), _refusal_code([err]))
                failed.append(err)
                click.echo(f"Error: receipt {receipts[start + i]!r}: {one_line(err)}", err=True)
        if failed:
            raise CliError(f"{len(failed)} of {len(receipts)} receipts were refused", _refusal_code(failed))
        click.echo(f"acknowledged {len(receipts)} message{'s' if len(receipts) != 1 else ''}")


@click.command(cls=WalqCommand)
@click.argument("queue_name", metavar="QUEUE")
@data_option
@click.pass_context
def purge(ctx, queue_name, data):
    """Drop every message of QUEUE, in flight included."""
    with open_store(store_path(ctx, data), queue=queue_name) as b:
        b.get_queue(queue_name).purge()
        click.echo(f"purged queue {queue_name}")



COMMANDS = [send, receive, ack, purge]
