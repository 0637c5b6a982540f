"""Event buses in ``walq verify`` and ``walq dump``: read the files directly,
without recovery or writes, as walq/tools/inspect.py does for queues and
walq/topic/inspect.py for topics.

Verify checks, under ``<store>/buses/`` (docs/format.md, "Event buses"):

* the buses' catalog log: every segment and record, each record a catalog
  record this version applies;
* each bus's log (``<uid>/``): every segment, each record a ROUTED record;
  its ``cursor`` (damage if it does not decode, or covers records the log
  never held); its ``mark`` (damage if something other than a mark was
  written there; a copy under way or cut short is a note);
* each archive's log (``archives/<uid>/``): every record a copy id and an
  event's JSON;
* what the catalog names: a target whose queue, topic or bus is gone (a
  note: EventBridge fails those deliveries and keeps the target), an HTTP
  or handler target whose internal queue is gone (damage: it can never
  deliver), a live bus whose log directory is gone (damage), a replay whose
  position is past its archive's end (damage);
* leftovers: directories of deleted buses and archives not yet removed
  (notes).
"""

from __future__ import annotations

import json
import os
import time

from walq.bus import outbox as O
from walq.bus.catalog import DEFAULT_BUS, BusState
from walq.errors import CorruptionError

_OPS = ("bus", "delete_bus", "rule", "delete_rule", "targets", "firing", "fired", "archive", "delete_archive",
        "replay", "replay_state", "replay_batch")
_HEX16 = frozenset("0123456789abcdef")


def _uid_of(name: str) -> int | None:
    if len(name) != 16 or not set(name) <= _HEX16:
        return None
    return int(name, 16)


def catalog_state(store: str) -> BusState:
    """The buses' catalog replayed from its raw records; stops quietly at
    damage and skips records that do not decode (verify reports both)."""
    from walq.tools.inspect import iter_log

    state = BusState()
    directory = os.path.join(store, "buses", "catalog")
    if not os.path.isdir(directory):
        return state
    try:
        for rec in iter_log(directory):
            try:
                state.apply(json.loads(rec.payload))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    except (CorruptionError, OSError):
        pass
    return state


def internal_queues(store: str) -> set[str]:
    """The internal queues (``~...``) the live buses' HTTP and handler targets use."""
    from walq.bus.bus import DELIVERED

    state = catalog_state(store)
    return {t["queue"] for e in state.buses.values() for ts in e.targets.values() for t in ts
            if t.get("kind") in DELIVERED}


# -- what each record must be ----------------------------------------------------------------


def check_catalog_record(type_: int, payload: bytes) -> None:
    """Raises ValueError (KeyError, TypeError) unless ``payload`` is a bus catalog record."""
    if type_ != 1:
        raise ValueError(f"bus catalog records have type 1, not {type_}")
    r = json.loads(payload)
    if not isinstance(r, dict) or r.get("op") not in _OPS:
        raise ValueError(f"not a bus catalog record: {payload[:80]!r}")
    BusState().apply(r)  # the same decoding a broker does; KeyError or TypeError if a field is missing
    op = r["op"]
    if op in ("bus", "delete_bus") and not (isinstance(r["name"], str) and isinstance(r["uid"], int)):
        raise ValueError(f"{op} needs a name (text) and a uid (integer)")
    if op in ("firing", "replay_batch") and not (isinstance(r["at"], int) and isinstance(r.get("pos", 0), int)):
        raise ValueError(f"{op} needs a bus log position 'at' (integer)")
    if op in ("rule", "delete_rule", "targets", "firing", "fired") and not isinstance(r["bus"], int):
        raise ValueError(f"{op} needs a bus uid (integer)")
    if op == "targets" and not all(isinstance(t, dict) and "id" in t and "kind" in t for t in r["targets"]):
        raise ValueError("targets must be objects with an id and a kind")


def check_routed(type_: int, payload: bytes) -> None:
    """Raises ValueError (KeyError, TypeError) unless ``payload`` is a ROUTED record."""
    if type_ == O.LOST and not payload:
        return  # a lost record's filler
    if type_ != O.ROUTED:
        raise ValueError(f"bus log records have type {O.ROUTED} (ROUTED), not {type_}")
    r = json.loads(payload)
    if not isinstance(r, dict) or not isinstance(r["c"], list) or not isinstance(r["p"], dict):
        raise ValueError("a ROUTED record needs a list of copies 'c' and positions 'p'")
    texts = r.get("e", [])
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError("a ROUTED record's bodies 'e' must be a list of text")
    for c in r["c"]:
        if not isinstance(c, list) or len(c) < 4 or not isinstance(c[0], str) or not isinstance(c[1], int) \
                or not (isinstance(c[3], str) or type(c[3]) is int and 0 <= c[3] < len(texts)) \
                or len(c) > 4 and c[4] not in ("q", "t", "b", "a"):
            raise ValueError(f"copy {str(c)[:80]} is not [name, uid, copy id, body (or index into 'e'), kind]")
        bytes.fromhex(c[2])


