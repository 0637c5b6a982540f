"""``walq topic``: create, list, delete, publish to and subscribe to topics.

    walq topic create NAME [--fifo] [--content-based-dedup]
    walq topic list [--prefix P]
    walq topic delete NAME
    walq topic publish TOPIC [MESSAGE|-] [--subject S] [--attr K=V ...] [--group G] [--dedup-id D]
    walq topic subscribe TOPIC (--queue Q | --url URL | --handler MODULE:FUNCTION) [--filter-policy JSON]
                         [--filter-scope attributes|body] [--raw] [--dead-letter Q] [--max-retries N] [--max-age S]
    walq topic unsubscribe SUBSCRIPTION_ARN
    walq topic subscriptions TOPIC

Exit codes as the ``walq`` command's: 2 usage, 3 the named topic (or queue)
does not exist, 4 any other error.  Results are JSON lines on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import click

import walq
from walq.errors import CorruptionError, InvalidPattern, QueueDoesNotExist, TopicDoesNotExist, WalqError

EXIT_DAMAGE, EXIT_NO_SUCH, EXIT_ERROR = 1, 3, 4


class _Fail(click.ClickException):
    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def _line(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())


class TopicGroup(click.Group):
    """One-line errors and the walq exit codes for every topic command."""

    def invoke(self, ctx):
        """Runs the subcommand; walq errors become one line and an exit code."""
        try:
            return super().invoke(ctx)
        except (TopicDoesNotExist, QueueDoesNotExist) as exc:
            raise _Fail(_line(exc), EXIT_NO_SUCH) from None
        except CorruptionError as exc:
            raise _Fail(f"damaged store: {_line(exc)} (run walq verify)", EXIT_DAMAGE) from None
        except WalqError as exc:
            raise _Fail(_line(exc)) from None
        except OSError as exc:
            raise _Fail(f"{exc.strerror or _line(exc)}{': ' + exc.filename if exc.filename else ''}") from None


def _data_option(f):
    return click.option("--data", "data", metavar="DIR", default=None,
                        help="Store directory (default: $WALQ_DATA, else ./walq-data).")(f)


def _data(ctx: click.Context, data: str | None) -> str:
    if data is not None:
        return data
    root = ctx.find_root()
    return (root.obj or {}).get("data") or os.environ.get("WALQ_DATA") or "./walq-data"


@contextlib.contextmanager
def _broker(data: str, *, create: bool = False):
    if not create and not os.path.isdir(os.path.join(data, "catalog")):
        raise _Fail(f"no walq store at {data} (create one with: walq --data {data} topic create NAME)")
    b = walq.open(data)
    try:
        yield b
    finally:
        b.close()


def _echo(obj) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")))


def _sub_json(s) -> dict:
    return {"subscription_arn": s.arn, "protocol": s.protocol, "endpoint": s.endpoint, "raw": s.raw,
            "filter_policy": s.filter_policy, "filter_scope": s.filter_scope}


topic = TopicGroup("topic", help="Create, list, delete, publish to and subscribe to SNS-style topics.")


@topic.command("create")
@click.argument("name")
@click.option("--fifo", is_flag=True, help="A FIFO topic (NAME must end in .fifo).")
@click.option("--content-based-dedup", is_flag=True, help="FIFO: deduplicate by SHA-256 of the message.")
@_data_option
@click.pass_context
def topic_create(ctx, name, fifo, content_based_dedup, data):
    """Create topic NAME (or confirm it exists with the same settings)."""
    if fifo and not name.endswith(".fifo"):
        raise click.BadParameter(f"--fifo needs a NAME ending in .fifo; got {name!r}", param_hint="--fifo")
    if content_based_dedup and not name.endswith(".fifo"):
        raise click.BadParameter("--content-based-dedup applies to FIFO topics (NAME ending in .fifo) only",
                                 param_hint="--content-based-dedup")
    with _broker(_data(ctx, data), create=True) as b:
        t = b.create_topic(name, content_based_dedup=content_based_dedup)
        _echo({"topic": t.name, "arn": t.arn, "fifo": t.fifo})


@topic.command("list")
@click.option("--prefix", default="", help="Only names starting with this.")
@_data_option
@click.pass_context
def topic_list(ctx, prefix, data):
    """List topic names, one per line."""
    with _broker(_data(ctx, data)) as b:
        for name in b.list_topics(prefix):
            click.echo(name)


@topic.command("delete")
@click.argument("name")
@_data_option
@click.pass_context
def topic_delete(ctx, name, data):
    """Delete topic NAME and its subscriptions."""
    with _broker(_data(ctx, data)) as b:
        b.delete_topic(name)
        click.echo(f"deleted topic {name}")


@topic.command("publish")
@click.argument("topic_name", metavar="TOPIC")
@click.argument("message", required=False)
@click.option("--subject", help="The envelope's Subject.")
@click.option("--attr", "attrs", multiple=True, metavar="NAME=VALUE",
              help="Message attribute (repeatable): NAME=text, NAME:Number=42, NAME:Binary=BASE64.")
@click.option("--group", help="Message group (FIFO topics).")
@click.option("--dedup-id", help="Deduplication id (FIFO topics without --content-based-dedup).")
@_data_option
@click.pass_context
def topic_publish(ctx, topic_name, message, subject, attrs, group, dedup_id, data):
    """Publish MESSAGE (or standard input) to TOPIC; prints {"message_id": ...}."""
    from walq.cli.messages import _parse_attr  # the queue commands' --attr syntax

    attributes = dict(_parse_attr(a) for a in attrs) or None
    if message is None or message == "-":
        if sys.stdin.isatty():
            raise click.UsageError("give a MESSAGE argument or pipe the message on standard input")
        message = sys.stdin.read()
    with _broker(_data(ctx, data)) as b:
        t = b.get_topic(topic_name)
        if t.fifo and group is None:
            raise click.BadParameter(f"topic {topic_name!r} is FIFO: give --group", param_hint="--group")
        if t.fifo and dedup_id is None and not t.content_based_dedup:
            raise click.BadParameter(f"topic {topic_name!r} has no content-based dedup: give --dedup-id",
                                     param_hint="--dedup-id")
        if not t.fifo and dedup_id is not None:
            raise click.BadParameter("--dedup-id applies to FIFO topics only", param_hint="--dedup-id")
        r = t.publish(message, subject=subject, attributes=attributes, group=group, dedup_id=dedup_id)
        out = {"message_id": r.message_id}
        if r.sequence is not None:
            out["sequence"] = r.sequence
        _echo(out)


@topic.command("subscribe")
@click.argument("topic_name", metavar="TOPIC")
@click.option("--queue", "queue_name", metavar="QUEUE", help="Deliver into this queue of the store.")
@click.option("--url", help="Deliver by POST to this http:// or https:// URL (run a worker).")
@click.option("--handler", metavar="MODULE:FUNCTION", help="Deliver to this function (run a worker).")
@click.option("--filter-policy", metavar="JSON", help="SNS filter policy (JSON object).")
@click.option("--filter-scope", type=click.Choice(["attributes", "body"]), default="attributes", show_default=True,
              help="What --filter-policy matches.")
@click.option("--raw", is_flag=True, help="Raw message delivery (no JSON envelope).")
@click.option("--dead-letter", metavar="QUEUE", help="Queue for deliveries that keep failing (--url, --handler).")
@click.option("--max-retries", type=int, help="Retries after the first attempt (--url, --handler; 3).")
@click.option("--max-age", type=float, help="Seconds after which no retry is made (--url, --handler; 3600).")
@_data_option
@click.pass_context
def topic_subscribe(ctx, topic_name, queue_name, url, handler, filter_policy, filter_scope, raw, dead_letter,
                    max_retries, max_age, data):
    """Subscribe a queue, a URL or a handler to TOPIC; prints the subscription."""
    given = [o for o, v in (("--queue", queue_name), ("--url", url), ("--handler", handler)) if v is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --queue, --url or --handler"
                               + (f" (got {', '.join(given)})" if given else ""))
    policy = None
    if filter_policy is not None:
        try:
            policy = json.loads(filter_policy)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--filter-policy") from None
    retry = None
    if max_retries is not None or max_age is not None:
        from walq.worker.retry import RetryPolicy

        defaults = RetryPolicy()
        try:
            retry = RetryPolicy(max_retries if max_retries is not None else defaults.max_retries,
                                max_age if max_age is not None else defaults.max_age)
        except WalqError as exc:
            raise click.BadParameter(_line(exc), param_hint="--max-retries/--max-age") from None
    with _broker(_data(ctx, data)) as b:
        t = b.get_topic(topic_name)
        endpoint = b.get_queue(queue_name) if queue_name is not None else (url if url is not None else handler)
        dl = b.get_queue(dead_letter) if dead_letter is not None else None
        try:
            s = t.subscribe(endpoint, filter_policy=policy, filter_scope=filter_scope, raw=raw, dead_letter=dl,
                            retry=retry)
        except InvalidPattern as exc:
            raise _Fail(f"--filter-policy: {_line(exc)}") from None
        except WalqError as exc:
            raise _Fail(f"{given[0]}: {_line(exc)}") from None
        _echo(_sub_json(s))


@topic.command("unsubscribe")
@click.argument("arn", metavar="SUBSCRIPTION_ARN")
@_data_option
@click.pass_context
def topic_unsubscribe(ctx, arn, data):
    """Remove the subscription SUBSCRIPTION_ARN (as `subscriptions` prints it)."""
    parts = arn.split(":")
    if len(parts) != 7 or parts[:3] != ["arn", "aws", "sns"]:
        raise click.BadParameter(f"{arn!r} is not a subscription ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC:ID)",
                                 param_hint="SUBSCRIPTION_ARN")
    with _broker(_data(ctx, data)) as b:
        t = b.get_topic(parts[5])
        for s in t.subscriptions():
            if s.arn == arn:
                s.unsubscribe()
                click.echo(f"unsubscribed {arn}")
                return
        raise _Fail(f"subscription {arn} does not exist", EXIT_NO_SUCH)


@topic.command("subscriptions")
@click.argument("topic_name", metavar="TOPIC")
@_data_option
@click.pass_context
def topic_subscriptions(ctx, topic_name, data):
    """List TOPIC's subscriptions, one JSON line each."""
    with _broker(_data(ctx, data)) as b:
        for s in b.get_topic(topic_name).subscriptions():
            _echo(_sub_json(s))


COMMANDS = [topic]
