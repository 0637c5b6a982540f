"""``walq events``: event buses, rules, targets, put_events and pattern tests.

    walq events buses | create-bus NAME | delete-bus NAME
    walq events put-rule NAME (--pattern JSON | --schedule EXPR | both) [--bus B] [--disabled]
                         [--description TEXT]
    walq events rules [--bus B] [--prefix P]
    walq events enable-rule|disable-rule|delete-rule NAME [--bus B]
    walq events add-target RULE ID (--queue Q | --topic T | --target-bus B | --url URL | --handler M:F)
                           [--input JSON | --input-path PATH] [--dead-letter Q] [--max-retries N] [--max-age S]
    walq events remove-target RULE ID [--bus B]
    walq events targets RULE [--bus B]
    walq events put --source S --detail-type D [--detail JSON|-] [--resource ARN ...] [--bus B]
    walq events test-pattern --pattern JSON --event JSON
    walq events create-archive NAME [--pattern JSON] [--retention-days N] [--bus B]
    walq events archives [--bus B]
    walq events start-replay NAME --archive A --start TIME --end TIME [--rule R ...] [--bus B]
    walq events describe-replay NAME [--bus B]
    walq events replays [--bus B]

TIME is ISO-8601 (``2026-01-01T00:00:00Z``; UTC without an offset) or epoch
seconds.

Exit codes as the ``walq`` command's: 2 usage, 3 the named bus, rule, queue,
topic, archive or replay does not exist, 4 any other error.  Results are JSON lines on stdout.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys

import click

import walq
from walq.cli.topic import _broker, _data, _data_option, _echo, _Fail, _line
from walq.bus.catalog import DEFAULT_BUS
from walq.bus.schedule import parse as parse_schedule
from walq.errors import (BusDoesNotExist, CorruptionError, InvalidParameter, InvalidPattern, QueueDoesNotExist,
                         RuleDoesNotExist, TopicDoesNotExist, WalqError)
from walq.match import compile_pattern

EXIT_DAMAGE, EXIT_NO_SUCH, EXIT_ERROR = 1, 3, 4


class EventsGroup(click.Group):
    """One-line errors and the walq exit codes for every events command."""

    def invoke(self, ctx):
        """Runs the subcommand; walq errors become one line and an exit code."""
        try:
            return super().invoke(ctx)
        except (BusDoesNotExist, RuleDoesNotExist, TopicDoesNotExist, QueueDoesNotExist) as exc:
            raise _Fail(_line(exc), EXIT_NO_SUCH) from None
        except CorruptionError as exc:
            raise _Fail(f"damaged store: {_line(exc)} (run walq verify)", EXIT_DAMAGE) from None
        except WalqError as exc:
            raise _Fail(_line(exc)) from None
        except OSError as exc:
            raise _Fail(f"{exc.strerror or _line(exc)}{': ' + exc.filename if exc.filename else ''}") from None


def _bus_option(f):
    return click.option("--bus", "bus_name", default="default", show_default=True, metavar="BUS",
                        help="The event bus.")(f)


def _json_arg(text: str, flag: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=flag) from None


def _pattern_arg(text: str | None, flag: str):
    """The pattern ``text`` parsed and checked before the store is opened
    (a refused command writes nothing); None for None."""
    if text is None:
        return None
    pat = _json_arg(text, flag)
    try:
        compile_pattern(pat)
    except InvalidPattern as exc:
        raise _Fail(f"{flag}: {_line(exc)}") from None
    return pat


def _time_arg(text: str, flag: str) -> float:
    """Epoch seconds from ISO-8601 text (UTC without an offset) or a number."""
    try:
        secs = float(text)
    except ValueError:
        try:
            when = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"{text!r} is neither ISO-8601 (2026-01-01T00:00:00Z) nor epoch seconds",
                                     param_hint=flag) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        return when.timestamp()
    if not math.isfinite(secs) or secs < 0:
        raise click.BadParameter(f"epoch seconds must be a finite number >= 0; got {text}", param_hint=flag)
    return secs


def _iso(secs: float) -> str:
    return _dt.datetime.fromtimestamp(secs, _dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _rule_json(r) -> dict:
    return {"name": r.name, "arn": r.arn, "state": r.state, "pattern": r.pattern, "schedule": r.schedule,
            "description": r.description, "targets": len(r.targets())}


def _archive_json(a) -> dict:
    return {"name": a.name, "arn": a.arn, "bus": a.bus.name, "pattern": a.pattern,
            "retention_days": a.retention_days}


def _replay_json(r) -> dict:
    return {"name": r.name, "arn": r.arn, "state": r.state, "bus": r.bus.name, "archive": r.archive,
            "start": _iso(r.start), "end": _iso(r.end), "rules": r.rules}


events = EventsGroup("events", help="EventBridge-style event buses: rules, schedules, targets, put events, "
                                   "archives, replays, test patterns.")


@events.command("buses")
@_data_option
@click.pass_context
def events_buses(ctx, data):
    """List event bus names, one per line."""
    with _broker(_data(ctx, data)) as b:
        for name in b.list_buses():
            click.echo(name)


@events.command("create-bus")
@click.argument("name")
@_data_option
@click.pass_context
def events_create_bus(ctx, name, data):
    """Create event bus NAME (or confirm it exists)."""
    with _broker(_data(ctx, data), create=True) as b:
        bus = b.create_bus(name)
        _echo({"bus": bus.name, "arn": bus.arn})


@events.command("delete-bus")
@click.argument("name")
@_data_option
@click.pass_context
def events_delete_bus(ctx, name, data):
    """Delete event bus NAME with its rules and targets."""
    with _broker(_data(ctx, data)) as b:
        b.delete_bus(name)
        click.echo(f"deleted bus {name}")


@events.command("put-rule")
@click.argument("name")
@click.option("--pattern", metavar="JSON", help="EventBridge event pattern (JSON object).")
@click.option("--schedule", metavar="EXPR", help="rate(5 minutes) or cron(0 12 * * ? *), UTC (default bus only).")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option("--description", default="", help="Free text (at most 512 characters).")
@_bus_option
@_data_option
@click.pass_context
def events_put_rule(ctx, name, pattern, schedule, disabled, description, bus_name, data):
    """Create or replace rule NAME (a pattern, a schedule or both); prints the rule."""
    if pattern is None and schedule is None:
        raise click.UsageError("give --pattern, --schedule or both")
    pat = _pattern_arg(pattern, "--pattern")
    if schedule is not None:
        try:
            parse_schedule(schedule)
        except InvalidParameter as exc:
            raise _Fail(f"--schedule: {_line(exc)}") from None
    with _broker(_data(ctx, data), create=True) as b:
        bus = b.get_bus(bus_name)
        try:
            r = bus.put_rule(name, pattern=pat, schedule=schedule, enabled=not disabled, description=description)
        except InvalidPattern as exc:
            raise _Fail(f"--pattern: {_line(exc)}") from None
        except InvalidParameter as exc:
            if schedule is not None and bus.name != DEFAULT_BUS:  # schedules are the default bus's only
                raise _Fail(f"--schedule: {_line(exc)}") from None
            raise
        _echo(_rule_json(r))


@events.command("rules")
@click.option("--prefix", default="", help="Only names starting with this.")
@_bus_option
@_data_option
@click.pass_context
def events_rules(ctx, prefix, bus_name, data):
    """List the bus's rules, one JSON line each."""
    with _broker(_data(ctx, data)) as b:
        for r in b.get_bus(bus_name).list_rules(prefix):
            _echo(_rule_json(r))


