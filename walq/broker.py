"""Broker: a store directory opened by this process, and its queues."""

from __future__ import annotations

import os
import threading

from walq.catalog import Catalog
from walq.clock import StoreClock
from walq.errors import (BrokerClosed, CorruptionError, InvalidParameter, QueueAlreadyExists, QueueDoesNotExist,
                         TopicDoesNotExist, WalqError)
from walq.log import LogOptions
from walq.log.access import finish_deletions, prepare_store, remove_aside
from walq.queue.attributes import QueueAttributes, RedrivePolicy, validate, validate_name
from walq.queue.queue import Queue
from walq.topic.identity import check_identity
from walq.topic.topics import INTERNAL_PREFIX, Topics


class _Unopened:
    """A queue's name and uid, before a Queue handle exists."""

    def __init__(self, name: str, uid: int):
        self.name, self._uid = name, uid


def open(path, *, durability: str = "always", sync_interval: float = 0.01, clock=None,
         region: str = "us-east-1", account: str = "000000000000",
         segment_size: int = 64 * 1024 * 1024, group=None, readonly: bool = False) -> "Broker":
    """Opens (creating if missing) the store at ``path``.

    durability: ``"always"`` (fdatasync before a write returns, shared by
    concurrent writers), ``"batch"`` (synced within ``sync_interval``
    seconds), or ``"os"`` (never fsyncs).  Every mode survives kill -9.
    clock: a ``time.time``-like function, used as is (tests inject a fake
    one); default: the store's own time (``walq.StoreClock``), which no
    wall-clock step moves.
    region, account: what ARNs name (``q.arn``, ``t.arn``, envelopes).
    group: a group name or gid to share the store with (directories 2770,
    files 0660); by default a new store is its owner's alone (0700/0600).
    readonly: opens an existing store for monitoring by a user who may
    only read it: queues, attributes and stats work; every write raises
    ReadOnlyStore; nothing is created, locked or recovered (a tail a crash
    left unrecovered is read up to its last valid record).
    """
    return Broker(path, durability=durability, sync_interval=sync_interval, clock=clock,
                  region=region, account=account, segment_size=segment_size, group=group, readonly=readonly)


