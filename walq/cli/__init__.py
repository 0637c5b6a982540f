"""The ``walq`` command: operate, inspect and crash-test a store.

    walq [--data DIR] COMMAND [ARGS]...

Every command works on the store directory given by ``--data`` (before or
after the command name), else ``$WALQ_DATA``, else ``./walq-data``.  Results
go to stdout (JSON lines where a script would parse them), progress and
errors to stderr.  The exit codes (``EXIT_*`` in walq/cli/common.py) are
listed in ``walq --help``; a walq error is one line (``Error: ...``), never a
traceback.

One module per command group: each defines its click commands and lists them
in ``COMMANDS``; a new group is a new module added to ``_GROUPS`` below.
"""

from __future__ import annotations

import click

import walq
from walq.cli import dlq as _dlq
from walq.cli import events as _events
from walq.cli import messages as _messages
from walq.cli import queue as _queue
from walq.cli import stats as _stats
from walq.cli import tools as _tools
from walq.cli import topic as _topic
from walq.cli import worker as _worker
from walq.cli.common import (DEFAULT_DATA, EXIT_DAMAGE, EXIT_ERROR, EXIT_NO_QUEUE, EXIT_OK, EXIT_PIPE, EXIT_USAGE,
                             CliError, RootGroup)

__all__ = ["main", "EXIT_OK", "EXIT_DAMAGE", "EXIT_USAGE", "EXIT_NO_QUEUE", "EXIT_ERROR", "EXIT_PIPE", "CliError"]

_GROUPS = (_queue, _messages, _stats, _dlq, _topic, _events, _tools, _worker)

_EPILOG = f"""\b
Every command that works on a store takes --data DIR (default: $WALQ_DATA,
else {DEFAULT_DATA}).
\b
Exit codes:
  0    success
  1    damage found (verify, a damaged store) or an invariant violated (crash-bench)
  2    usage error: unknown option, missing, malformed or out-of-range value
  3    the named queue does not exist
  4    any other error (a queue exists with other attributes, no store, I/O error)
  141  standard output closed early (walq receive ... | head -1), as for cat
"""


@click.group(cls=RootGroup, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", metavar="DIR", envvar="WALQ_DATA", default=DEFAULT_DATA, show_default=True,
              help="Store directory [env: WALQ_DATA].")
@click.version_option(walq.__version__, prog_name="walq")
@click.pass_context
def main(ctx: click.Context, data: str) -> None:
    """walq: persistent SQS-style message queues in a local directory.

    Operate queues (queue, send, receive, ack, purge, stats, dlq) and topics
    (topic), run handlers and deliveries (worker), inspect
    the files (verify, dump), and see it work (demo, crash-bench, bench).
    """
    ctx.ensure_object(dict)
    ctx.obj["data"] = data




for _module in _GROUPS:
    for _command in _module.COMMANDS:
        main.add_command(_command)
