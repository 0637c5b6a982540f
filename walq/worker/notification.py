"""Notification: what a handler subscription's function is called with."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

__all__ = ["Notification", "from_envelope", "EnvelopeError"]


class EnvelopeError(ValueError):
    """A pending delivery whose body is not an SNS envelope (internal: the
    worker dead-letters it as ``InvalidEnvelope``)."""


@dataclass(frozen=True)
class Notification:
    """One SNS notification, as a handler subscription receives it.

    ``message`` is the published text; ``attributes`` maps each message
    attribute's name to its value as walq queue attributes hold them (str,
    int or float for ``Number``, bytes for ``Binary``); ``timestamp`` is the
    publish time in epoch seconds; ``group`` and ``sequence`` are set for
    FIFO topics; ``receive_count`` is 1 on the first attempt.
    """

    message_id: str
    topic_arn: str
    subject: str | None
    message: str
    attributes: dict = field(default_factory=dict)
    timestamp: float = 0.0
    group: str | None = None
    sequence: int | None = None
    receive_count: int = 1


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text  # SNS checks Number values at publish; keep what came


def _attribute(spec) -> object:
    if not isinstance(spec, dict):
        raise EnvelopeError("a MessageAttributes entry is not an object")
    kind, value = spec.get("Type", "String"), spec.get("Value")
    if kind == "Number" and isinstance(value, str):
        return _number(value)
    if kind == "Binary" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value
    return value


def _epoch(stamp) -> float:
    if not isinstance(stamp, str):
        raise EnvelopeError("Timestamp is missing")
    try:
        dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        raise EnvelopeError(f"Timestamp {stamp!r} is not ISO-8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_envelope(body: bytes) -> dict:
    """The envelope dict of a pending delivery; EnvelopeError if it is not one."""
    try:
        env = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"body is not JSON: {exc}") from None
    if not isinstance(env, dict):
        raise EnvelopeError("body is not a JSON object")
    for key in ("MessageId", "TopicArn", "Message"):
        if not isinstance(env.get(key), str):
            raise EnvelopeError(f"envelope has no {key}")
    return env


def from_envelope(env: dict, *, group: str | None = None, receive_count: int = 1) -> Notification:
    """The Notification for an envelope (``parse_envelope``'s result)."""
    attrs = env.get("MessageAttributes") or {}
    if not isinstance(attrs, dict):
        raise EnvelopeError("MessageAttributes is not an object")
    seq = env.get("SequenceNumber")
    try:
        sequence = int(seq) if seq is not None else None
    except (TypeError, ValueError):
        raise EnvelopeError(f"SequenceNumber {seq!r} is not an integer") from None
    return Notification(
        message_id=env["MessageId"],
        topic_arn=env["TopicArn"],
        subject=env.get("Subject"),
        message=env["Message"],
        attributes={name: _attribute(spec) for name, spec in attrs.items()},
        timestamp=_epoch(env.get("Timestamp")),
        group=group if group is not None else env.get("MessageGroupId"),
        sequence=sequence,
        receive_count=receive_count,
    )
