"""The values queue calls return: messages, send results, batch results, stats."""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from walq.errors import InvalidParameter

if TYPE_CHECKING:
    from walq.queue.queue import Queue


class SendResult(NamedTuple):
    """``message_id`` of the stored message; ``sequence`` for FIFO queues.

    ``duplicate`` is True when a FIFO send fell in the dedup window: it was
    accepted, returns the first send's id, and will not be delivered again.
    """

    message_id: str
    sequence: int | None = None
    duplicate: bool = False


class BatchResult:
    """Per-entry outcome: ``successful`` (index, result) and ``failed`` (index, error).

    Both are plain lists.  A batch whose every entry succeeded may build
    ``successful`` on first reading (a hundred SendResults cost a plain
    send_batch a third of its time, and many producers never look).
    """

    __slots__ = ("_successful", "_later", "failed")

    def __init__(self, successful: list[tuple[int, Any]] | None = None,
                 failed: list[tuple[int, Exception]] | None = None):
        self._successful = [] if successful is None else successful
        self._later: Callable[[], list] | None = None
        self.failed = [] if failed is None else failed

    @classmethod
    def _all_ok(cls, build: Callable[[], list]) -> "BatchResult":
        """A result whose ``successful`` list ``build()`` makes when first read."""
        r = cls()
        r._later = build
        return r

    @property
    def successful(self) -> list[tuple[int, Any]]:
        """``(index, result)`` of each entry that succeeded, in entry order."""
        build = self._later
        if build is not None:
            self._successful = build()
            self._later = None
        return self._successful

    @successful.setter
    def successful(self, value: list[tuple[int, Any]]) -> None:
        self._successful = value
        self._later = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BatchResult):
            return NotImplemented
        return (self.successful, self.failed) == (other.successful, other.failed)

    __hash__ = None  # mutable, as the dataclass it replaces

    def __repr__(self) -> str:
        return f"BatchResult(successful={self.successful!r}, failed={self.failed!r})"


@dataclass(frozen=True)
class QueueStats:
    """Counts of a queue's messages as of now (approximate, as in SQS)."""

    visible: int
    in_flight: int
    delayed: int
    oldest_age_s: float
    total: int = 0
    disk_bytes: int = 0


@dataclass(slots=True)  # slots: a receive builds one per message
class Message:
    """A received message, leased to this receiver until its visibility timeout.

    A Message pickles (to hand it to a process pool, say) as its fields
    without its queue: the receipt is all another process needs to
    acknowledge it, through a queue of that process's own broker on the same
    store - ``m.ack(q)`` or ``m.change_visibility(s, q)``.  Called without a
    queue, they use the queue the message was received from, and refuse
    (``InvalidParameter``) on an unpickled message, which has none.
    """

    message_id: str
    body: bytes
    attributes: dict[str, str | int | float | bytes]
    receipt: str
    receive_count: int
    sent_at: float
    first_received_at: float
    group: str | None = None
    dedup_id: str | None = None
    sequence: int | None = None
    _queue: "Queue | None" = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON; ``InvalidParameter`` (a ValueError) if it is not."""
        try:
            return _json.loads(self.body)
        except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bytes that are no text
            where = f" at position {exc.pos}" if isinstance(exc, _json.JSONDecodeError) else ""
            reason = exc.msg if isinstance(exc, _json.JSONDecodeError) else "not UTF-8, -16 or -32 text"
            raise InvalidParameter(f"message {self.message_id} body is not JSON: {reason}{where}") from exc

    def ack(self, queue: "Queue | None" = None) -> None:
        """Deletes the message (``queue.delete(self.receipt)``), on ``queue``
        if given, else on the queue it was received from."""
        self._on(queue).delete(self.receipt)

    def change_visibility(self, seconds: float, queue: "Queue | None" = None) -> None:
        """Extends or ends the lease, counted from now (0 = visible now)."""
        self._on(queue).change_visibility(self.receipt, seconds)

    def _on(self, queue: "Queue | None") -> "Queue":
        q = queue if queue is not None else self._queue
        if q is None:
            raise InvalidParameter(
                f"message {self.message_id} has no queue (it was unpickled or built by hand): pass the queue "
                f"to act on, e.g. m.ack(broker.get_queue(name))")
        return q

    def __reduce__(self) -> tuple:
        # Everything but the queue, which holds files and locks of this process.
        return (Message, (self.message_id, self.body, self.attributes, self.receipt, self.receive_count,
                          self.sent_at, self.first_received_at, self.group, self.dedup_id, self.sequence))
