"""Topics in ``walq repair`` (walq/tools/repair.py runs this after the
queues and the catalog, holding every log's locks; docs/format.md,
"Repair").

* **Topic logs.**  A log with damage, a gap, records that validate but are
  not PUBLISH records, or records recovery cut aside that still validate is
  rewritten: every intact publish keeps its sequence (a FIFO topic's
  sequence numbers, the cursor and the mark name publishes by sequence), a
  lost one becomes a LOST record (type 2, empty; the fan-out skips it), and
  cut-aside records whose sequences were reused go at the end.  The topic's
  mark is then set aside, so the next fan-out rebuilds it from the cursor
  and copies every publish past it, skipping the copies a queue holds.
* **Cursor and mark.**  A cursor that does not decode or covers publishes
  the log does not hold is set aside: the next fan-out starts at the log's
  first publish, again skipping copies already made.
* **The topics' catalog.**  Rewritten from the records that validate and
  decode, in order (its sequences name nothing); a record cut aside whose
  sequence was reused is reported lost, not replayed late.

A topic the catalog lists whose directory is gone is reported (its
publishes are lost); ``walq topic delete`` removes it.
"""

from __future__ import annotations

import json
import os

from walq.topic import inspect as topic_inspect
from walq.topic import records as P
from walq.topic.fanout import CURSOR_FILE, MARK_FILE


def _uid_of(name: str) -> int | None:
    if len(name) != 16:
        return None
    try:
        return int(name, 16)
    except ValueError:
        return None


def log_dirs(store: str) -> list[tuple[str, str]]:
    """``(label, directory)`` of every topic log: the catalog, then each topic."""
    root = os.path.join(store, "topics")
    if not os.path.isdir(root):
        return []
    out = [("topic catalog", os.path.join(root, "catalog"))]
    for name in sorted(os.listdir(root)):
        if _uid_of(name) is not None and os.path.isdir(os.path.join(root, name)):
            out.append((f"topic directory {name}", os.path.join(root, name)))
    return [(label, d) for label, d in out if os.path.isdir(d)]


def _cursor_problem(d: str, end: int) -> str | None:
    """Why the cursor in ``d`` cannot be trusted, or None (also when there is none)."""
    try:
        with open(os.path.join(d, CURSOR_FILE), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        c = json.loads(raw)
        if not isinstance(c, dict) or not isinstance(c.get("upto"), int) or isinstance(c["upto"], bool) \
                or not isinstance(c.get("pos"), dict):
            return "it does not decode (needs 'upto' and 'pos')"
    except ValueError as exc:
        return f"it does not decode ({exc})"
    if c["upto"] > end:
        return f"it covers publishes below {c['upto']}, but the log holds records only below {end}"
    return None


def _fanout_files(store: str, d: str, lg, rewritten: bool, dry_run: bool, quarantine) -> None:
    """Sets aside a cursor the log does not support, and the mark after a rewrite."""
    from walq.bus.inspect import _log_extent
    from walq.tools.repair import _set_aside

    if not rewritten:  # else rewrite_log says what the log holds (also in a dry run)
        lg.first, lg.end = _log_extent(d) or (0, 0)
    aside = []
    why = _cursor_problem(d, lg.end)
    if why is not None:
        aside.append(os.path.join(d, CURSOR_FILE))
        lg.actions.append(f"set aside the fan-out cursor ({why}): the next fan-out copies from the log's first "
                          "publish, skipping copies the queues already hold")
    mark = os.path.join(d, MARK_FILE)
    if rewritten and os.path.exists(mark):
        aside.append(mark)
        lg.actions.append("set aside the fan-out mark: the next fan-out rebuilds it from the cursor")
    lg.set_aside += [os.path.relpath(p, store) for p in aside]
    if aside and not dry_run:
        _set_aside(store, quarantine(), aside)


def repair_topics(store: str, report, dry_run: bool, quarantine) -> None:
    """Repairs the topics' catalog and each topic's log, cursor and mark;
    appends a LogRepair per log to ``report``."""
    from walq.tools.repair import LogRepair, rewrite_log

    for label, d in log_dirs(store):
        lg = LogRepair(label, d)
        report.logs.append(lg)
        if label == "topic catalog":
            rewrite_log(store, d, lg, topic_inspect.check_catalog_record, None, dry_run, quarantine)
        else:
            rewritten = rewrite_log(store, d, lg, topic_inspect.check_publish, P.LOST, dry_run, quarantine)
            _fanout_files(store, d, lg, rewritten, dry_run, quarantine)
    topics, _problems = topic_inspect._catalog_state(store)
    for name, t in sorted(topics.items()):
        if not os.path.isdir(os.path.join(store, "topics", f"{t['uid']:016x}")):
            report.catalog.append(f"topic {name!r} is listed but its directory topics/{t['uid']:016x} is gone: "
                                  "its publishes are lost; remove it with walq topic delete")