def _rule_command(verb: str, doc: str):
    @events.command(f"{verb}-rule", help=doc)
    @click.argument("name")
    @_bus_option
    @_data_option
    @click.pass_context
    def command(ctx, name, bus_name, data):
        with _broker(_data(ctx, data)) as b:
            getattr(b.get_bus(bus_name), f"{verb}_rule")(name)
            click.echo(f"{verb}d rule {name}" if verb != "delete" else f"deleted rule {name}")
    return command


_rule_command("enable", "Enable rule NAME (put events match it again).")
_rule_command("disable", "Disable rule NAME (its targets stay).")
_rule_command("delete", "Delete rule NAME (remove its targets first).")


@events.command("add-target")
@click.argument("rule")
@click.argument("target_id", metavar="ID")
@click.option("--queue", "queue_name", metavar="QUEUE", help="Deliver into this queue of the store.")
@click.option("--topic", "topic_name", metavar="TOPIC", help="Publish to this topic of the store.")
@click.option("--target-bus", metavar="BUS", help="Send to this other event bus.")
@click.option("--url", help="POST to this http:// or https:// URL (run a worker).")
@click.option("--handler", metavar="MODULE:FUNCTION", help="Call this function (run a worker).")
@click.option("--input", "input_json", metavar="JSON", help="Send this constant JSON instead of the event.")
@click.option("--input-path", metavar="PATH", help="Send this part of the event ($.detail ...).")
@click.option("--dead-letter", metavar="QUEUE", help="Queue for deliveries that keep failing (--url, --handler).")
@click.option("--max-retries", type=int, help="Retries after the first attempt (--url, --handler; 0-185, 185).")
@click.option("--max-age", type=float, help="Seconds after which no retry is made (60-86400, 86400).")
@_bus_option
@_data_option
@click.pass_context
def events_add_target(ctx, rule, target_id, queue_name, topic_name, target_bus, url, handler, input_json,
                      input_path, dead_letter, max_retries, max_age, bus_name, data):
    """Add (or replace) target ID of RULE."""
    given = [o for o, v in (("--queue", queue_name), ("--topic", topic_name), ("--target-bus", target_bus),
                            ("--url", url), ("--handler", handler)) if v is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --queue, --topic, --target-bus, --url or --handler"
                               + (f" (got {', '.join(given)})" if given else ""))
    if input_json is not None and input_path is not None:
        raise click.UsageError("give at most one of --input and --input-path")
    retry = None
    if max_retries is not None or max_age is not None:
        from walq.worker.retry import RetryPolicy
        try:
            retry = RetryPolicy.eventbridge(185 if max_retries is None else max_retries,
                                            86_400 if max_age is None else max_age)
        except WalqError as exc:
            raise click.BadParameter(_line(exc), param_hint="--max-retries/--max-age") from None
    inp = _json_arg(input_json, "--input") if input_json is not None else None
    with _broker(_data(ctx, data)) as b:
        if queue_name is not None:
            endpoint = b.get_queue(queue_name)
        elif topic_name is not None:
            endpoint = b.get_topic(topic_name)
        elif target_bus is not None:
            endpoint = b.get_bus(target_bus)
        else:
            endpoint = url if url is not None else handler
        dl = b.get_queue(dead_letter) if dead_letter is not None else None
        try:
            b.get_bus(bus_name).put_targets(rule, [walq.Target(target_id, endpoint, input=inp, input_path=input_path,
                                                               retry=retry, dead_letter=dl)])
        except (RuleDoesNotExist, BusDoesNotExist):
            raise
        except WalqError as exc:
            raise _Fail(f"{given[0]}: {_line(exc)}") from None
        _echo({"rule": rule, "target": target_id})


