"""Archives and replays of an event bus.

An archive keeps the bus's events that match its pattern (all of them
without one) in a log of its own, ``buses/archives/<uid:016x>/``: one record
per event, ``copy id:16`` then the event's JSON.  Archived copies travel in
the bus's ROUTED records like any other destination (kind ``"a"``), so an
event is archived exactly when it is delivered (all or none).

A replay (``bus.start_replay``) is run by workers: under the bus catalog's
append lock, a worker reads the next batch of the archive from the replay's
durable position, routes the events whose ``time`` is in ``[start, end)``
again - with ``replay-name`` added, to the rules named (or every matching
rule), never to archives - as one ROUTED record marked
``"replay": "<name>@<position>"`` (skipped if the bus log already holds it: a
worker killed between the two steps), then writes the new position to the
catalog; at the archive's end the replay is COMPLETED.  A replay resumes from
its last position after any worker's death.
"""

from __future__ import annotations

import datetime as _dt
import json
import os

from walq.bus import outbox as O
from walq.errors import InvalidParameter
from walq.log import Log

BATCH = 100
ARCHIVED = 1


def epoch(value, what: str) -> float:
    """Epoch seconds from a datetime or a number; InvalidParameter otherwise."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise InvalidParameter(f"{what} must be a datetime or epoch seconds; got {type(value).__name__}")


def event_epoch(ev: dict) -> float:
    """An event's ``time`` as epoch seconds."""
    return _dt.datetime.strptime(ev["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc).timestamp()


class ArchiveLog:
    """An archive's log, open in this process (a destination of the outbox)."""

    def __init__(self, broker, name: str, uid: int, directory: str):
        self.name, self._uid, self._dir = name, uid, directory
        self._log = Log.open(directory, broker._log_options, broker._log_io(directory))

    def store(self, copies: list) -> None:
        """Appends ``(copy id hex, event JSON)`` pairs without waiting for durability."""
        for cid, body in copies:
            self._log.append(bytes.fromhex(cid) + body.encode(), ARCHIVED, settle=False)

    def close(self) -> None:
        """Closes the log."""
        self._log.close()


class Archive:
    """An archive of a bus (a snapshot)."""

    def __init__(self, bus, entry: dict):
        self.bus = bus
        self.name = entry["name"]
        self.pattern = json.loads(entry["pattern"]) if entry["pattern"] is not None else None
        self.retention_days = entry["retention_days"]

    @property
    def arn(self) -> str:
        """``arn:aws:events:{region}:{account}:archive/{name}``."""
        b = self.bus._broker
        return f"arn:aws:events:{b.region}:{b.account}:archive/{self.name}"

    def __repr__(self) -> str:
        return f"Archive({self.name!r}, bus={self.bus.name!r})"


class Replay:
    """A replay; ``state`` is read fresh each time."""

    def __init__(self, bus, name: str):
        self.bus, self.name = bus, name

    def _entry(self) -> dict:
        cat = self.bus._service.catalog
        cat.refresh()
        return cat.replays[self.name]

    @property
    def state(self) -> str:
        """``"RUNNING"`` or ``"COMPLETED"``."""
        return self._entry()["state"]

    @property
    def arn(self) -> str:
        """``arn:aws:events:{region}:{account}:replay/{name}``."""
        b = self.bus._broker
        return f"arn:aws:events:{b.region}:{b.account}:replay/{self.name}"

    def __repr__(self) -> str:
        return f"Replay({self.name!r}, {self.state})"


def run_replays(svc) -> int:
    """Advances every RUNNING replay by one batch; returns how many batches ran."""
    cat = svc.catalog
    cat.refresh()
    running = [n for n, r in cat.replays.items() if r["state"] == "RUNNING"]
    ran = 0
    for name in running:
        with cat.locked() as tx:
            cat.replay()
            r = cat.replays.get(name)
            if r is None or r["state"] != "RUNNING":
                continue
            bus_entry = cat.by_uid(r["bus"])
            arch = cat.archives.get(r["archive"])
            if bus_entry is None or arch is None or arch["uid"] != r["auid"]:
                cat.write(tx, {"op": "replay_state", "name": name, "pos": r["pos"], "state": "COMPLETED"})
                continue
            bus = svc.get_bus(bus_entry.name)
            alog = svc.archive_log(arch["name"], arch["uid"])
            pos = max(r["pos"], alog._log.first)
            end = alog._log.end
            events, nxt = [], pos
            for rec in alog._log.iter_from(pos):
                if rec.seq >= end or len(events) >= BATCH:
                    break
                nxt = rec.seq + 1
                if rec.type != ARCHIVED:
                    continue  # a lost record's filler (walq repair)
                ev = json.loads(rec.payload[16:])
                if r["start"] <= event_epoch(ev) < r["end"]:
                    ev["replay-name"] = name
                    events.append(ev)
            key = f"{name}@{pos}"
            if events and not _already_routed(bus, key):
                copies, positions = bus._route(events, events[0]["time"], src=f"replay:{name}",
                                               only=r["rules"], archive=False)
                if copies:
                    rec = {"c": copies, "p": positions, "replay": key}
                    bus._log.append(json.dumps(rec, separators=(",", ":")).encode(), O.ROUTED)
            done = nxt >= end
            cat.write(tx, {"op": "replay_state", "name": name, "pos": nxt,
                           "state": "COMPLETED" if done else "RUNNING"})
        bus._outbox.run()
        ran += 1
    return ran


def _already_routed(bus, key: str) -> bool:
    for rec in bus._log.iter_from(bus._log.first):
        if rec.type == O.ROUTED and json.loads(rec.payload).get("replay") == key:
            return True
    return False


def archive_dir(root: str, uid: int) -> str:
    """Where the archive ``uid`` keeps its log."""
    return os.path.join(root, "archives", f"{uid:016x}")
