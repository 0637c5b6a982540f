"""DeliveryTarget: one HTTP or handler subscription, as the worker sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from walq.worker.retry import RetryPolicy

if TYPE_CHECKING:
    from walq.queue.queue import Queue

__all__ = ["DeliveryTarget", "KINDS"]

KINDS = ("http", "https", "handler")


@dataclass(frozen=True)
class DeliveryTarget:
    """What ``Broker._delivery_targets()`` returns, one per subscription.

    Each message of ``queue`` is one pending delivery whose body is the SNS
    envelope JSON (whatever ``raw`` says).  ``key`` is the subscription ARN
    (the counters' key and the ``x-amz-sns-subscription-arn`` header).
    """

    key: str
    queue: "Queue"
    kind: str
    endpoint: str
    raw: bool
    retry: RetryPolicy
    dead_letter: "Queue | None"
    topic_arn: str
    #: Set for an event bus target (walq/bus): each message's body is what
    #: the target gets (the event, or its shaped input), not an SNS envelope.
    rule_arn: str | None = None
