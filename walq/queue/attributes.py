"""Queue attributes, redrive policies and the SQS rules that bound them."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace

from walq.errors import InvalidParameter

_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")

# (low, high) for each integer attribute, as SQS documents them.
RANGES = {
    "visibility_timeout": (0, 43_200),
    "retention": (60, 1_209_600),
    "delay": (0, 900),
    "max_message_size": (1_024, 1_048_576),
    "receive_wait": (0, 20),
}
DEDUP_SCOPES = ("queue", "group")
MAX_RECEIVES = (1, 1_000)
DEDUP_WINDOW_S = 300.0


@dataclass(frozen=True)
class RedrivePolicy:
    """Send a message to dead-letter queue ``queue`` on the receive that
    would exceed ``max_receives`` (1-1,000)."""

    queue: str
    max_receives: int

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not self.queue:
            raise InvalidParameter("RedrivePolicy.queue must be a queue name")
        validate_name(self.queue)
        lo, hi = MAX_RECEIVES
        if type(self.max_receives) is not int or not lo <= self.max_receives <= hi:
            raise InvalidParameter(f"RedrivePolicy.max_receives must be {lo}-{hi}; got {self.max_receives!r}")


@dataclass(frozen=True)
class QueueAttributes:
    """A queue's settings (seconds unless said).  Frozen: change them with
    ``Queue.set_attributes``."""

    name: str
    fifo: bool
    visibility_timeout: int = 30
    retention: int = 345_600
    delay: int = 0
    max_message_size: int = 1_048_576
    receive_wait: int = 0
    dead_letter: RedrivePolicy | None = None
    content_based_dedup: bool = False
    dedup_scope: str = "queue"

    def to_json(self) -> dict:
        """A JSON-able dict (for the catalog)."""
        d = asdict(self)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "QueueAttributes":
        """Inverse of to_json."""
        d = dict(d)
        if d.get("dead_letter"):
            d["dead_letter"] = RedrivePolicy(**d["dead_letter"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_changes(self, **changes) -> "QueueAttributes":
        """A validated copy with ``changes`` applied (never ``name``/``fifo``)."""
        for key in changes:
            if key in ("name", "fifo"):
                raise InvalidParameter(f"{key} cannot be changed after a queue is created")
            if key not in SETTABLE:
                raise InvalidParameter(f"unknown queue attribute {key!r}; known: {', '.join(SETTABLE)}")
        new = replace(self, **changes)
        validate(new)
        return new


SETTABLE = tuple(f.name for f in fields(QueueAttributes) if f.name not in ("name", "fifo"))


def validate_name(name) -> None:
    """SQS queue names: 1-80 of [A-Za-z0-9_-], plus '.fifo' for FIFO queues."""
    if not isinstance(name, str):
        raise InvalidParameter(f"queue name must be a str; got {type(name).__name__}")
    stem = name[:-5] if name.endswith(".fifo") else name
    if not _NAME.fullmatch(stem) or len(name) > 80:
        raise InvalidParameter(
            f"invalid queue name {name!r}: use 1-80 characters of A-Z a-z 0-9 _ - "
            "(FIFO queues end in .fifo, counted in the 80)"
        )


def _check_int(key: str, value) -> None:
    lo, hi = RANGES[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidParameter(f"{key} must be an integer {lo}-{hi}; got {value!r}")


def validate(attrs: QueueAttributes) -> None:
    """Checks every attribute against SQS's ranges and FIFO rules."""
    validate_name(attrs.name)
    if attrs.fifo != attrs.name.endswith(".fifo"):
        raise InvalidParameter(
            f"queue {attrs.name!r}: FIFO queue names must end in .fifo, and only FIFO queue names may"
        )
    for key in RANGES:
        _check_int(key, getattr(attrs, key))
    if not isinstance(attrs.content_based_dedup, bool):
        raise InvalidParameter("content_based_dedup must be True or False")
    if attrs.content_based_dedup and not attrs.fifo:
        raise InvalidParameter("content_based_dedup applies to FIFO queues only")
    if attrs.dedup_scope not in DEDUP_SCOPES:
        raise InvalidParameter(f"dedup_scope must be 'queue' or 'group'; got {attrs.dedup_scope!r}")
    if attrs.dedup_scope != "queue" and not attrs.fifo:
        raise InvalidParameter("dedup_scope applies to FIFO queues only")
    if attrs.dead_letter is not None and not isinstance(attrs.dead_letter, RedrivePolicy):
        raise InvalidParameter("dead_letter must be a walq.RedrivePolicy or None")
    if attrs.dead_letter is not None and attrs.dead_letter.queue == attrs.name:
        raise InvalidParameter("a queue cannot be its own dead-letter queue")
