"""``walq send``, ``receive``, ``ack`` and ``purge``: moving messages."""

from __future__ import annotations

import base64
import binascii
import sys

import click

from walq import inspect as winspect
from walq.cli.common import CliError, data_option, echo_json, one_line, open_store, store_path

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



@click.command()
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
    with open_store(store_path(ctx, data), queue=queue_name) as b:
        q = b.get_queue(queue_name)
        if not lines:
            r = q.send(raw, attributes=attributes, delay=delay, group=group, dedup_id=dedup_id)
            echo_json(_send_json(r))
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
                echo_json(_send_json(r))
            for i, err in res.failed:
                failed += 1
                click.echo(f"Error: line {start + i + 1}: {one_line(err)}", err=True)
        if failed:
            raise CliError(f"{failed} of {len(entries)} messages were refused")


def _send_json(r) -> dict:
    out = {"message_id": r.message_id}
    if r.sequence is not None:
        out["sequence"] = r.sequence
    if r.duplicate:
        out["duplicate"] = True
    return out


@click.command()
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
    with open_store(store_path(ctx, data), queue=queue_name) as b:
        q = b.get_queue(queue_name)
        msgs = q.receive(max_messages, wait=wait, visibility_timeout=visibility_timeout)
        for m in msgs:
            echo_json(_message_json(m))
        if ack and msgs:
            res = q.delete_batch([m.receipt for m in msgs])
            if res.failed:
                raise CliError(f"{len(res.failed)} of {len(msgs)} acks failed: {one_line(res.failed[0][1])}")


@click.command()
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
    with open_store(store_path(ctx, data), queue=queue_name) as b:
        q = b.get_queue(queue_name)
        failed = 0
        for start in range(0, len(receipts), 1000):
            res = q.delete_batch(list(receipts[start : start + 1000]))
            for i, err in res.failed:
                if len(receipts) == 1:
                    raise CliError(one_line(err))
                failed += 1
                click.echo(f"Error: receipt {receipts[start + i]!r}: {one_line(err)}", err=True)
        if failed:
            raise CliError(f"{failed} of {len(receipts)} receipts were refused")
        click.echo(f"acknowledged {len(receipts)} message{'s' if len(receipts) != 1 else ''}")


@click.command()
@click.argument("queue_name", metavar="QUEUE")
@data_option
@click.pass_context
def purge(ctx, queue_name, data):
    """Drop every message of QUEUE, in flight included."""
    with open_store(store_path(ctx, data), queue=queue_name) as b:
        b.get_queue(queue_name).purge()
        click.echo(f"purged queue {queue_name}")



COMMANDS = [send, receive, ack, purge]
