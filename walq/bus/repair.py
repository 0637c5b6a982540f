"""Event buses in ``walq repair`` (walq/tools/repair.py runs this after the
queues and the catalog, holding every log's locks; docs/format.md,
"Repair").

* **Bus and archive logs.**  A log with damage, a gap, records that
  validate but do not decode, or records recovery cut aside that still
  validate is rewritten: every intact record keeps its sequence (the mark,
  the cursor and replays' positions name records by sequence), a lost one
  becomes a LOST filler (type 2, empty; copiers and replays skip it), and
  cut-aside records whose sequences were reused go at the end.  The bus's
  mark is then set aside, so the next copy rebuilds it from the cursor and
  completes every record past it, skipping copies its destinations hold.
* **Cursor and mark.**  A cursor that does not decode or covers records the
  log does not hold is set aside (completion then starts at the log's
  first record); so is a mark that is not one.
* **The buses' catalog.**  Rewritten from the records that validate and
  decode, in order (its sequences name nothing); a record cut aside whose
  sequence was reused is not replayed late (it could undo a later change)
  and is reported lost.

Everything replaced goes to the quarantine folder, as for queues.
"""

from __future__ import annotations

import os

from walq.bus import inspect as bus_inspect
from walq.bus import outbox as O

LOST = O.LOST


def log_dirs(store: str) -> list[tuple[str, str]]:
    """``(label, directory)`` of every bus log: the catalog, each bus, each archive."""
    root = os.path.join(store, "buses")
    if not os.path.isdir(root):
        return []
    out = [("bus catalog", os.path.join(root, "catalog"))]
    for name in sorted(os.listdir(root)):
        if bus_inspect._uid_of(name) is not None and os.path.isdir(os.path.join(root, name)):
            out.append((f"bus directory {name}", os.path.join(root, name)))
    aroot = os.path.join(root, "archives")
    if os.path.isdir(aroot):
        for name in sorted(os.listdir(aroot)):
            if bus_inspect._uid_of(name) is not None and os.path.isdir(os.path.join(aroot, name)):
                out.append((f"archive directory {name}", os.path.join(aroot, name)))
    return [(label, d) for label, d in out if os.path.isdir(d)]


def _decodes(check, type_: int, payload: bytes) -> bool:
    try:
        check(type_, payload)
        return True
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False


