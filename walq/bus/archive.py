"""Archives and replays of an event bus.

An archive keeps the bus's events that match its pattern (all of them
without one) in a log of its own, ``buses/archives/<uid:016x>/``: one record
per event, ``copy id:16``, the time it was archived (the broker's clock) and
the event's JSON.  Archived copies travel in the bus's ROUTED records like
any other destination (kind ``"a"``), so an event is archived exactly when
it is delivered (all or none).

Retention (``retention_days`` > 0): an event archived longer ago than that
is gone, as in EventBridge - no replay sends it - and workers reclaim its
space (``expire_archives``): under the bus catalog's append lock, which
replays hold while they read, whole segments below the archive's first
unexpired record are deleted.  A replay whose position is below the trim
point goes on from there.

A replay (``bus.start_replay``) is run by workers: under the bus catalog's
append lock, a worker reads the next batch of the archive from the replay's
durable position, routes the events whose ``time`` is in ``[start, end)``
again - with ``replay-name`` added, to the rules named (or every matching
rule), never to archives: it claims the batch in the catalog
(``replay_batch`` with the bus log's end, ``at``), appends one ROUTED record
marked ``"replay": "<name>@<position>"`` with ``"next"``, the position after
the batch, then writes the new position to the catalog (``replay_state``);
at the archive's end the replay is COMPLETED.  A worker that finds a batch
claimed but not advanced (a worker killed between the steps) looks for its
ROUTED record from ``at`` on: if it is there, its ``next`` is the new
position (the archive may have grown since that batch was read); otherwise
the batch is routed now.  Only then is the bus log read, so a replay's cost
grows with its archive, not with the square of it.  A replay resumes from
its last position after any worker's death.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct

from walq.bus import outbox as O
from walq.errors import InvalidParameter
from walq.log import Log

BATCH = 100
#: ``copy id:16 | event JSON``: records written before archives kept their
#: archiving time (the event's own ``time`` stands in for it).
ARCHIVED = 1
#: ``copy id:16 | archived at: float64le epoch seconds | event JSON``.
ARCHIVED_AT = 3
_AT = struct.Struct("<d")
DAY = 86_400
#: Seconds of the broker's clock between two expiry passes over one archive
#: in one process (each pass reads from the archive's first record to its
#: first unexpired one).
EXPIRE_EVERY = 60.0


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
    """An event's ``time`` (``%Y-%m-%dT%H:%M:%SZ``) as epoch seconds."""
    t = ev["time"]
    if isinstance(t, str) and len(t) == 20 and t[10] == "T" and t[19] == "Z":
        try:  # the form walq writes, read without strptime (a twentieth of its cost)
            return _dt.datetime.fromisoformat(t[:19]).replace(tzinfo=_dt.timezone.utc).timestamp()
        except ValueError:
            pass  # strptime says what is wrong
    return _dt.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc).timestamp()


def decode(type_: int, payload: bytes) -> tuple[float, dict] | None:
    """``(archived at, event)`` of an archive record; None for a LOST filler
    (walq repair); ValueError (KeyError) if it is neither."""
    if type_ == ARCHIVED_AT:
        if len(payload) < 16 + _AT.size:
            raise ValueError(f"an archive record of {len(payload)} bytes has no copy id and time")
        ev = json.loads(payload[16 + _AT.size:])
        event_epoch(ev)
        return _AT.unpack_from(payload, 16)[0], ev
    if type_ == ARCHIVED:
        if len(payload) < 16:
            raise ValueError(f"an archive record of {len(payload)} bytes has no copy id")
        ev = json.loads(payload[16:])
        return event_epoch(ev), ev
    if type_ == O.LOST and not payload:
        return None
    raise ValueError(f"archive records have type {ARCHIVED_AT} (or {ARCHIVED}), not {type_}")


def cutoff(retention_days: int, now: float) -> float | None:
    """Events archived before this are gone (None: kept forever)."""
    return now - retention_days * DAY if retention_days else None


