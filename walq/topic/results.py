"""What a publish returns."""

from __future__ import annotations

from typing import NamedTuple


class PublishResult(NamedTuple):
    """``message_id`` of the publish (the envelope's ``MessageId``);
    ``sequence`` for FIFO topics (increasing within the topic), else None.
    A FIFO duplicate within five minutes returns the first publish's."""

    message_id: str
    sequence: int | None = None