def check_archived(type_: int, payload: bytes) -> None:
    """Raises ValueError (KeyError) unless ``payload`` is an archive record
    (or a LOST filler)."""
    from walq.bus.archive import decode

    decode(type_, payload)


# -- the mark and the cursor -------------------------------------------------------------------


def _log_extent(directory: str) -> tuple[int, int] | None:
    """``(first, end)`` of a log's valid records, read raw (None if it has no segment)."""
    from walq.tools.inspect import RawRecord, iter_log, segment_files

    segs = segment_files(directory)
    if not segs:
        return None
    end = segs[-1][0]
    try:
        for rec in iter_log(directory, start=segs[-1][0], past_damage=True):
            if isinstance(rec, RawRecord):
                end = rec.seq + 1
    except (CorruptionError, OSError):
        pass
    return segs[0][0], end


def _check_mark(d: str) -> list:
    """The mark: 64 bytes a copier wrote, or nothing yet (never synced: a
    power cut may leave it empty or zeroed)."""
    from walq.tools.inspect import DAMAGE, NOTE, Problem

    path = os.path.join(d, O.MARK_FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read(O._MARK.size + 1)
    except FileNotFoundError:
        return [Problem(NOTE, path, None, None, "no outbox mark (rebuilt from the cursor by the next copy)")]
    if len(raw) != O._MARK.size or not any(raw):
        if any(raw):
            return [Problem(DAMAGE, path, 0, len(raw), f"the outbox mark is {len(raw)} bytes, not "
                            f"{O._MARK.size}: something else wrote it (remove it: the next copy rebuilds it "
                            "from the cursor)", raw[:32])]
        return [Problem(NOTE, path, None, None, "the outbox mark is empty or zeroed (a power cut before it "
                                                 "reached the disk; rebuilt from the cursor by the next copy)")]
    magic, boot, done, busy = O._MARK.unpack(raw)
    if magic != O._MAGIC:
        return [Problem(DAMAGE, path, 0, 8, f"the outbox mark does not start with {O._MAGIC!r}: something "
                        "else wrote it (remove it: the next copy rebuilds it from the cursor)", raw[:32])]
    if busy < done:
        return [Problem(DAMAGE, path, 48, 16, f"the outbox mark says copies are done below {done} but "
                        f"under way only below {busy}: a mark never says that", raw[48:64])]
    if busy > done and boot == O._boot():
        return [Problem(NOTE, path, None, None, f"records {done}-{busy - 1} are being copied, or a copy was "
                        "cut short (completed by the next put_events, get_bus, or broker open)")]
    return []


def _read_cursor(d: str) -> bytes | None:
    try:
        with open(os.path.join(d, O.CURSOR_FILE), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _check_cursor(d: str, extent: tuple[int, int] | None, raw: bytes | None) -> list:
    """The cursor ``raw``, read before the log's ``extent`` was (in a live
    store the cursor only moves up to what the log held when written)."""
    from walq.tools.inspect import DAMAGE, NOTE, Problem

    path = os.path.join(d, O.CURSOR_FILE)
    if raw is None:
        return []
    try:
        c = json.loads(raw)
        if not isinstance(c, dict) or not isinstance(c.get("upto"), int) or isinstance(c["upto"], bool) \
                or c["upto"] < 0:
            raise ValueError("needs 'upto', a sequence number")
    except (ValueError, UnicodeDecodeError) as exc:
        return [Problem(DAMAGE, path, 0, len(raw), f"bus cursor does not decode: {exc} (the bus cannot be "
                        "opened; `walq repair` sets it aside)", raw[:32])]
    upto = c["upto"]
    end = extent[1] if extent is not None else 0
    if upto > end:
        return [Problem(DAMAGE, path, None, None, f"the cursor covers records below {upto}, but the bus's log "
                        f"holds valid records only below {end}: records it says were copied are gone "
                        "(`walq repair` sets the cursor aside)")]
    if extent is not None and upto < extent[0]:
        return [Problem(NOTE, path, None, None, f"the cursor covers records below {upto}, but the log starts "
                        f"at {extent[0]} (completion starts at the log's first record)")]
    return []


# -- verify ----------------------------------------------------------------------------------


def verify(store: str, report, *, strict: bool = False, progress=None) -> list:
    """Problems in the buses' catalog, each bus's log, mark and cursor, each
    archive's log, and the destinations the catalog names.  Logs are read
    by walq/tools/inspect.py's checker, counted into ``report`` (a
    VerifyReport), whose problems it extends; returns the other problems.
    ``progress`` is called with each segment's path once it is checked."""
    from walq.tools.inspect import DAMAGE, NOTE, Problem, _verify_log

    root = os.path.join(store, "buses")
    if not os.path.isdir(root):
        return []
    problems: list = []

    def check_log(d: str, kind: str, check):
        extent, _snap = _verify_log(d, kind=kind, strict=strict, report=report, progress=progress, check=check)
        return extent

    check_log(os.path.join(root, "catalog"), "bus catalog", check_catalog_record)
    state = catalog_state(store)
    live = {e.uid: e for e in state.buses.values()}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if name in ("catalog", "archives") or not os.path.isdir(d):
            continue
        uid = _uid_of(name)
        if uid is None:
            if not name.endswith(".deleted") and name != ".trash":
                problems.append(Problem(NOTE, d, None, None, "not a bus directory"))
            continue
        if uid not in live:
            why = "deleted" if uid in state.deleted else "never listed: a create_bus cut short"
            problems.append(Problem(NOTE, d, None, None, f"directory of a bus the catalog does not list ({why}; "
                                                         "its files are not yet removed)"))
            continue
        # The mark and the cursor before the log: the log only grows past what they saw.
        mark, cursor = _check_mark(d), _read_cursor(d)
        extent = check_log(d, "bus", check_routed)
        problems += mark + _check_cursor(d, tuple(extent) if extent is not None else None, cursor)
    for uid, entry in live.items():
        if uid != 0 and not os.path.isdir(os.path.join(root, f"{uid:016x}")):
            problems.append(Problem(DAMAGE, os.path.join(root, f"{uid:016x}"), None, None,
                                    f"bus {entry.name!r} is listed but its directory is gone"))
    archives = {a["uid"]: a for a in state.archives.values()}
    aroot = os.path.join(root, "archives")
    ends: dict[int, int] = {}
    if os.path.isdir(aroot):
        for name in sorted(os.listdir(aroot)):
            d = os.path.join(aroot, name)
            uid = _uid_of(name)
            if uid is None or not os.path.isdir(d):
                continue
            if uid not in archives:
                problems.append(Problem(NOTE, d, None, None, "directory of an archive the catalog does not list "
                                                             "(deleted, or a create_archive cut short)"))
                continue
            extent = check_log(d, "archive", check_archived)
            ends[uid] = extent.end if extent is not None else 0
    problems += _check_destinations(store, state, live)
    for r in state.replays.values():
        a = archives.get(r.get("auid"))
        if r.get("state") == "RUNNING" and (a is None or a["name"] != r.get("archive")):
            problems.append(Problem(NOTE, os.path.join(root, "catalog"), None, None,
                                    f"replay {r['name']!r} is RUNNING but its archive {r.get('archive')!r} is "
                                    "gone (a worker marks it COMPLETED)"))
        elif a is not None and r.get("auid") in ends and r.get("pos", 0) > ends[r["auid"]]:
            problems.append(Problem(DAMAGE, os.path.join(aroot, f"{r['auid']:016x}"), None, None,
                                    f"replay {r['name']!r} is at position {r['pos']}, but archive "
                                    f"{r['archive']!r} holds valid records only below {ends[r['auid']]}"))
    return problems


def _check_destinations(store: str, state: BusState, live: dict) -> list:
    """Targets whose queue, topic or bus does not exist (or is another of the same name)."""
    from walq.bus.bus import DELIVERED
    from walq.tools.inspect import DAMAGE, NOTE, Problem, catalog_names
    from walq.topic import inspect as topic_inspect

    queues = {(name, uid) for uid, name in catalog_names(store).items()}
    topics_state, _p = topic_inspect._catalog_state(store)
    topics = {(t["topic"], t["uid"]) for t in topics_state.values()}
    buses = {(e.name, e.uid) for e in live.values()}
    qnames = {name for name, _uid in queues}
    where = os.path.join(store, "buses", "catalog")
    problems = []
    for entry in sorted(live.values(), key=lambda e: e.name):
        for rule, targets in sorted(entry.targets.items()):
            label = f"bus {entry.name!r} rule {rule!r} target"
            for t in targets:
                kind, dest = t.get("kind"), (t.get("queue"), t.get("quid"))
                if kind in DELIVERED:
                    if dest not in queues:
                        problems.append(Problem(DAMAGE, where, None, None,
                                                f"{label} {t['id']!r} ({kind}) has lost its internal queue "
                                                f"{dest[0]!r}: it can never deliver (put the target again)"))
                elif kind in ("sqs", "topic", "bus"):
                    have = {"sqs": queues, "topic": topics, "bus": buses}[kind]
                    what = {"sqs": "queue", "topic": "topic", "bus": "bus"}[kind]
                    if dest not in have:
                        problems.append(Problem(NOTE, where, None, None,
                                                f"{label} {t['id']!r} names {what} {dest[0]!r}, which was deleted "
                                                "(its deliveries fail, as EventBridge's do)"))
                else:
                    problems.append(Problem(DAMAGE, where, None, None,
                                            f"{label} {t.get('id')!r} has an unknown kind {kind!r}"))
                dl = t.get("dead_letter")
                if dl is not None and dl not in qnames:
                    problems.append(Problem(NOTE, where, None, None,
                                            f"{label} {t['id']!r} names dead-letter queue {dl!r}, which was "
                                            "deleted (its failed events are dropped)"))
    return problems


# -- dump ------------------------------------------------------------------------------------


def _iso(secs) -> str | None:
    if secs is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))


