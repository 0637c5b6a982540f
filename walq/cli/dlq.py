"""``walq dlq sources|redrive``: dead-letter queues."""

from __future__ import annotations

import click

from walq.cli.common import WalqGroup, data_option, open_store, store_path


@click.group(cls=WalqGroup)
def dlq() -> None:
    """Dead-letter queues: which queues feed one, and moving messages back."""


@dlq.command("sources")
@click.argument("name")
@data_option
@click.pass_context
def dlq_sources(ctx, name, data):
    """List the queues whose redrive policy names dead-letter queue NAME."""
    with open_store(store_path(ctx, data), queue=name) as b:
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
    with open_store(store_path(ctx, data), queue=name) as b:
        n = b.move_messages(name, destination)
        click.echo(f"moved {n} message{'s' if n != 1 else ''}")




COMMANDS = [dlq]
