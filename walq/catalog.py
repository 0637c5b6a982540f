"""The catalog: which queues exist, with which attributes, in a small log.

Records are JSON objects (type 1 in the catalog log):

    {"op": "create", "name": N, "uid": U, "attrs": {...}}
    {"op": "set",    "name": N, "uid": U, "attrs": {...}}
    {"op": "delete", "name": N, "uid": U}

Every process replays the catalog log, so a queue created or deleted in one
process is seen by the others on their next call.  Each queue lives in
``queues/<uid>``: a fresh uid per creation keeps a deleted queue's files from
ever mixing with a new queue of the same name.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from typing import NamedTuple

from walq.log import Log, LogOptions
from walq.queue.attributes import QueueAttributes

_CATALOG = 1


class Entry(NamedTuple):
    """One existing queue."""

    uid: int
    attrs: QueueAttributes


class Catalog:
    """The catalog log and its replayed state."""

    def __init__(self, root: str, options: LogOptions, readonly: bool = False):
        self.log = Log.open(os.path.join(root, "catalog"), options, readonly=readonly)
        self.queues: dict[str, Entry] = {}
        self._applied = self.log.first
        self.mu = threading.RLock()
        self.refresh()

    def refresh(self) -> None:
        """Replays records other processes appended (one shared-memory load
        when nothing changed)."""
        if self._applied >= self.log.end:
            return
        with self.mu:
            for rec in self.log.iter_from(self._applied):
                self._apply(json.loads(rec.payload))
                self._applied = rec.seq + 1

    def _apply(self, r: dict) -> None:
        op, name = r["op"], r["name"]
        if op in ("create", "set"):
            self.queues[name] = Entry(r["uid"], QueueAttributes.from_json(r["attrs"]))
        elif op == "delete":
            cur = self.queues.get(name)
            if cur is not None and cur.uid == r["uid"]:
                del self.queues[name]

    def locked(self):
        """The catalog's append lock (decide-then-write for create/set/delete)."""
        return self.log.locked()

    def write(self, tx, op: str, name: str, uid: int, attrs: QueueAttributes | None = None) -> None:
        """Appends one catalog record under ``tx`` and applies it."""
        rec = {"op": op, "name": name, "uid": uid}
        if attrs is not None:
            rec["attrs"] = attrs.to_json()
        tx.append(json.dumps(rec, sort_keys=True).encode())
        self.refresh()

    @staticmethod
    def new_uid() -> int:
        """A random 63-bit id for a new queue."""
        return secrets.randbits(63)

    def close(self) -> None:
        """Closes the catalog log."""
        self.log.close()