def describe(store: str) -> list[dict]:
    """Every bus with its rules (pattern, schedule, state, targets),
    archives and replays, as JSON-able dicts (sorted by name)."""
    if not os.path.isdir(os.path.join(store, "buses")):
        return []
    state = catalog_state(store)
    out = []
    for name in sorted(state.buses):
        e = state.buses[name]
        rules = []
        for rname in sorted(e.rules):
            r = e.rules[rname]
            rule = {"rule": rname, "state": "ENABLED" if r.get("enabled") else "DISABLED",
                    "pattern": json.loads(r["pattern"]) if r.get("pattern") is not None else None,
                    "schedule": r.get("schedule"), "description": r.get("description", ""),
                    "targets": [dict(t) for t in e.targets.get(rname, [])]}
            if rname in e.fired:
                rule["last_fired"] = _iso(e.fired[rname])
            rules.append(rule)
        archives = []
        for a in sorted(state.archives.values(), key=lambda a: a["name"]):
            if a["bus"] != e.uid:
                continue
            extent = _log_extent(os.path.join(store, "buses", "archives", f"{a['uid']:016x}"))
            archives.append({"archive": a["name"], "uid": f"{a['uid']:016x}",
                             "pattern": json.loads(a["pattern"]) if a.get("pattern") is not None else None,
                             "retention_days": a.get("retention_days", 0),
                             # Records below "first" were expired (or never written); "end" is the next.
                             "first": extent[0] if extent else 0, "end": extent[1] if extent else 0})
        replays = [{"replay": r["name"], "archive": r["archive"], "state": r["state"], "position": r["pos"],
                    "start": _iso(r["start"]), "end": _iso(r["end"]), "rules": r.get("rules")}
                   for r in sorted(state.replays.values(), key=lambda r: r["name"]) if r["bus"] == e.uid]
        out.append({"type": "bus", "bus": name, "uid": f"{e.uid:016x}", "default": name == DEFAULT_BUS,
                    "rules": rules, "archives": archives, "replays": replays})
    return out



