"""The buses' catalog: which buses, rules and targets exist, in a small log.

``<store>/buses/catalog/`` is a walq log of JSON records (type 1), replayed
by every process that uses buses, so a rule change made in one process
applies to the next put_events in every other.  Records (docs/format.md,
"Event buses"):

    {"op": "bus", "name": N, "uid": U}
    {"op": "delete_bus", "name": N, "uid": U}
    {"op": "rule", "bus": U, "rule": {...}}            a rule, whole (new or changed)
    {"op": "delete_rule", "bus": U, "name": R}
    {"op": "targets", "bus": U, "rule": R, "targets": [...]}   the rule's targets, whole
    {"op": "firing", "bus": U, "rule": R, "tick": T, "at": N}   a tick about to be routed
    {"op": "fired", "bus": U, "rule": R, "tick": T}    a schedule rule's tick, routed
    {"op": "archive", "archive": {...}} / {"op": "delete_archive", "name": A, "uid": U}
    {"op": "replay", "replay": {...}} / {"op": "replay_state", "name": P, "pos": N, "state": S}
    {"op": "replay_batch", "name": P, "pos": N, "at": N}   a replay batch about to be routed

The default bus has uid 0 and no "bus" record: it always exists.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from walq.log import LogOptions
from walq.log.replicated import ReplicatedState

DEFAULT_BUS = "default"


@dataclass
class BusEntry:
    """One bus: its uid and rules (name -> rule dict, in order made)."""

    name: str
    uid: int
    rules: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)  # rule name -> [target dict]
    fired: dict = field(default_factory=dict)  # schedule rule name -> its last fired tick
    firing: dict = field(default_factory=dict)  # schedule rule name -> (tick, bus log end) claimed, not yet fired


class BusState:
    """What the catalog's records say, replayed: buses, archives, replays.
    Kept apart from the log so that ``walq verify`` and ``walq dump`` replay
    the raw records exactly as a broker does (walq/bus/inspect.py)."""

    def __init__(self):
        self.buses: dict[str, BusEntry] = {DEFAULT_BUS: BusEntry(DEFAULT_BUS, 0)}
        self.deleted: set[int] = set()
        self.archives: dict[str, dict] = {}  # name -> {"name", "uid", "bus", "pattern", "retention_days"}
        self.replays: dict[str, dict] = {}  # name -> {"name", "bus", "archive", "auid", "start", "end",
        #                                              "rules", "pos", "state"}

    def apply(self, r: dict) -> None:
        """Applies one catalog record (KeyError or TypeError if it is not one)."""
        op = r["op"]
        if op == "bus":
            self.buses[r["name"]] = BusEntry(r["name"], r["uid"])
        elif op == "delete_bus":
            self.deleted.add(r["uid"])
            cur = self.buses.get(r["name"])
            if cur is not None and cur.uid == r["uid"]:
                del self.buses[r["name"]]
        elif op == "archive":
            self.archives[r["archive"]["name"]] = r["archive"]
        elif op == "delete_archive":
            cur = self.archives.get(r["name"])
            if cur is not None and cur["uid"] == r["uid"]:
                del self.archives[r["name"]]
        elif op == "replay":
            self.replays[r["replay"]["name"]] = r["replay"]
        elif op == "replay_state":
            cur = self.replays.get(r["name"])
            if cur is not None:
                cur.update(pos=r["pos"], state=r["state"])
                cur.pop("claim", None)
        elif op == "replay_batch":
            cur = self.replays.get(r["name"])
            if cur is not None:
                cur["claim"] = (r["pos"], r["at"])
        else:
            entry = self.by_uid(r["bus"])
            if entry is None:
                return
            if op == "rule":
                entry.rules[r["rule"]["name"]] = r["rule"]
            elif op == "delete_rule":
                entry.rules.pop(r["name"], None)
                entry.targets.pop(r["name"], None)
                entry.fired.pop(r["name"], None)
                entry.firing.pop(r["name"], None)
            elif op == "firing":
                entry.firing[r["rule"]] = (r["tick"], r["at"])
            elif op == "fired":
                entry.fired[r["rule"]] = max(r["tick"], entry.fired.get(r["rule"], r["tick"]))
                claim = entry.firing.get(r["rule"])
                if claim is not None and claim[0] <= r["tick"]:
                    del entry.firing[r["rule"]]
            elif op == "targets":
                entry.targets[r["rule"]] = r["targets"]

    def by_uid(self, uid: int) -> BusEntry | None:
        """The live bus with ``uid``, if any."""
        for entry in self.buses.values():
            if entry.uid == uid:
                return entry
        return None


class BusCatalog(BusState, ReplicatedState):
    """The buses' catalog log and its replayed state (a rule not yet synced
    must not route events)."""

    def __init__(self, root: str, options: LogOptions, io=None):
        BusState.__init__(self)
        ReplicatedState.__init__(self, os.path.join(root, "buses", "catalog"), options, io)

    @staticmethod
    def new_uid() -> int:
        """A random 63-bit id for a new bus (never 0, the default bus's)."""
        return secrets.randbits(63) or 1
