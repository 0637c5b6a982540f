"""A small log of JSON records that every process replays into the same
state: the topics' and the buses' catalogs (walq/topic/catalog.py,
walq/bus/catalog.py).

A change is one record appended under the log's lock (decide, then write);
every process applies what others appended before it reads the state, and
waits until what it applied is durable: a change not yet synced must not
take effect, since a power cut could take it away.
"""

from __future__ import annotations

import json
import threading

from walq.log.log import Log
from walq.log.options import LogOptions

#: The record type of every catalog record.
RECORD = 1


class ReplicatedState:
    """A catalog log and the state its records replay into; subclasses
    define ``apply(record)`` (KeyError or TypeError if it is not one)."""

    def __init__(self, directory: str, options: LogOptions, io=None):
        self.log = Log.open(directory, options, io)
        self._applied = self.log.first
        self.mu = threading.RLock()
        self.refresh()

    def apply(self, record: dict) -> None:
        """Applies one record to the state."""
        raise NotImplementedError

    @property
    def version(self) -> int:
        """Changes whenever a record was applied (the position applied up to)."""
        return self._applied

    def refresh(self) -> None:
        """Replays what other processes appended; returns once that is durable."""
        if self._applied < self.log.end:
            self.log.settle(self.replay())

    def replay(self) -> int:
        """Applies records appended since the last look (no durability wait)."""
        with self.mu:
            for rec in self.log.iter_from(self._applied):
                self.apply(json.loads(rec.payload))
                self._applied = rec.seq + 1
            return self._applied

    def locked(self):
        """The log's append lock (decide, then write)."""
        return self.log.locked()

    def write(self, tx, record: dict) -> None:
        """Appends one record under ``tx`` and applies it (the lock's release
        waits for durability)."""
        tx.append(json.dumps(record, sort_keys=True).encode(), RECORD)
        self.replay()

    def close(self) -> None:
        """Closes the log."""
        self.log.close()
