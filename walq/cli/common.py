"""What every command group shares: exit codes, the one-line error, ``--data``,
opening the store, and output helpers."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict

import click

import walq
from walq import inspect as winspect
from walq.errors import CorruptionError, QueueDoesNotExist, WalqError

EXIT_OK = 0  # success
EXIT_DAMAGE = 1  # verify found damage, crash-bench found a violated invariant, a damaged store
EXIT_USAGE = 2  # bad options or arguments (click's own code)
EXIT_NO_QUEUE = 3  # the named queue does not exist
EXIT_ERROR = 4  # any other error: walq refused the request, a file could not be read, ...

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


class WalqGroup(click.Group):
    """Turns walq errors raised by any subcommand into one-line errors and exit codes."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except QueueDoesNotExist as exc:
            raise CliError(one_line(exc), EXIT_NO_QUEUE) from None
        except CorruptionError as exc:
            raise CliError(f"damaged store: {one_line(exc)} (run walq verify)", EXIT_DAMAGE) from None
        except WalqError as exc:
            raise CliError(one_line(exc), EXIT_ERROR) from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise CliError(f"{exc.strerror or one_line(exc)}{where}", EXIT_ERROR) from None


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
    b = walq.open(data)
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


