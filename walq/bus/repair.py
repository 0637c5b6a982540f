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
    from walq.tools.repair import LogRepair, rewrite_log

    for label, d in log_dirs(store):
        lg = LogRepair(label, d)
        report.logs.append(lg)
        if label == "bus catalog":
            rewrite_log(store, d, lg, bus_inspect.check_catalog_record, None, dry_run, quarantine)
        elif label.startswith("bus "):
            rewritten = rewrite_log(store, d, lg, bus_inspect.check_routed, LOST, dry_run, quarantine)
            _outbox_files(store, d, lg, rewritten, dry_run, quarantine)
        else:
            rewrite_log(store, d, lg, bus_inspect.check_archived, LOST, dry_run, quarantine)