class Broker:
    """A store opened by this process; share it between threads.

    After ``os.fork()`` the child must open its own Broker.
    """

    def __init__(self, path, *, durability="always", sync_interval=0.01, clock=None,
                 region="us-east-1", account="000000000000", segment_size=64 * 1024 * 1024, group=None,
                 readonly=False):
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidParameter(f"path must be a str or os.PathLike; got {type(path).__name__}")
        self.region, self.account = check_identity(region, account)
        if clock is not None and not callable(clock):
            raise InvalidParameter("clock must be a callable returning epoch seconds")
        self._log_options = LogOptions(durability=durability, sync_interval=sync_interval,
                                       segment_size=segment_size)
        self.path = os.fspath(path)
        self._readonly = bool(readonly)
        self._access = prepare_store(self.path, group, self._readonly)
        # The default clock is the broker's to close (it records the store's
        # high-water mark); a given one is the caller's.
        self._store_clock = StoreClock(self.path, readonly=self._readonly) if clock is None else None
        self._clock = clock if clock is not None else self._store_clock.now
        self._catalog = Catalog(self.path, self._log_options, self._log_io(os.path.join(self.path, "catalog")),
                                readonly=self._readonly)
        self._queues: dict[str, Queue] = {}
        self._mu = threading.RLock()
        self._closed = False
        self._remove_deleted_dirs()
        self._topics = None
        self._buses = None
        if not self._readonly:  # a reader cannot copy; the next writer that opens completes
            if Topics.any_cut_short(self.path):
                self._topic_service().complete_cut_short()
            from walq.bus import outbox as bus_outbox
            if bus_outbox.any_cut_short(self.path):
                self._bus_service().complete_cut_short()

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
            cat.replay()
            cur = cat.queues.get(name)
            if cur is not None:
                if cur.attrs != attrs:
                    differ = ", ".join(f"{k} is {getattr(cur.attrs, k)!r}, not {getattr(attrs, k)!r}"
                                       for k in attrs.__dataclass_fields__ if getattr(cur.attrs, k) != getattr(attrs, k))
                    raise QueueAlreadyExists(f"queue {name!r} exists with different attributes: {differ}")
            else:
                self._check_dead_letter(attrs)
                uid = cat.new_uid()
                # Durable before the record that names it: a power cut must
                # not leave a queue in the catalog without its directory.
                self._access.make_dir(self._queue_dir(uid))
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
                q._close(deleted=True)
                q = None
            if q is None:
                self._check_queue_dir(name, entry.uid)
                try:
                    q = Queue(self, name, entry.uid, self._queue_dir(entry.uid))
                except OSError as exc:
                    # Deleted (by another process) since the check above?
                    self._raise_if_deleted(_Unopened(name, entry.uid), exc)
                    raise
                self._queues[name] = q
            return q

    def _check_queue_dir(self, name: str, uid: int) -> None:
        """CorruptionError if a listed queue's directory is gone (opening
        it would silently start an empty queue).  A delete appends its
        catalog record before removing the directory, so a directory missing
        while the catalog still lists the queue is damage."""
        qdir = self._queue_dir(uid)
        if os.path.exists(os.path.join(qdir, "repair.tmp", "READY")):
            raise CorruptionError(f"queue {name!r}: a repair of it was interrupted (its new segments wait in "
                                  f"{qdir}/repair.tmp)", qdir)
        if os.path.isdir(qdir):
            return
        # A delete may be moving the directory aside right now: it holds the
        # catalog's append lock until its record is in, so look again under it.
        with self._catalog.log.locked(wait_durable=False):
            self._catalog.replay()
            present = os.path.isdir(qdir)
        if present:
            return
        entry = self._catalog.queues.get(name)
        if entry is None or entry.uid != uid:
            raise QueueDoesNotExist(f"queue {name!r} does not exist (it was deleted)")
        raise CorruptionError(f"queue {name!r}: its directory {qdir} is missing (every message in it is "
                              "lost)", qdir)

    def list_queues(self, prefix: str = "") -> list[str]:
        """Queue names starting with ``prefix``, sorted."""
        self._check()
        if not isinstance(prefix, str):
            raise InvalidParameter("prefix must be a str")
        self._catalog.refresh()
        return sorted(n for n in self._catalog.queues if n.startswith(prefix) and not n.startswith(INTERNAL_PREFIX))

    def delete_queue(self, name) -> None:
        """Deletes a queue and its messages; QueueDoesNotExist if absent."""
        self._check()
        if not isinstance(name, str):  # as get_queue: a bad name, not a missing queue
            raise InvalidParameter(f"queue name must be a str; got {type(name).__name__}")
        cat = self._catalog
        with cat.locked() as tx:
            cat.replay()
            entry = cat.queues.get(name)
            if entry is None:
                raise QueueDoesNotExist(f"queue {name!r} does not exist")
            cat.write(tx, "delete", name, entry.uid)
        # The record is durable: the queue is gone for every process from
        # their next call.  Calls in progress elsewhere end with
        # QueueDoesNotExist (Queue: _names_the_queue).
        self._retire(name, entry.uid)
        self._remove_queue_dir(entry.uid)

    def _retire(self, name: str, uid: int) -> None:
        """Closes this process's handle of a deleted queue (other threads'
        calls in progress on it end with QueueDoesNotExist)."""
        with self._mu:
            q = self._queues.get(name)
            if q is None or q._uid != uid:
                return
            del self._queues[name]
        q._close(deleted=True)

    def _remove_queue_dir(self, uid: int) -> None:
        remove_aside(self._queue_dir(uid))

    def _remove_deleted_dirs(self) -> None:
        """Finishes queue deletions a crash interrupted."""
        finish_deletions(os.path.join(self.path, "queues"), self._catalog.deleted,
                         {e.uid for e in self._catalog.queues.values()})

    def _raise_if_deleted(self, q, exc: BaseException) -> None:
        """Raises QueueDoesNotExist (from ``exc``, unless it is one) if
        ``q`` was deleted, and retires this process's handle of it (the
        caller holds none of its locks); returns otherwise."""
        if self._closed:
            return
        try:
            self._catalog.refresh()
        except (OSError, WalqError):
            return
        entry = self._catalog.queues.get(q.name)
        if entry is None or entry.uid != q._uid:
            self._retire(q.name, q._uid)
            if isinstance(exc, QueueDoesNotExist):
                raise exc
            raise QueueDoesNotExist(f"queue {q.name!r} does not exist (it was deleted)") from exc

    def _create_internal_queue(self, name: str, fifo: bool) -> Queue:
        """Creates a queue of a name users cannot give (a subscription's,
        walq/topic/topics.py); it never shows in list_queues."""
        attrs = QueueAttributes(name=name, fifo=fifo, retention=1_209_600)
        cat = self._catalog
        with cat.locked() as tx:
            cat.replay()
            if name not in cat.queues:
                uid = cat.new_uid()
                self._access.make_dir(self._queue_dir(uid))
                cat.write(tx, "create", name, uid, attrs)
        return self.get_queue(name)

    # -- topics (walq/topic) ---------------------------------------------------------

    def _topic_service(self, create: bool = True) -> Topics | None:
        """The store's topics (None if it has none and ``create`` is False:
        a look-up never creates the topics' files)."""
        self._check()
        with self._mu:
            if self._topics is None:
                if not create and not os.path.isdir(os.path.join(self.path, "topics")):
                    return None
                self._topics = Topics(self)
            return self._topics

    def create_topic(self, name, *, fifo=None, content_based_dedup=False):
        """Creates a topic, or returns it if it exists with the same attributes."""
        return self._topic_service().create_topic(name, fifo, content_based_dedup)

    def get_topic(self, name):
        """The named topic; TopicDoesNotExist if absent."""
        svc = self._topic_service(create=False)
        if svc is None:
            if not isinstance(name, str):
                raise InvalidParameter(f"topic name must be a str; got {type(name).__name__}")
            raise TopicDoesNotExist(f"topic {name!r} does not exist")
        return svc.get_topic(name)

    def list_topics(self, prefix: str = "") -> list[str]:
        """Topic names starting with ``prefix``, sorted."""
        svc = self._topic_service(create=False)
        if svc is None:
            if not isinstance(prefix, str):
                raise InvalidParameter("prefix must be a str")
            return []
        return svc.list_topics(prefix)

    def delete_topic(self, name) -> None:
        """Deletes a topic and its subscriptions; TopicDoesNotExist if absent."""
        svc = self._topic_service(create=False)
        if svc is None:
            raise TopicDoesNotExist(f"topic {name!r} does not exist")
        svc.delete_topic(name)

    def _fire_schedules(self) -> int:
        """Fires due schedule ticks of the event bus (a worker's chore)."""
        if self._buses is None and not os.path.isdir(os.path.join(self.path, "buses")):
            return 0
        return self._bus_service().fire_schedules()

    def _delivery_targets(self) -> list:
        """One walq.worker DeliveryTarget per HTTP or handler subscription."""
        svc = self._topic_service(create=False)
        out = [] if svc is None else svc.delivery_targets()
        if self._buses is not None or os.path.isdir(os.path.join(self.path, "buses")):
            out += self._bus_service().delivery_targets()  # event bus HTTP and handler targets
        return out

    # -- event buses (walq/bus) -------------------------------------------------------

    def _bus_service(self):
        """The store's event buses (their files are made at first use)."""
        self._check()
        with self._mu:
            if self._buses is None:
                from walq.bus.buses import Buses
                self._buses = Buses(self)
            return self._buses

    def get_bus(self, name):
        """The named event bus (``"default"`` always exists); BusDoesNotExist if absent."""
        return self._bus_service().get_bus(name)

    def create_bus(self, name):
        """Creates an event bus, or returns it if it exists."""
        return self._bus_service().create_bus(name)

    def list_buses(self) -> list[str]:
        """Event bus names, sorted (``"default"`` among them)."""
        return self._bus_service().list_buses()

    def delete_bus(self, name) -> None:
        """Deletes an event bus with its rules; BusDoesNotExist if absent."""
        self._bus_service().delete_bus(name)

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
            # Not retired here: a caller may hold the queue's locks (a
            # catch-up reloading its index); Queue's methods retire the
            # handle once the call has unwound (_names_the_queue).
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
            cat.replay()
            entry = cat.queues.get(q.name)
            if entry is None or entry.uid != q._uid:
                raise QueueDoesNotExist(f"queue {q.name!r} does not exist")
            new = entry.attrs.with_changes(**changes)
            if new.dead_letter != entry.attrs.dead_letter:
                self._check_dead_letter(new)
            if new != entry.attrs:
                cat.write(tx, "set", q.name, q._uid, new)

    def _log_io(self, directory: str):
        """The I/O object for the log in ``directory`` (None: the plain
        one).  The crash tests' power-loss shim replaces this."""
        return None

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Closes every queue and releases files and locks.  Idempotent."""
        if self._closed:
            return
        with self._mu:
            if self._buses is not None:
                self._buses.close()  # first: their last cursors sync the topics and queues they copy into
            if self._topics is not None:
                self._topics.close()  # then: their last cursors sync the queues
            self._closed = True
            for q in self._queues.values():
                q._close()
            self._queues.clear()
            self._catalog.close()
            if self._store_clock is not None:
                self._store_clock.close()

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<walq.Broker {self.path!r}{' closed' if self._closed else ''}>"
