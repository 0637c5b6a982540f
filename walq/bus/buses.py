"""Buses: a broker's event buses - create, look up, list, delete - over the
buses' catalog (walq/bus/catalog.py).  Each bus keeps its outbox log, mark,
cursor and copy lock in ``<store>/buses/<uid:016x>/`` (the default bus's
uid is 0)."""

from __future__ import annotations

import os
import re
import threading

from walq.bus import outbox
from walq.bus.bus import DELIVERED, Bus, rule_arn
from walq.bus.catalog import DEFAULT_BUS, BusCatalog
from walq.errors import BusDoesNotExist, CorruptionError, InvalidParameter, QueueDoesNotExist
from walq.log.access import Access, finish_deletions, remove_aside

_NAME = re.compile(r"^[/.\-_A-Za-z0-9]{1,256}$")


def validate_name(name) -> None:
    """EventBridge bus names: 1-256 of [/.-_A-Za-z0-9]."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidParameter(f"invalid bus name {name!r}: use 1-256 characters of A-Z a-z 0-9 . - _ /")


class Buses:
    """A broker's buses, and this process's open Bus handles."""

    def __init__(self, broker):
        self.broker = broker
        self.root = os.path.join(broker.path, "buses")
        if not os.path.isdir(self.root):
            Access.inherited(self.root).make_dir(self.root)
        self.catalog = BusCatalog(broker.path, broker._log_options,
                                  broker._log_io(os.path.join(self.root, "catalog")))
        self._handles: dict[str, Bus] = {}
        self._archives: dict[int, object] = {}  # uid -> ArchiveLog open in this process
        self._expired_at: dict[int, float] = {}  # archive uid -> when this process last expired it
        self._mu = threading.RLock()
        self._remove_deleted_dirs()

    def bus_dir(self, uid: int) -> str:
        """Where the bus ``uid`` keeps its files."""
        return os.path.join(self.root, f"{uid:016x}")

    def live_entry(self, bus: Bus):
        """The catalog entry of ``bus``; BusDoesNotExist if it was deleted."""
        entry = self.catalog.by_uid(bus._uid)
        if entry is None:
            raise BusDoesNotExist(f"bus {bus.name!r} does not exist (it was deleted)")
        return entry

    def create_bus(self, name) -> Bus:
        """Creates a bus, or returns it if it exists."""
        validate_name(name)
        if name == DEFAULT_BUS:
            raise InvalidParameter("the bus 'default' always exists; get it with get_bus('default')")
        cat = self.catalog
        with cat.locked() as tx:
            cat.replay()
            if name not in cat.buses:
                uid = cat.new_uid()
                d = self.bus_dir(uid)
                Access.inherited(d).make_dir(d)  # durable before the record that names it
                outbox.init_mark(d)
                cat.write(tx, {"op": "bus", "name": name, "uid": uid})
        return self.get_bus(name)

    def get_bus(self, name) -> Bus:
        """The named bus; BusDoesNotExist if absent.  Opening a bus in a
        process completes copies a put_events left unfinished."""
        if not isinstance(name, str):
            raise InvalidParameter(f"bus name must be a str; got {type(name).__name__}")
        self.catalog.refresh()
        entry = self.catalog.buses.get(name)
        if entry is None:
            raise BusDoesNotExist(f"bus {name!r} does not exist")
        with self._mu:
            b = self._handles.get(name)
            if b is not None and b._uid != entry.uid:
                b._close(flush=False)
                b = None
            if b is None:
                d = self.bus_dir(entry.uid)
                if entry.uid == 0 and not os.path.isdir(d):
                    Access.inherited(d).make_dir(d)
                    outbox.init_mark(d)
                elif not os.path.isdir(d):
                    raise BusDoesNotExist(f"bus {name!r} does not exist (it was deleted)")
                b = Bus(self, name, entry.uid, d)
                self._handles[name] = b
                if b._outbox.pending():
                    b._outbox.run()
            return b

    def complete_cut_short(self) -> None:
        """At broker open: completes every bus whose outbox needs it
        (walq/bus/outbox.py, ``needs_completion``).  A damaged bus is left
        for its users to meet (get_bus raises CorruptionError): the store's
        queues and other buses stay usable."""
        for entry in list(self.catalog.buses.values()):
            if outbox.needs_completion(self.bus_dir(entry.uid)):
                try:
                    self.get_bus(entry.name)  # opening completes it
                except (BusDoesNotExist, CorruptionError):
                    pass

    def list_buses(self) -> list[str]:
        """Bus names, sorted (``default`` among them)."""
        self.catalog.refresh()
        return sorted(self.catalog.buses)

    def delete_bus(self, name) -> None:
        """Deletes a bus with its rules and targets."""
        validate_name(name)
        if name == DEFAULT_BUS:
            raise InvalidParameter("the default bus cannot be deleted")
        cat = self.catalog
        with cat.locked() as tx:
            cat.replay()
            entry = cat.buses.get(name)
            if entry is None:
                raise BusDoesNotExist(f"bus {name!r} does not exist")
            internal = [t["queue"] for ts in entry.targets.values() for t in ts if t["kind"] in DELIVERED]
            cat.write(tx, {"op": "delete_bus", "name": name, "uid": entry.uid})
        for qname in internal:
            try:
                self.broker.delete_queue(qname)
            except QueueDoesNotExist:
                pass
        with self._mu:
            b = self._handles.pop(name, None)
        if b is not None:
            b._close(flush=False)
        self._remove_dir(entry.uid)

    def _remove_dir(self, uid: int) -> None:
        remove_aside(self.bus_dir(uid))

    def _remove_deleted_dirs(self) -> None:
        """Finishes deletions a crash interrupted."""
        finish_deletions(self.root, self.catalog.deleted, {e.uid for e in self.catalog.buses.values()})

    def archive_log(self, name: str, uid: int):
        """The archive ``name``'s log if it is still the one with ``uid``, else None."""
        from walq.bus.archive import ArchiveLog, archive_dir

        self.catalog.refresh()
        cur = self.catalog.archives.get(name)
        if cur is None or cur["uid"] != uid:
            return None
        with self._mu:
            a = self._archives.get(uid)
            if a is None:
                d = archive_dir(self.root, uid)
                if not os.path.isdir(d):
                    return None
                a = self._archives[uid] = ArchiveLog(self.broker, name, uid, d)
            return a

    def fire_schedules(self) -> int:
        """Fires the due ticks of schedule rules (walq/bus/scheduler.py),
        advances replays and expires archives (walq/bus/archive.py); returns
        the ticks fired and replay batches run."""
        from walq.bus.archive import expire_archives, run_replays
        from walq.bus.scheduler import fire_due

        fired = fire_due(self) + run_replays(self)
        expire_archives(self)  # archives' retention: a worker chore as well
        return fired

    def delivery_targets(self) -> list:
        """One worker DeliveryTarget per HTTP or handler target of every bus."""
        from walq.errors import QueueDoesNotExist
        from walq.worker.retry import RetryPolicy
        from walq.worker.targets import DeliveryTarget

        self.catalog.refresh()
        b = self.broker
        out = []
        for entry in list(self.catalog.buses.values()):
            for rule_name, targets in list(entry.targets.items()):
                arn = rule_arn(b, entry.name, rule_name)
                for t in targets:
                    if t["kind"] not in DELIVERED:
                        continue
                    try:
                        q = b.get_queue(t["queue"])
                    except QueueDoesNotExist:
                        continue
                    dl = None
                    if t.get("dead_letter") is not None:
                        try:
                            dl = b.get_queue(t["dead_letter"])
                        except QueueDoesNotExist:
                            dl = None
                    retry = RetryPolicy.eventbridge(**t["retry"]) if t.get("retry") else RetryPolicy.eventbridge()
                    out.append(DeliveryTarget(key=f"{arn}:{t['id']}", queue=q, kind=t["kind"],
                                              endpoint=t["endpoint"], raw=False, retry=retry, dead_letter=dl,
                                              topic_arn="", rule_arn=arn))
        return out

    def close(self) -> None:
        """Closes every handle (writing their cursors) and the catalog."""
        with self._mu:
            for b in self._handles.values():
                b._close()
            self._handles.clear()
            for a in self._archives.values():
                a.close()
            self._archives.clear()
        self.catalog.close()
