"""Topics in ``walq verify`` and ``walq dump``: read the files directly,
without locks or recovery, as walq/tools/inspect.py does for queues."""

from __future__ import annotations

import json
import os

from walq.errors import CorruptionError
from walq.topic import records as P
from walq.topic.fanout import CURSOR_FILE
from walq.topic.topics import INTERNAL_PREFIX


_CATALOG_OPS = ("topic", "delete_topic", "subscribe", "set", "unsubscribe")


def check_catalog_record(type_: int, payload: bytes) -> None:
    """Raises ValueError (KeyError, TypeError) unless ``payload`` is a topic catalog record."""
    from walq.topic.catalog import SubEntry

    if type_ != 1:
        raise ValueError(f"topic catalog records have type 1, not {type_}")
    r = json.loads(payload)
    if not isinstance(r, dict) or r.get("op") not in _CATALOG_OPS:
        raise ValueError(f"unknown topic catalog op {r.get('op') if isinstance(r, dict) else r!r}")
    op = r["op"]
    if op in ("topic", "delete_topic"):
        if not (isinstance(r["name"], str) and isinstance(r["uid"], int)):
            raise ValueError(f"{op} needs a name (text) and a uid (integer)")
        if op == "topic":
            r["fifo"], r["content_based_dedup"]  # noqa: B018  (KeyError when missing)
    elif not isinstance(r["topic"], int):
        raise ValueError(f"{op} needs a topic uid (integer)")
    elif op == "unsubscribe":
        r["id"]  # noqa: B018
    else:
        SubEntry(**r["sub"])  # TypeError on a missing or unknown field


def check_publish(type_: int, payload: bytes) -> None:
    """Raises ValueError (struct.error, UnicodeDecodeError) unless ``payload``
    is a PUBLISH record, or the empty filler of a record repair lost."""
    if type_ == P.LOST and not payload:
        return
    if type_ != P.PUBLISH:
        raise ValueError(f"unknown topic record type {type_}")
    P.decode(0, payload).message.decode("utf-8")


def _catalog_state(store: str):
    """``(topics: name -> entry dict with "subs", problems)`` from the raw topics' catalog."""
    from walq.tools.inspect import DAMAGE, Problem, iter_log

    directory = os.path.join(store, "topics", "catalog")
    topics: dict[str, dict] = {}
    problems = []
    if not os.path.isdir(directory):
        return topics, problems
    try:
        for rec in iter_log(directory):
            try:
                check_catalog_record(rec.type, rec.payload)
                r = json.loads(rec.payload)
                op = r["op"]
                if op == "topic":
                    topics[r["name"]] = {"topic": r["name"], "uid": r["uid"], "fifo": r["fifo"],
                                         "content_based_dedup": r["content_based_dedup"], "subs": {}}
                elif op == "delete_topic":
                    if topics.get(r["name"], {}).get("uid") == r["uid"]:
                        del topics[r["name"]]
                elif op in ("subscribe", "set", "unsubscribe"):
                    for t in topics.values():
                        if t["uid"] == r["topic"]:
                            if op == "unsubscribe":
                                t["subs"].pop(r["id"], None)
                            else:
                                t["subs"][r["sub"]["id"]] = r["sub"]
                else:
                    raise ValueError(f"unknown topic catalog op {op!r}")
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(Problem(DAMAGE, rec.path, rec.offset, len(rec.payload),
                                        f"record {rec.seq} does not decode as a topic catalog record: {exc}",
                                        rec.payload[:32]))
    except CorruptionError as exc:
        problems.append(Problem(DAMAGE, exc.path or directory, exc.offset, None, str(exc)))
    return topics, problems


def describe(store: str) -> list[dict]:
    """Every topic with its subscriptions, as JSON-able dicts (sorted by name)."""
    topics, _problems = _catalog_state(store)
    out = []
    for name in sorted(topics):
        t = topics[name]
        out.append({"type": "topic", "topic": name, "uid": f"{t['uid']:016x}", "fifo": t["fifo"],
                    "content_based_dedup": t["content_based_dedup"],
                    "subscriptions": [dict(s, filter_policy=json.loads(s["filter_policy"])
                                           if s.get("filter_policy") else None) for s in t["subs"].values()]})
    return out


def verify(store: str, report=None, progress=None) -> list:
    """Problems in the topics' catalog, each topic's log and cursor, and
    leftovers (topic directories or internal queues nothing names).
    Counts what it read into ``report`` (a walq.tools.inspect.VerifyReport) if given;
    ``progress`` is called with each segment's path once its log is read."""
    from walq.tools.inspect import DAMAGE, NOTE, Problem, catalog_names, iter_log, segment_files

    def read(d: str) -> None:
        """Counts a log read: its segments, into the report and the progress."""
        for _base, path in segment_files(d):
            if report is not None:
                report.segments += 1
            if progress:
                progress(path)

    topics, problems = _catalog_state(store)
    root = os.path.join(store, "topics")
    if not os.path.isdir(root):
        return problems
    read(os.path.join(root, "catalog"))
    if report is not None:
        report.logs += 1
    live = {t["uid"]: t for t in topics.values()}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if name == "catalog" or not os.path.isdir(d):
            continue
        try:
            uid = int(name, 16)
        except ValueError:
            problems.append(Problem(NOTE, d, None, None, "not a topic directory"))
            continue
        if uid not in live:
            problems.append(Problem(NOTE, d, None, None, "directory of a topic the catalog does not list "
                                                         "(deleted, its files not yet removed)"))
            continue
        end = 0
        try:
            for rec in iter_log(d):
                end = rec.seq + 1
                if report is not None:
                    report.records += 1
                try:
                    check_publish(rec.type, rec.payload)
                except Exception as exc:  # ValueError, UnicodeDecodeError, struct.error
                    problems.append(Problem(DAMAGE, rec.path, rec.offset, len(rec.payload),
                                            f"record {rec.seq} does not decode as a publish: {exc}",
                                            rec.payload[:32]))
        except CorruptionError as exc:
            problems.append(Problem(DAMAGE, exc.path or d, exc.offset, None, str(exc)))
        read(d)
        if report is not None:
            report.logs += 1
        cursor = os.path.join(d, CURSOR_FILE)
        if os.path.exists(cursor):
            try:
                with open(cursor, "rb") as f:
                    c = json.loads(f.read())
                if not isinstance(c.get("upto"), int) or not isinstance(c.get("pos"), dict):
                    raise ValueError("needs 'upto' and 'pos'")
                if end and c["upto"] > end:
                    problems.append(Problem(DAMAGE, cursor, None, None,
                                            f"the cursor covers publishes below {c['upto']}, but the topic's "
                                            f"log holds valid records only below {end}"))
            except ValueError as exc:
                problems.append(Problem(DAMAGE, cursor, 0, None, f"topic cursor does not decode: {exc}"))
    from walq.bus.inspect import internal_queues  # an event bus target's internal queue is not an orphan
    named = {s["queue"] for t in topics.values() for s in t["subs"].values()} | internal_queues(store)
    for qname in sorted(catalog_names(store).values()):
        if qname.startswith(INTERNAL_PREFIX) and qname not in named:
            problems.append(Problem(NOTE, os.path.join(store, "catalog"), None, None,
                                    f"internal queue {qname} belongs to no subscription or bus target (a "
                                    "subscribe, unsubscribe or put_targets was cut short); delete it with "
                                    "walq queue delete"))
    return problems