def segment_kind(path: str) -> str | None:
    """``"bus"`` for a segment of a bus's log, ``"archive"`` for one of an
    archive's, None for any other (by where the file lies in a store)."""
    d = os.path.dirname(os.path.abspath(path))
    parent = os.path.basename(os.path.dirname(d))
    if _uid_of(os.path.basename(d)) is None:
        return None
    if parent == "buses":
        return "bus"
    if parent == "archives" and os.path.basename(os.path.dirname(os.path.dirname(d))) == "buses":
        return "archive"
    return None


def record_json(rec, kind: str) -> dict:
    """One record of a bus's log (``kind`` "bus") or an archive's ("archive")
    as a JSON-able dict (docs/format.md, "Bus log records")."""
    import base64

    out: dict = {"seq": rec.seq, "segment": os.path.basename(rec.path), "offset": rec.offset}
    try:
        if rec.type == O.LOST and not rec.payload:
            out["type"] = "lost"  # the filler `walq repair` put where a record was lost
        elif kind == "bus":
            check_routed(rec.type, rec.payload)
            r = json.loads(rec.payload)
            out["type"] = "routed"
            out["copies"] = [{"kind": c[4] if len(c) > 4 else "q", "to": c[0], "uid": f"{c[1]:016x}",
                              "copy_id": c[2], "body": O.body_of(r, c)} for c in r["c"]]
            out["positions"] = r["p"]
            out.update((k, r[k]) for k in ("src", "tick", "replay") if k in r)
        else:
            from walq.bus.archive import decode

            at, ev = decode(rec.type, rec.payload)
            out.update(type="archived", copy_id=rec.payload[:16].hex(), archived_at=_iso(at), event=ev)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        out.update(type=f"type-{rec.type}", error=f"does not decode: {exc}",
                   payload_base64=base64.b64encode(rec.payload).decode("ascii"))
    return out