def _rewrite(store: str, d: str, lg, check, dense: bool, dry_run: bool, quarantine) -> bool:
    """Salvages and rewrites one log if it needs it; returns whether it did (or would)."""
    from walq.tools.repair import _runs, _Salvage, _swap_in

    sv = _Salvage(d)
    sv.read()
    first = sv.bases[0] if sv.bases else 0
    undecodable = sorted(s for s, (t, p) in sv.records.items() if not _decodes(check, t, p))
    present = sorted(sv.records)
    end = present[-1] + 1 if present else first
    torn = [t for t in sv.torn if t["frames"]]
    in_place, late = [], []
    for t in torn:
        if t["frames"][0][0] >= end:
            in_place.append(t)
            end = t["frames"][-1][0] + 1
        else:
            late.append(t)
    torn_at = {s: (typ, p) for t in in_place for s, typ, p in t["frames"]}
    missing = [s for s in range(first, end) if s not in sv.records and s not in torn_at]
    if not (sv.problems or torn or undecodable or missing):
        return False
    explained = set()
    for x in sv.lost:
        explained.update(range(x["from"], x["to"] + 1))
        lg.lost.append({k: v for k, v in x.items() if k not in ("bytes", "tail", "message_ids")})
    for lo, hi in _runs([s for s in missing if s not in explained]):
        lg.lost.append({"from": lo, "to": hi, "why": "missing: no segment holds these records", "file": d,
                        "offset": None})
    for lo, hi in _runs(undecodable):
        lg.lost.append({"from": lo, "to": hi, "why": "valid checksum, but not a record of this log",
                        "file": d, "offset": None})
    out = []
    bad = set(undecodable)
    for s in range(first, end):
        rec = sv.records.get(s) or torn_at.get(s)
        if rec is None or s in bad:
            if dense:
                out.append((LOST, b""))
            continue
        out.append(rec)
    for t in in_place:
        lg.salvaged.append({"file": t["file"], "count": len(t["frames"]), "from": t["frames"][0][0],
                            "to": t["frames"][-1][0]})
    for t in late:
        frames = [(typ, p) for _s, typ, p in t["frames"] if _decodes(check, typ, p)]
        if dense:
            start = first + len(out)
            out += frames
            lg.salvaged.append({"file": t["file"], "count": len(frames), "from": t["frames"][0][0],
                                "to": t["frames"][-1][0], "new_from": start, "new_to": first + len(out) - 1})
        else:
            lg.lost.append({"from": t["frames"][0][0], "to": t["frames"][-1][0], "file": t["file"],
                            "offset": None, "why": "cut aside as a torn tail and its sequences reused since: "
                                                   "not replayed late (it could undo a later change)"})
    lg.first, lg.end = first, first + len(out)
    lg.records_kept = len(present) - len(undecodable)
    lg.actions.append(f"rewrote the log: {len(out)} records from {first} in new segments"
                      + (f" ({len(missing) + len(undecodable)} lost records filled)" if dense else ""))
    aside = sv.aside + [os.path.join(d, "log.ctl")]
    lg.set_aside = [os.path.relpath(p, store) for p in aside if os.path.exists(p)]
    if not dry_run:
        _swap_in(store, quarantine(), d, first, out, aside)
    return True


def _outbox_files(store: str, d: str, lg, rewritten: bool, dry_run: bool, quarantine) -> None:
    """Sets aside a cursor that does not decode or covers records the log
    lacks, and a mark that is not one or that a rewrite made stale."""
    from walq.tools.inspect import DAMAGE
    from walq.tools.repair import _set_aside

    if not rewritten:  # else _rewrite says what the log holds (also in a dry run)
        lg.first, lg.end = bus_inspect._log_extent(d) or (0, 0)
    aside = []
    cursor = bus_inspect._check_cursor(d, (lg.first, lg.end), bus_inspect._read_cursor(d))
    if any(p.kind == DAMAGE for p in cursor):
        aside.append(os.path.join(d, O.CURSOR_FILE))
        lg.actions.append("set aside the outbox cursor (it does not decode, or covers records the log lacks): "
                          "the next copy completes from the log's first record, skipping copies already made")
    mark = os.path.join(d, O.MARK_FILE)
    if os.path.exists(mark) and (rewritten or any(p.kind == DAMAGE for p in bus_inspect._check_mark(d))):
        aside.append(mark)
        lg.actions.append("set aside the outbox mark: the next copy rebuilds it from the cursor")
    lg.set_aside += [os.path.relpath(p, store) for p in aside]
    if aside and not dry_run:
        _set_aside(store, quarantine(), aside)


def repair_buses(store: str, report, dry_run: bool, quarantine) -> None:
    """Repairs the buses' catalog, each bus's log, cursor and mark, and each
    archive's log; appends a LogRepair per log to ``report``."""
    from walq.tools.repair import LogRepair

    for label, d in log_dirs(store):
        lg = LogRepair(label, d)
        report.logs.append(lg)
        if label == "bus catalog":
            _rewrite(store, d, lg, bus_inspect.check_catalog_record, False, dry_run, quarantine)
        elif label.startswith("bus "):
            rewritten = _rewrite(store, d, lg, bus_inspect.check_routed, True, dry_run, quarantine)
            _outbox_files(store, d, lg, rewritten, dry_run, quarantine)
        else:
            _rewrite(store, d, lg, bus_inspect.check_archived, True, dry_run, quarantine)

