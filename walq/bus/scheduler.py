"""Firing schedule rules: each due tick once, across any number of workers
and a worker's kill -9.

A worker calls :func:`fire_due` about once a second.  For each enabled rule
with a schedule (on the default bus, as EventBridge), the tick due now is
the latest one at or before the broker's clock; it is fired if it is newer
than the rule's durable last fired tick and at most STALE_S old (ticks
missed while no worker ran are not replayed).  Firing happens under the
bus catalog's append lock (one claimer at a time, in every process):

1. ``{"op": "firing", "bus": 0, "rule", "tick", "at"}`` is written to the
   catalog: the claim, with the bus log's end before step 2;
2. the scheduled event's ROUTED record, marked ``"tick": "<rule>@<tick>"``,
   is appended to the bus's log and made durable;
3. ``{"op": "fired", "bus": 0, "rule", "tick"}`` is written to the catalog.

A claimer that finds the tick claimed but not fired (its claimer was killed)
looks for the ROUTED record from ``at`` on, and appends it only if it is not
there.  Only then is the bus log read: a tick costs no scan of it.

Then the bus's outbox copies it to the rule's targets as for put_events.
"""

from __future__ import annotations

import json
import uuid

from walq.bus import outbox as O
from walq.bus.catalog import DEFAULT_BUS
from walq.bus.schedule import parse

#: A due tick older than this when a worker first sees it is skipped.
STALE_S = 60.0
_NS = uuid.UUID("6c8a1f32-6a4e-4f4e-9a57-6d0f0c2b7e11")


def scheduled_event(bus, rule_name: str, tick: float) -> dict:
    """EventBridge's Scheduled Event for ``rule_name``'s tick (its id derived
    from the rule and tick, the same in every process)."""
    from walq.bus.bus import iso_time

    b = bus._broker
    rule_arn = bus._rule_arn(rule_name)
    return {"version": "0", "id": str(uuid.uuid5(_NS, f"{rule_arn}@{tick!r}")), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": b.account, "time": iso_time(tick), "region": b.region,
            "resources": [rule_arn], "detail": {}}


def due(entry, now: float) -> list[tuple[str, float]]:
    """(rule, tick) for each enabled schedule rule whose due tick has not fired."""
    out = []
    for name, r in entry.rules.items():
        if not r.get("schedule") or not r["enabled"]:
            continue
        tick = parse(r["schedule"]).latest(r["created"], now)
        if tick is None or now - tick > STALE_S or tick <= entry.fired.get(name, float("-inf")):
            continue
        out.append((name, tick))
    return out


def fire_due(svc) -> int:
    """Fires every due tick of the default bus's schedule rules; returns how
    many this call fired."""
    cat = svc.catalog
    cat.refresh()
    entry = cat.buses[DEFAULT_BUS]
    now = svc.broker._clock()
    todo = due(entry, now)
    if not todo:
        return 0
    bus = svc.get_bus(DEFAULT_BUS)
    fired = 0
    with cat.locked() as tx:
        cat.replay()
        for name, tick in due(entry, now):
            if (name, tick) not in todo:
                continue
            key = f"{name}@{tick!r}"
            claim = entry.firing.get(name)
            if claim is not None and claim[0] == tick:
                routed = _already_routed(bus, key, claim[1])  # its claimer was killed
            else:
                cat.write(tx, {"op": "firing", "bus": 0, "rule": name, "tick": tick, "at": bus._log.end})
                routed = False
            if not routed:
                ev = scheduled_event(bus, name, tick)
                copies, positions = bus._route([ev], ev["time"], rules=[name])
                if copies:
                    rec = {"c": copies, "p": positions, "tick": key}
                    bus._log.append(json.dumps(rec, separators=(",", ":")).encode(), O.ROUTED)
            cat.write(tx, {"op": "fired", "bus": 0, "rule": name, "tick": tick})
            fired += 1
    bus._outbox.run()
    return fired


def _already_routed(bus, key: str, start: int) -> bool:
    """Whether the bus log holds the ROUTED record of tick ``key`` at or past ``start``."""
    return O.find_routed(bus._log, "tick", key, start) is not None
