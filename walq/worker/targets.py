"""DeliveryTarget: one HTTP or handler subscription's pending deliveries.

STAND-IN, as the topics/worker contract shows it, until the worker's own
module replaces this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from walq.worker.retry import RetryPolicy


@dataclass(frozen=True)
class DeliveryTarget:
    """Where the worker finds (``queue``) and sends (``kind``, ``endpoint``) deliveries."""

    key: str
    queue: Any
    kind: str
    endpoint: str
    raw: bool
    retry: RetryPolicy
    dead_letter: Any
    topic_arn: str
