"""``walq worker``: run queue handlers and deliver subscriptions from the command line.

    walq worker --data DIR [QUEUE=package.module:function ...] [--concurrency N] [--batch-size N]

Runs until SIGTERM or Ctrl-C, then finishes the batches in hand and exits 0.
Exit codes as every walq command: 2 usage (a malformed QUEUE=HANDLER, a
handler that does not import, a flag out of range), 3 a named queue does not
exist, 4 any other error.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import click

__all__ = ["worker", "COMMANDS"]

_EXIT_NO_QUEUE = 3
_EXIT_ERROR = 4


class _Failed(click.ClickException):
    """A one-line error with walq's exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _data_dir(ctx: click.Context, data: str | None) -> str:
    if data is not None:
        return data
    root = ctx.find_root()
    return (root.obj or {}).get("data") or os.environ.get("WALQ_DATA") or "./walq-data"


def _parse(spec: str) -> tuple[str, str]:
    name, sep, handler = spec.partition("=")
    if not sep or not name or not handler:
        raise click.BadParameter(f"{spec!r} is not QUEUE=package.module:function", param_hint="QUEUE=HANDLER")
    return name, handler


@click.command("worker")
@click.argument("handlers", nargs=-1, metavar="[QUEUE=package.module:function]...")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="Batches handled at once (threads).")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Most messages per handler call.")
@click.option("--http-timeout", type=click.FloatRange(0.1, 300), default=15.0, show_default=True,
              help="Seconds an HTTP delivery may take per phase (connect at most 5).")
@click.option("--data", "data", metavar="DIR", default=None,
              help="Store directory (default: $WALQ_DATA, else ./walq-data).")
@click.option("-v", "--verbose", is_flag=True, help="Log every failed attempt, not only warnings.")
@click.pass_context
def worker(ctx, handlers, concurrency, batch_size, http_timeout, data, verbose):
    """Run queue handlers and deliver HTTP and handler subscriptions until
    SIGTERM or Ctrl-C (then finish the batches in hand and exit 0).

    Each QUEUE=package.module:function runs that function on batches of the
    queue's messages, as Lambda does: returning acks the batch, returning a
    list of failed message ids leaves those, raising leaves the whole batch.
    Modules are imported from the current directory and PYTHONPATH.
    """
    import walq
    from walq.tools import inspect as winspect
    from walq.errors import QueueDoesNotExist, WalqError
    from walq.worker.handlers import resolve

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # handlers live beside the user, as for python -m
    pairs = [_parse(spec) for spec in handlers]
    funcs = []
    for name, handler in pairs:
        try:
            funcs.append(resolve(handler))
        except WalqError as exc:
            raise click.BadParameter(str(exc), param_hint="QUEUE=HANDLER") from None
    path = _data_dir(ctx, data)
    if not winspect.is_store(path):
        if pairs:
            raise _Failed(f"queue {pairs[0][0]!r} does not exist (no walq store at {path})", _EXIT_NO_QUEUE)
        raise _Failed(f"no walq store at {path}", _EXIT_ERROR)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s walq worker: %(message)s")
    # Until run() installs its own: a SIGTERM that comes during start-up
    # stops the worker as cleanly as one that comes later.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with walq.open(path) as broker:
            w = walq.Worker(broker, concurrency=concurrency, http_timeout=http_timeout)
            for (name, _handler), func in zip(pairs, funcs):
                w.consume(name, func, batch_size=batch_size)
            click.echo(f"walq worker: {len(pairs)} queue handler(s) and the store's subscriptions, "
                       f"concurrency {concurrency}; SIGTERM or Ctrl-C stops", err=True)
            w.run(stop)
    except QueueDoesNotExist as exc:
        raise _Failed(" ".join(str(exc).split()), _EXIT_NO_QUEUE) from None
    except (WalqError, OSError) as exc:
        raise _Failed(" ".join(str(exc).split()) or type(exc).__name__, _EXIT_ERROR) from None
    click.echo("walq worker: stopped", err=True)


COMMANDS = [worker]