@events.command("remove-target")
@click.argument("rule")
@click.argument("target_id", metavar="ID")
@_bus_option
@_data_option
@click.pass_context
def events_remove_target(ctx, rule, target_id, bus_name, data):
    """Remove target ID from RULE."""
    with _broker(_data(ctx, data)) as b:
        res = b.get_bus(bus_name).remove_targets(rule, [target_id])
        if res.failed:
            raise _Fail(_line(res.failed[0][1]), EXIT_NO_SUCH)
        click.echo(f"removed target {target_id} from rule {rule}")


@events.command("targets")
@click.argument("rule")
@_bus_option
@_data_option
@click.pass_context
def events_targets(ctx, rule, bus_name, data):
    """List RULE's targets, one JSON line each."""
    with _broker(_data(ctx, data)) as b:
        for t in b.get_bus(bus_name).describe_rule(rule).targets():
            _echo(t)


@events.command("put")
@click.option("--source", required=True, help="The event's source.")
@click.option("--detail-type", required=True, help="The event's detail-type.")
@click.option("--detail", default="{}", show_default=True, metavar="JSON|-", help="The detail (JSON object), - for stdin.")
@click.option("--resource", "resources", multiple=True, metavar="ARN", help="A resource (repeatable).")
@_bus_option
@_data_option
@click.pass_context
def events_put(ctx, source, detail_type, detail, resources, bus_name, data):
    """Put one event on the bus; prints {"event_id": ...}."""
    if detail == "-":
        detail = sys.stdin.read()
    _json_arg(detail, "--detail")
    with _broker(_data(ctx, data), create=True) as b:
        res = b.get_bus(bus_name).put_events([{"source": source, "detail_type": detail_type, "detail": detail,
                                               "resources": list(resources)}])
        if res.failed:
            raise _Fail(_line(res.failed[0][1]))
        _echo({"event_id": res.successful[0][1]})