class ArchiveLog:
    """An archive's log, open in this process (a destination of the outbox)."""

    def __init__(self, broker, name: str, uid: int, directory: str):
        self.name, self._uid, self._dir = name, uid, directory
        self._clock = broker._clock
        self._log = Log.open(directory, broker._log_options, broker._log_io(directory))
        self._expired_below = 0  # every record below this was found expired (the clock never goes back)

    def store(self, copies: list) -> None:
        """Appends ``(copy id hex, event JSON)`` pairs, stamped with the
        broker's clock, without waiting for durability."""
        at = _AT.pack(self._clock())
        for cid, body in copies:
            self._log.append(bytes.fromhex(cid) + at + body.encode(), ARCHIVED_AT, settle=False)

    def expire(self, retention_days: int, now: float) -> int:
        """Deletes the whole segments below the first record archived at or
        after the retention cutoff (every record, if none is); returns the
        log's new first sequence.  The caller holds the bus catalog's lock,
        so no replay reads meanwhile.  Records are archived in clock order
        but for processes racing on one instant: an older one behind a newer
        one only waits for a later pass (and replays skip it meanwhile)."""
        limit = cutoff(retention_days, now)
        log = self._log
        if limit is None:
            return log.first
        # Only what was there before the scan: an event archived meanwhile
        # is new, and must not count as read.
        keep = end = log.end
        for rec in log.iter_from(max(log.first, self._expired_below)):
            if rec.seq >= end:
                break
            d = decode(rec.type, rec.payload)
            if d is not None and d[0] >= limit:
                keep = rec.seq
                break
        # The active segment stays, however old its records: a later pass
        # starts past what this one read.
        self._expired_below = keep
        return log.delete_below(keep)

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
    def archive(self) -> str:
        """The name of the archive it replays."""
        return self._entry()["archive"]

    @property
    def start(self) -> float:
        """The replayed range's start, epoch seconds (an event at it is replayed)."""
        return self._entry()["start"]

    @property
    def end(self) -> float:
        """The replayed range's end, epoch seconds (an event at it is not)."""
        return self._entry()["end"]

    @property
    def rules(self) -> list[str] | None:
        """The rules it sends to (None: every matching rule of the bus)."""
        rules = self._entry()["rules"]
        return list(rules) if rules is not None else None

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
            pos = max(r["pos"], alog._log.first)  # below a trim point: from there (the rest is gone)
            end = alog._log.end
            limit = cutoff(arch.get("retention_days", 0), svc.broker._clock())
            events, nxt = [], pos
            for rec in alog._log.iter_from(pos):
                if rec.seq >= end or len(events) >= BATCH:
                    break
                nxt = rec.seq + 1
                d = decode(rec.type, rec.payload)
                if d is None or (limit is not None and d[0] < limit):
                    continue  # a lost record's filler, or an event past retention: gone
                ev = d[1]
                if r["start"] <= event_epoch(ev) < r["end"]:
                    ev["replay-name"] = name
                    events.append(ev)
            key = f"{name}@{pos}"
            claim = r.get("claim")
            routed = None
            if events:
                if claim is not None and claim[0] == pos:
                    routed = _routed_next(bus, key, claim[1])  # its runner was killed: did it route?
                else:
                    cat.write(tx, {"op": "replay_batch", "name": name, "pos": pos, "at": bus._log.end})
            if routed is not None:
                # A worker killed after routing this batch: what it routed is
                # done, up to where it read - perhaps short of where this pass
                # read, the archive having grown since.
                nxt = routed if routed >= 0 else nxt
            elif events:
                copies, positions = bus._route(events, events[0]["time"], src=f"replay:{name}",
                                               only=r["rules"], archive=False)
                if copies:
                    rec = {"c": copies, "p": positions, "replay": key, "next": nxt}
                    bus._log.append(json.dumps(rec, separators=(",", ":")).encode(), O.ROUTED)
            done = nxt >= end
            cat.write(tx, {"op": "replay_state", "name": name, "pos": nxt,
                           "state": "COMPLETED" if done else "RUNNING"})
        bus._outbox.run()
        ran += 1
    return ran


def expire_archives(svc, force: bool = False) -> int:
    """Trims every archive with a retention (at most every EXPIRE_EVERY
    seconds of the broker's clock per archive in this process, unless
    ``force``); returns how many records were deleted.  Workers call it."""
    cat = svc.catalog
    cat.refresh()
    now = svc.broker._clock()
    dropped = 0
    for a in list(cat.archives.values()):
        if not a.get("retention_days"):
            continue
        last = svc._expired_at.get(a["uid"])
        if not force and last is not None and 0 <= now - last < EXPIRE_EVERY:
            continue
        svc._expired_at[a["uid"]] = now
        # Replays read an archive holding this lock: none reads while its
        # segments go, and each goes on from the new first record.
        with cat.locked():
            alog = svc.archive_log(a["name"], a["uid"])
            if alog is None:
                continue  # deleted meanwhile
            before = alog._log.first
            dropped += alog.expire(a["retention_days"], now) - before
    return dropped


def _routed_next(bus, key: str, start: int) -> int | None:
    """The position after the batch the bus log's ROUTED record ``key`` (at
    or past ``start``) routed: None if there is no such record, -1 if it does
    not say (written before records said)."""
    body = O.find_routed(bus._log, "replay", key, start)
    return None if body is None else body.get("next", -1)


def archive_dir(root: str, uid: int) -> str:
    """Where the archive ``uid`` keeps its log."""
    return os.path.join(root, "archives", f"{uid:016x}")
