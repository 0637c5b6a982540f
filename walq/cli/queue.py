"""``walq queue create|list|delete|attributes|set``."""

from __future__ import annotations

import click

import walq
from walq.cli.common import WalqGroup, attrs_json, data_option, echo_json, open_store, store_path
from walq.errors import WalqError

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




@click.group(cls=WalqGroup)
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
    with open_store(store_path(ctx, data), create=True) as b:
        q = b.create_queue(name, **kw)
        echo_json(attrs_json(q.attributes))


@queue.command("list")
@click.option("--prefix", default="", help="Only names starting with this.")
@data_option
@click.pass_context
def queue_list(ctx, prefix, data):
    """List queue names, one per line."""
    with open_store(store_path(ctx, data)) as b:
        for name in b.list_queues(prefix):
            click.echo(name)


@queue.command("delete")
@click.argument("name")
@data_option
@click.pass_context
def queue_delete(ctx, name, data):
    """Delete queue NAME and all its messages."""
    with open_store(store_path(ctx, data), queue=name) as b:
        b.delete_queue(name)
        click.echo(f"deleted queue {name}")


@queue.command("attributes")
@click.argument("name")
@data_option
@click.pass_context
def queue_attributes(ctx, name, data):
    """Print queue NAME's attributes as JSON."""
    with open_store(store_path(ctx, data), queue=name) as b:
        echo_json(attrs_json(b.get_queue(name).attributes))


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
    with open_store(store_path(ctx, data), queue=name) as b:
        q = b.get_queue(name)
        q.set_attributes(**changes)
        echo_json(attrs_json(q.attributes))




COMMANDS = [queue]
