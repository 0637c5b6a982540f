"""The topics' catalog: which topics and subscriptions exist, in a small log.

Kept apart from the queues' catalog (walq/catalog.py), in the same way:
``<store>/topics/catalog/`` is a walq log of JSON records (type 1), replayed
by every process that uses topics, so a change made in one process applies
to the next publish in every other.  Records (docs/format.md, "Topics"):

    {"op": "topic", "name": N, "uid": U, "fifo": F, "content_based_dedup": C}
    {"op": "delete_topic", "name": N, "uid": U}
    {"op": "subscribe", "topic": U, "sub": {...}}     a new subscription
    {"op": "set", "topic": U, "sub": {...}}           its new attributes (whole)
    {"op": "unsubscribe", "topic": U, "id": I}

A subscription (``sub``) is ``{"id", "protocol", "endpoint", "queue", "quid", "qpos",
"filter_policy", "filter_scope", "raw", "dead_letter", "retry"}``: ``queue``
is the queue the fan-out copies into (the subscribed queue, or the
subscription's internal queue), ``quid`` its uid and ``qpos`` its log end
when the subscription was made (where completing a fan-out starts looking).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, replace

from walq.log import LogOptions
from walq.log.replicated import ReplicatedState



@dataclass(frozen=True)
class SubEntry:
    """One subscription as the catalog holds it."""

    id: str
    protocol: str
    endpoint: str
    queue: str
    quid: int = 0
    qpos: int = 0
    filter_policy: str | None = None  # JSON text, canonical (sorted keys)
    filter_scope: str = "attributes"
    raw: bool = False
    dead_letter: str | None = None
    retry: dict | None = None

    def to_json(self) -> dict:
        """A JSON-able dict."""
        return asdict(self)

    def with_changes(self, **changes) -> "SubEntry":
        """A copy with ``changes``."""
        return replace(self, **changes)


@dataclass(frozen=True)
class TopicEntry:
    """One topic: its uid, kind and subscriptions (id -> SubEntry, in order made)."""

    name: str
    uid: int
    fifo: bool
    content_based_dedup: bool
    subs: dict


class TopicCatalog(ReplicatedState):
    """The topics' catalog log and its replayed state."""

    def __init__(self, root: str, options: LogOptions, io=None):
        self.topics: dict[str, TopicEntry] = {}
        self.deleted: set[int] = set()
        super().__init__(os.path.join(root, "topics", "catalog"), options, io)

    def apply(self, r: dict) -> None:
        """Applies one catalog record."""
        op = r["op"]
        if op == "topic":
            self.topics[r["name"]] = TopicEntry(r["name"], r["uid"], r["fifo"], r["content_based_dedup"], {})
        elif op == "delete_topic":
            self.deleted.add(r["uid"])
            cur = self.topics.get(r["name"])
            if cur is not None and cur.uid == r["uid"]:
                del self.topics[r["name"]]
        else:
            entry = self.by_uid(r["topic"])
            if entry is None:
                return
            if op in ("subscribe", "set"):
                sub = SubEntry(**r["sub"])
                entry.subs[sub.id] = sub
            elif op == "unsubscribe":
                entry.subs.pop(r["id"], None)

    def by_uid(self, uid: int) -> TopicEntry | None:
        """The live topic with ``uid``, if any."""
        for entry in self.topics.values():
            if entry.uid == uid:
                return entry
        return None

    @staticmethod
    def new_uid() -> int:
        """A random 63-bit id for a new topic."""
        return secrets.randbits(63)

