"""Archive retention on the broker's clock: an event archived longer ago
than ``retention_days`` is gone - no replay sends it - and its space is
reclaimed by deleting whole segments of the archive's log; events within
retention survive; ``retention_days=0`` keeps everything."""

from __future__ import annotations

import json
import os

import walq
from walq.bus import archive as A
from walq.tools import inspect as winspect

DAY = 86_400


def drain(q) -> list:
    out = []
    while True:
        got = q.receive(10, visibility_timeout=600)
        if not got:
            return out
        out += [json.loads(m.body) for m in got]
        q.delete_batch([m.receipt for m in got])


def _setup(store, retention_days: int):
    """A 4 KiB-segment store whose default bus archives every event of
    source "s" and routes them to queue q."""
    broker = store(segment_size=4096)
    bus = broker.get_bus("default")
    q = broker.create_queue("q")
    bus.put_rule("r", pattern={"source": ["s"]})
    bus.put_targets("r", [walq.Target("q", q)])
    arch = bus.create_archive("keep", retention_days=retention_days)
    alog = broker._bus_service().archive_log("keep", broker._bus_service().catalog.archives["keep"]["uid"])
    return broker, bus, q, arch, alog


def _put(bus, tag: str, n: int) -> None:
    for i in range(n):
        bus.put_events([{"source": "s", "detail_type": "d", "detail": {"tag": tag, "i": i, "pad": "x" * 200}}])


def _replay(broker, bus, name: str, start: float, end: float) -> list:
    """Runs a replay to completion (as a worker would) and returns what it sent."""
    q = broker.get_queue("q")
    drain(q)
    r = bus.start_replay(name, "keep", start, end)
    while r.state == "RUNNING":
        A.run_replays(broker._bus_service())
    return [(e["detail"]["tag"], e["detail"]["i"]) for e in drain(q)]


def test_expired_events_are_not_replayed_and_their_segments_are_deleted(store, clock):
    broker, bus, q, _arch, alog = _setup(store, retention_days=1)
    t0 = clock()
    _put(bus, "old", 40)  # many 4 KiB segments
    clock.advance(DAY // 2)
    _put(bus, "new", 10)
    clock.advance(DAY // 2 + 3600)  # "old" is 25 h old, "new" 13 h
    segments_before = len(winspect.segment_files(alog._dir))
    assert segments_before > 5 and alog._log.first == 0
    svc = broker._bus_service()
    dropped = A.expire_archives(svc)
    assert dropped > 0 and alog._log.first == dropped
    assert len(winspect.segment_files(alog._dir)) < segments_before
    # Only whole segments go: what is left of "old" shares a segment with "new".
    kept = [A.decode(r.type, r.payload)[1]["detail"] for r in alog._log.iter_from(alog._log.first)]
    assert [d["i"] for d in kept if d["tag"] == "new"] == list(range(10))
    assert len([d for d in kept if d["tag"] == "old"]) < 40
    # A replay of everything sends the unexpired events only, even those whose segment stayed.
    assert _replay(broker, bus, "all", t0 - 10, clock() + 10) == [("new", i) for i in range(10)]
    # A replay of the expired range sends nothing.
    assert _replay(broker, bus, "old-only", t0 - 10, t0 + DAY // 4) == []
    # What survived still verifies: a trimmed archive is not damage; dump shows where it starts.
    assert winspect.verify_store(str(broker.path)).ok
    [bus_line] = [d for d in winspect.dump_log(os.path.join(broker.path, "catalog"), kind="catalog")
                  if d.get("type") == "bus"]
    assert bus_line["archives"][0]["first"] == alog._log.first


def test_a_replay_below_the_trim_point_goes_on_from_it(store, clock):
    broker, bus, q, _arch, alog = _setup(store, retention_days=2)
    t0 = clock()
    _put(bus, "old", 40)
    clock.advance(DAY)
    _put(bus, "new", 5)
    drain(q)
    r = bus.start_replay("early", "keep", t0 - 10, t0 + 10 * DAY)  # its position: record 0
    clock.advance(DAY + 3600)  # "old" expires while the replay waits for a worker
    assert A.expire_archives(broker._bus_service()) > 0 and alog._log.first > 0
    while r.state == "RUNNING":
        A.run_replays(broker._bus_service())
    assert [(e["detail"]["tag"], e["detail"]["i"]) for e in drain(q)] == [("new", i) for i in range(5)]


def test_a_worker_expires_archives_on_its_periodic_chores(store, clock):
    broker, bus, q, _arch, alog = _setup(store, retention_days=1)
    _put(bus, "old", 40)
    clock.advance(2 * DAY)
    _put(bus, "new", 1)
    assert broker._fire_schedules() == 0  # what a worker calls every few seconds
    assert alog._log.first > 0
    first = alog._log.first
    _put(bus, "more", 40)
    clock.advance(2 * DAY)
    broker._fire_schedules()
    assert alog._log.first > first


def test_retention_zero_keeps_every_event(store, clock):
    broker, bus, q, _arch, alog = _setup(store, retention_days=0)
    t0 = clock()
    _put(bus, "old", 30)
    clock.advance(365 * DAY)
    assert A.expire_archives(broker._bus_service(), force=True) == 0 and alog._log.first == 0
    assert len(_replay(broker, bus, "all", t0 - 10, clock())) == 30


def test_events_within_retention_survive_an_expiry_pass(store, clock):
    broker, bus, q, _arch, alog = _setup(store, retention_days=3)
    t0 = clock()
    _put(bus, "recent", 30)
    clock.advance(3 * DAY - 60)  # one minute before they expire
    assert A.expire_archives(broker._bus_service(), force=True) == 0 and alog._log.first == 0
    assert len(_replay(broker, bus, "all", t0 - 10, clock())) == 30
    assert os.path.isdir(alog._dir)


def test_records_archived_before_archives_kept_their_time_expire_by_event_time(store, clock):
    broker, bus, q, _arch, alog = _setup(store, retention_days=1)
    old = {"version": "0", "id": "x", "detail-type": "d", "source": "s", "account": "0", "region": "r",
           "resources": [], "detail": {"tag": "type1", "i": 0},
           "time": A._dt.datetime.fromtimestamp(clock() - 2 * DAY, A._dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    alog._log.append(bytes(16) + json.dumps(old).encode(), A.ARCHIVED)
    _put(bus, "new", 1)
    assert A.decode(*next((r.type, r.payload) for r in alog._log.iter_from(0)))[1]["detail"]["tag"] == "type1"
    assert _replay(broker, bus, "all", clock() - 3 * DAY, clock() + 10) == [("new", 0)]