@events.command("test-pattern")
@click.option("--pattern", required=True, metavar="JSON", help="EventBridge event pattern.")
@click.option("--event", "event", required=True, metavar="JSON", help="The event to test.")
def events_test_pattern(pattern, event):
    """Print true or false: does the event match the pattern (TestEventPattern)?"""
    pat, ev = _json_arg(pattern, "--pattern"), _json_arg(event, "--event")
    try:
        click.echo("true" if walq.pattern_matches(pat, ev) else "false")
    except InvalidPattern as exc:
        raise _Fail(f"--pattern: {_line(exc)}") from None


@events.command("create-archive")
@click.argument("name")
@click.option("--pattern", metavar="JSON", help="Archive only the events matching this pattern (default: all).")
@click.option("--retention-days", type=click.IntRange(min=0), default=0, show_default=True,
              help="Days an event is kept (0: forever).")
@_bus_option
@_data_option
@click.pass_context
def events_create_archive(ctx, name, pattern, retention_days, bus_name, data):
    """Create archive NAME of the bus's events; prints the archive."""
    pat = _pattern_arg(pattern, "--pattern")
    with _broker(_data(ctx, data), create=True) as b:
        _echo(_archive_json(b.get_bus(bus_name).create_archive(name, pattern=pat, retention_days=retention_days)))


@events.command("archives")
@_bus_option
@_data_option
@click.pass_context
def events_archives(ctx, bus_name, data):
    """List the bus's archives, one JSON line each."""
    with _broker(_data(ctx, data)) as b:
        for a in b.get_bus(bus_name).list_archives():
            _echo(_archive_json(a))


@events.command("start-replay")
@click.argument("name")
@click.option("--archive", "archive", required=True, metavar="ARCHIVE", help="The archive to replay.")
@click.option("--start", "start", required=True, metavar="TIME", help="Replay events from this time (included).")
@click.option("--end", "end", required=True, metavar="TIME", help="Replay events up to this time (excluded).")
@click.option("--rule", "rules", multiple=True, metavar="RULE", help="Only to this rule's targets (repeatable).")
@_bus_option
@_data_option
@click.pass_context
def events_start_replay(ctx, name, archive, start, end, rules, bus_name, data):
    """Start replay NAME of an archive's events in [--start, --end); a worker runs it."""
    s, e = _time_arg(start, "--start"), _time_arg(end, "--end")
    if e <= s:
        raise click.BadParameter(f"must be after --start ({start}); got {end}", param_hint="--end")
    with _broker(_data(ctx, data)) as b:
        bus = b.get_bus(bus_name)
        if archive not in {a.name for a in bus.list_archives()}:
            raise _Fail(f"--archive: archive {archive!r} does not exist on bus {bus.name!r}", EXIT_NO_SUCH)
        _echo(_replay_json(bus.start_replay(name, archive, s, e, rules=list(rules) or None)))


def _replay_named(bus, name: str):
    for r in bus.list_replays():
        if r.name == name:
            return r
    raise _Fail(f"replay {name!r} does not exist on bus {bus.name!r}", EXIT_NO_SUCH)


@events.command("describe-replay")
@click.argument("name")
@_bus_option
@_data_option
@click.pass_context
def events_describe_replay(ctx, name, bus_name, data):
    """Print replay NAME: its state (RUNNING, COMPLETED), archive, range and rules."""
    with _broker(_data(ctx, data)) as b:
        _echo(_replay_json(_replay_named(b.get_bus(bus_name), name)))


@events.command("replays")
@_bus_option
@_data_option
@click.pass_context
def events_replays(ctx, bus_name, data):
    """List the bus's replays, one JSON line each."""
    with _broker(_data(ctx, data)) as b:
        for r in b.get_bus(bus_name).list_replays():
            _echo(_replay_json(r))


COMMANDS = [events]
