"""Broker: a store directory opened by this process, and its queues."""

from __future__ import annotations

import os
import shutil
import threading
import time

from walq.catalog import Catalog
from walq.errors import BrokerClosed, InvalidParameter, QueueAlreadyExists, QueueDoesNotExist
from walq.log import LogOptions
from walq.queue.attributes import QueueAttributes, RedrivePolicy, validate, validate_name
from walq.queue.queue import Queue


def open(path, *, durability: str = "always", sync_interval: float = 0.01, clock=None,
         segment_size: int = 64 * 1024 * 1024) -> "Broker":
    """Opens (creating if missing) the store at ``path``.

    durability: ``"always"`` (fdatasync before a write returns, shared by
    concurrent writers), ``"batch"`` (synced within ``sync_interval``
    seconds), or ``"os"`` (never fsyncs).  Every mode survives kill -9.
    clock: a ``time.time``-like function (tests inject a fake one).
    """
    return Broker(path, durability=durability, sync_interval=sync_interval, clock=clock,
                  segment_size=segment_size)


class Broker:
    """A store opened by this process; share it between threads.

    After ``os.fork()`` the child must open its own Broker.
    """

    def __init__(self, path, *, durability="always", sync_interval=0.01, clock=None,
                 segment_size=64 * 1024 * 1024):
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidParameter(f"path must be a str or os.PathLike; got {type(path).__name__}")
        if clock is not None and not callable(clock):
            raise InvalidParameter("clock must be a callable returning epoch seconds")
        self._log_options = LogOptions(durability=durability, sync_interval=sync_interval,
                                       segment_size=segment_size)
        self.path = os.fspath(path)
        self._clock = clock or time.time
        os.makedirs(os.path.join(self.path, "queues"), exist_ok=True)
        self._catalog = Catalog(self.path, self._log_options)
        self._queues: dict[str, Queue] = {}
        self._mu = threading.RLock()
        self._closed = False

    # -- queues ----------------------------------------------------------------

    def create_queue(self, name, *, fifo=None, visibility_timeout=30, retention=345_600, delay=0,
                     max_message_size=1_048_576, receive_wait=0, dead_letter=None,
                     content_based_dedup=False, dedup_scope="queue") -> Queue:
        """Creates a queue, or returns it if it exists with the same attributes."""
        self._check()
        validate_name(name)
        is_fifo = name.endswith(".fifo")
        if fifo is not None:
            if not isinstance(fifo, bool):
                raise InvalidParameter("fifo must be True, False or None")
            if fifo != is_fifo:
                raise InvalidParameter(
                    f"queue {name!r}: fifo={fifo} but FIFO queue names must end in .fifo (and only they may)"
                )
        attrs = QueueAttributes(
            name=name, fifo=is_fifo, visibility_timeout=visibility_timeout, retention=retention,
            delay=delay, max_message_size=max_message_size, receive_wait=receive_wait,
            dead_letter=dead_letter, content_based_dedup=content_based_dedup, dedup_scope=dedup_scope,
        )
        validate(attrs)
        cat = self._catalog
        with cat.locked() as tx:
            cat.refresh()
            cur = cat.queues.get(name)
            if cur is not None:
                if cur.attrs != attrs:
                    differ = ", ".join(f"{k} is {getattr(cur.attrs, k)!r}, not {getattr(attrs, k)!r}"
                                       for k in attrs.__dataclass_fields__ if getattr(cur.attrs, k) != getattr(attrs, k))
                    raise QueueAlreadyExists(f"queue {name!r} exists with different attributes: {differ}")
            else:
                self._check_dead_letter(attrs)
                uid = cat.new_uid()
                os.makedirs(self._queue_dir(uid), exist_ok=True)
                cat.write(tx, "create", name, uid, attrs)
        return self.get_queue(name)

    def _check_dead_letter(self, attrs: QueueAttributes) -> None:
        policy = attrs.dead_letter
        if policy is None:
            return
        target = self._catalog.queues.get(policy.queue)
        if target is None:
            raise QueueDoesNotExist(f"dead-letter queue {policy.queue!r} does not exist")
        if target.attrs.fifo != attrs.fifo:
            raise InvalidParameter(
                f"dead-letter queue {policy.queue!r} must be of the same kind as {attrs.name!r} "
                "(both FIFO or both standard)"
            )

    def _queue_dir(self, uid: int) -> str:
        return os.path.join(self.path, "queues", f"{uid:016x}")

    def get_queue(self, name) -> Queue:
        """The named queue; QueueDoesNotExist if absent."""
        self._check()
        if not isinstance(name, str):
            raise InvalidParameter(f"queue name must be a str; got {type(name).__name__}")
        self._catalog.refresh()
        entry = self._catalog.queues.get(name)
        if entry is None:
            raise QueueDoesNotExist(f"queue {name!r} does not exist")
        with self._mu:
            q = self._queues.get(name)
            if q is not None and q._uid != entry.uid:
                q._close()
                q = None
            if q is None:
                q = Queue(self, name, entry.uid, self._queue_dir(entry.uid))
                self._queues[name] = q
            return q

    def list_queues(self, prefix: str = "") -> list[str]:
        """Queue names starting with ``prefix``, sorted."""
        self._check()
        if not isinstance(prefix, str):
            raise InvalidParameter("prefix must be a str")
        self._catalog.refresh()
        return sorted(n for n in self._catalog.queues if n.startswith(prefix))

    def delete_queue(self, name) -> None:
        """Deletes a queue and its messages; QueueDoesNotExist if absent."""
        self._check()
        if not isinstance(name, str):  # as get_queue: a bad name, not a missing queue
            raise InvalidParameter(f"queue name must be a str; got {type(name).__name__}")
        cat = self._catalog
        with cat.locked() as tx:
            cat.refresh()
            entry = cat.queues.get(name)
            if entry is None:
                raise QueueDoesNotExist(f"queue {name!r} does not exist")
            cat.write(tx, "delete", name, entry.uid)
        with self._mu:
            q = self._queues.pop(name, None)
            if q is not None:
                q._close()
        shutil.rmtree(self._queue_dir(entry.uid), ignore_errors=True)

    # -- dead letters ------------------------------------------------------------

    def dead_letter_sources(self, name) -> list[str]:
        """Queues whose redrive policy names ``name``, sorted."""
        self._check()
        if not isinstance(name, str):
            raise InvalidParameter(f"queue name must be a str; got {type(name).__name__}")
        self._catalog.refresh()
        if name not in self._catalog.queues:
            raise QueueDoesNotExist(f"queue {name!r} does not exist")
        return sorted(n for n, e in self._catalog.queues.items()
                      if e.attrs.dead_letter is not None and e.attrs.dead_letter.queue == name)

    def move_messages(self, dead_letter_queue, destination=None) -> int:
        """Moves the visible messages of a dead-letter queue back to their
        source queues (or to ``destination``); returns how many moved.
        Moved messages start a fresh receive count."""
        self._check()
        dlq = self.get_queue(dead_letter_queue)
        dest = self.get_queue(destination) if destination is not None else None
        if dest is not None and dest.attributes.fifo != dlq.attributes.fifo:
            raise InvalidParameter("destination must be of the same kind as the dead-letter queue")
        existing = set(self.list_queues())
        accept = (lambda rec: True) if dest is not None else (lambda rec: rec.source in existing)
        hidden = dlq._hide_visible(accept)
        by_target: dict[str, list] = {}
        for item in hidden:
            by_target.setdefault(dest.name if dest else item[1].source, []).append(item)
        moved = 0
        for target_name, items in by_target.items():
            target = dest or self.get_queue(target_name)
            moved += dlq._move_out(items, target, reset_time=False, fresh_count=True, source_name=None)
        return moved

    # -- used by Queue ---------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise BrokerClosed(f"broker for {self.path} is closed")

    def _check_queue(self, q: Queue):
        """The queue's catalog entry; BrokerClosed or QueueDoesNotExist."""
        self._check()
        self._catalog.refresh()
        entry = self._catalog.queues.get(q.name)
        if entry is None or entry.uid != q._uid:
            raise QueueDoesNotExist(f"queue {q.name!r} does not exist (it was deleted)")
        return entry

    def _attributes_of(self, q: Queue) -> QueueAttributes:
        return self._check_queue(q).attrs

    def _dead_letter_target(self, policy: RedrivePolicy) -> Queue | None:
        try:
            return self.get_queue(policy.queue)
        except QueueDoesNotExist:
            return None  # the dead-letter queue was deleted: messages stay put

    def _set_attributes(self, q: Queue, changes: dict) -> None:
        self._check_queue(q)
        cat = self._catalog
        with cat.locked() as tx:
            cat.refresh()
            entry = cat.queues.get(q.name)
            if entry is None or entry.uid != q._uid:
                raise QueueDoesNotExist(f"queue {q.name!r} does not exist")
            new = entry.attrs.with_changes(**changes)
            if new.dead_letter != entry.attrs.dead_letter:
                self._check_dead_letter(new)
            if new != entry.attrs:
                cat.write(tx, "set", q.name, q._uid, new)

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Closes every queue and releases files and locks.  Idempotent."""
        if self._closed:
            return
        with self._mu:
            self._closed = True
            for q in self._queues.values():
                q._close()
            self._queues.clear()
            self._catalog.close()

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<walq.Broker {self.path!r}{' closed' if self._closed else ''}>"
