"""What every command group shares: exit codes, the one-line error, ``--data``,
opening the store, and output helpers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from dataclasses import asdict

import click

import walq
from walq.tools import inspect as winspect
from walq.errors import CorruptionError, InvalidParameter, QueueDoesNotExist, WalqError

EXIT_OK = 0  # success
EXIT_DAMAGE = 1  # verify found damage, crash-bench found a violated invariant, a damaged store
EXIT_USAGE = 2  # bad options or arguments (click's own code)
EXIT_NO_QUEUE = 3  # the named queue does not exist
EXIT_ERROR = 4  # any other error: walq refused the request, a file could not be read, ...
EXIT_PIPE = 141  # standard output was closed early (| head): 128 + SIGPIPE, as the shell reports cat's

DEFAULT_DATA = "./walq-data"


class CliError(click.ClickException):
    """An error printed as one line, with the exit code scripts rely on."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type's name if it has none)."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def flag_names(text: str, command: click.Command) -> str:
    """``text`` (a walq error) with the Python keywords it names replaced by
    ``command``'s own flags: ``max_messages must be ...`` becomes ``--max
    must be ...``, ``(group=...)`` becomes ``(--group)``.

    A keyword is replaced where it is plainly a parameter: at the start of
    the message, followed by ``=``, or spelt with an underscore; a plain word
    such as "delay" in the middle of a sentence stays a word.
    """
    flags = {p.name: max(p.opts, key=len) for p in command.params
             if isinstance(p, click.Option) and p.name and p.name != "data"}

    def swap(m: re.Match) -> str:
        name = m.group("name")
        flag = flags.get(name)
        if flag is None:
            return m.group(0)
        plain = m.start() == 0 or m.group("eq") or "_" in name or m.group("cls")
        return flag if plain else m.group(0)

    return re.sub(r"(?<![\w.\-])(?P<cls>RedrivePolicy\.)?(?P<name>[a-z][a-z_]*)(?P<eq>=(?:\.\.\.)?)?(?![\w])",
                  swap, text)


def _check_utf8(command: click.Command, ctx: click.Context) -> None:
    """Refuses arguments that are not UTF-8 (Python hands them over as lone
    surrogates, which no walq name, body or attribute can hold).  Paths are
    exempt: a directory name may be any bytes."""
    for p in command.params:
        if p.name == "data" or isinstance(p.type, click.Path):
            continue
        value = ctx.params.get(p.name)
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    shown = v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                    raise click.BadParameter(f"{shown!r} is not valid UTF-8", ctx=ctx, param=p) from None


class WalqCommand(click.Command):
    """A command whose bad input is a usage error (exit 2) naming the flag."""

    def invoke(self, ctx: click.Context):
        _check_utf8(self, ctx)
        try:
            return super().invoke(ctx)
        except InvalidParameter as exc:
            raise click.UsageError(flag_names(one_line(exc), self), ctx) from None


class WalqGroup(click.Group):
    """Turns walq errors raised by any subcommand into one-line errors and exit codes."""

    command_class = WalqCommand

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # the root group exits quietly with EXIT_PIPE
        except QueueDoesNotExist as exc:
            raise CliError(one_line(exc), EXIT_NO_QUEUE) from None
        except CorruptionError as exc:
            raise CliError(f"damaged store: {one_line(exc)}", EXIT_DAMAGE) from None
        except InvalidParameter as exc:
            raise click.UsageError(one_line(exc), ctx) from None
        except WalqError as exc:
            raise CliError(one_line(exc), EXIT_ERROR) from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise CliError(f"{exc.strerror or one_line(exc)}{where}", EXIT_ERROR) from None


class RootGroup(WalqGroup):
    """The ``walq`` group: also ends quietly when standard output closes early.

    ``walq receive ... | head -1``: once the reader is gone, the next write
    fails (EPIPE).  Like cat or seq killed by SIGPIPE, walq then prints
    nothing more and exits 141 (128 + SIGPIPE).  A message whose line was
    not written and flushed is never acknowledged, so it comes back.
    """

    def invoke(self, ctx):
        try:
            rv = super().invoke(ctx)
            sys.stdout.flush()  # inside the try: a late EPIPE is caught too
            return rv
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_PIPE) from None


def _silence_stdout() -> None:
    """Points fd 1 at /dev/null so that the interpreter's last flush of what
    is still buffered does not fail again ("Exception ignored ...")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (click's test runner)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class Seconds(click.FloatRange):
    """A finite number of seconds within a range (FloatRange lets nan and inf
    through: every comparison with nan is false)."""

    name = "seconds"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return rv


# -- shared options and helpers ------------------------------------------------------


def data_option(f):
    """``--data DIR`` on a subcommand (overrides the group's)."""
    return click.option("--data", "data", metavar="DIR", default=None,
                        help="Store directory (default: $WALQ_DATA, else ./walq-data).")(f)


def store_path(ctx: click.Context, data: str | None) -> str:
    """The store directory: the subcommand's --data, else the group's, else $WALQ_DATA."""
    if data is not None:
        return data
    root = ctx.find_root()
    return (root.obj or {}).get("data") or os.environ.get("WALQ_DATA") or DEFAULT_DATA


@contextlib.contextmanager
def open_store(data: str, *, create: bool = False, queue: str | None = None):
    """Opens the store; refuses to create one by accident (a mistyped --data)."""
    if not create and not winspect.is_store(data):
        if queue is not None:
            raise QueueDoesNotExist(f"queue {queue!r} does not exist (no walq store at {data})")
        raise CliError(f"no walq store at {data} (create one with: walq --data {data} queue create NAME)")
    try:
        b = walq.open(data)
    except PermissionError as exc:
        if isinstance(exc, walq.WalqError) or create:
            raise
        b = walq.open(data, readonly=True)  # a user who may read the store: monitoring works, writes refuse
    try:
        yield b
    finally:
        b.close()


def echo_json(obj) -> None:
    """Prints ``obj`` as one JSON line."""
    click.echo(json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")))


def attrs_json(attrs) -> dict:
    """Queue attributes as a JSON-ready dict."""
    return asdict(attrs)  # dead_letter becomes {"queue", "max_receives"} or None


def human_age(seconds: float) -> str:
    """``4.2s``, ``3m05s``, ``2h10m``, ``1d03h``; ``-`` for zero."""
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


def human_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB`` ... ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


