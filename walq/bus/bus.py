"""One event bus as seen by this process: rules, targets, put_events."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import threading
import time
import uuid

from walq.bus import outbox as O
from walq.bus.catalog import DEFAULT_BUS
from walq.bus.schedule import parse as parse_schedule
from walq.bus.targets import Target, check_target_id, render, shape_fields
from walq.errors import BatchError, InvalidParameter, QueueDoesNotExist, RuleDoesNotExist
from walq.log import Log
from walq.match import Matcher, compile_pattern
from walq.queue.results import BatchResult

_RULE_NAME = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
MAX_TARGETS = 5  # per rule, as EventBridge
MAX_ENTRIES = 10  # per put_events, as EventBridge
MAX_DESCRIPTION = 512
#: Target kinds a worker delivers, from an internal queue per target.
DELIVERED = ("http", "https", "handler")
#: Internal queues' names start with this (not a queue-name character; walq/topic/topics.py).
INTERNAL_PREFIX = "~"


def check_rule_name(name) -> str:
    """``name`` if EventBridge accepts it as a rule name."""
    if not isinstance(name, str) or not _RULE_NAME.match(name):
        raise InvalidParameter(f"rule name {name!r}: use 1-64 characters of A-Z a-z 0-9 . - _")
    return name


def rule_arn(broker, bus_name: str, rule: str) -> str:
    """``arn:aws:events:{region}:{account}:rule/{rule}`` (``rule/{bus}/{rule}`` off the default bus)."""
    where = rule if bus_name == DEFAULT_BUS else f"{bus_name}/{rule}"
    return f"arn:aws:events:{broker.region}:{broker.account}:rule/{where}"


def iso_time(secs: float) -> str:
    """EventBridge's event time: ISO-8601 UTC to the second, with Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))


def _entry_time(value, now: float) -> str:
    if value is None:
        return iso_time(now)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return iso_time(value.timestamp())
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidParameter(f"time {value!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.timezone.utc)
        return iso_time(parsed.timestamp())
    raise InvalidParameter(f"time must be a datetime or ISO-8601 text; got {type(value).__name__}")


class Rule:
    """A rule of a bus (a snapshot: ``bus.list_rules()`` gives fresh ones)."""

    def __init__(self, bus: "Bus", entry: dict, targets: list):
        self.bus = bus
        self.name = entry["name"]
        self.pattern = json.loads(entry["pattern"]) if entry["pattern"] is not None else None
        self.schedule = entry["schedule"]
        self.enabled = entry["enabled"]
        self.description = entry["description"]
        self._targets = targets

    @property
    def arn(self) -> str:
        """``arn:aws:events:{region}:{account}:rule/{name}`` (``rule/{bus}/{name}`` off the default bus)."""
        return self.bus._rule_arn(self.name)

    @property
    def state(self) -> str:
        """``"ENABLED"`` or ``"DISABLED"``."""
        return "ENABLED" if self.enabled else "DISABLED"

    def targets(self) -> list[dict]:
        """The rule's targets as stored (id, kind, queue, input options)."""
        return [dict(t) for t in self._targets]

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, bus={self.bus.name!r}, {self.state})"


class Bus:
    """An event bus.  Get it from ``Broker.get_bus`` or ``Broker.create_bus``;
    share it between threads."""

    def __init__(self, service, name: str, uid: int, directory: str):
        self._service = service
        self._broker = service.broker
        self._clock = self._broker._clock
        self.name = name
        self._uid = uid
        self._dir = directory
        self._log = Log.open(directory, self._broker._log_options, self._broker._log_io(directory))
        try:
            self._outbox = O.Outbox(self)
        except BaseException:
            self._log.close()
            raise
        self._mu = threading.Lock()
        self._routing = (None, None)
        self._queue_plan = (None, None)
        self._archive_matcher = (None, None)

    @property
    def arn(self) -> str:
        """``arn:aws:events:{region}:{account}:event-bus/{name}``."""
        b = self._broker
        return f"arn:aws:events:{b.region}:{b.account}:event-bus/{self.name}"

    def _rule_arn(self, name: str) -> str:
        return rule_arn(self._broker, self.name, name)

    def _entry(self):
        return self._service.live_entry(self)

    # -- rules -----------------------------------------------------------------------

    def put_rule(self, name, *, pattern=None, schedule=None, enabled=True, description="") -> Rule:
        """Creates or replaces a rule (its targets stay); returns it.  A
        schedule rule (default bus only, as EventBridge) is fired by workers."""
        check_rule_name(name)
        if pattern is None and schedule is None:
            raise InvalidParameter(f"rule {name!r} needs a pattern or a schedule")
        text = None
        if pattern is not None:
            compile_pattern(pattern)  # InvalidPattern with EventBridge's reason
            text = json.dumps(json.loads(pattern) if isinstance(pattern, str) else pattern, sort_keys=True)
        if schedule is not None:
            parse_schedule(schedule)
            if self.name != DEFAULT_BUS:
                raise InvalidParameter(f"rule {name!r}: schedule rules are supported on the default bus only")
        if not isinstance(enabled, bool):
            raise InvalidParameter("enabled must be True or False")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise InvalidParameter(f"description must be text of at most {MAX_DESCRIPTION} characters")
        rule = {"name": name, "pattern": text, "schedule": schedule, "enabled": enabled, "description": description}
        self._write_rule(name, rule, must_exist=False)
        return self._rule(name)

    def _write_rule(self, name: str, rule: dict, must_exist: bool) -> None:
        cat = self._service.catalog
        with cat.locked() as tx:
            cat.replay()
            entry = self._entry()
            if must_exist and name not in entry.rules:
                raise RuleDoesNotExist(f"rule {name!r} does not exist on bus {self.name!r}")
            cur = entry.rules.get(name)
            # A schedule counts from when it was set: the first rate tick is one period later.
            same = cur is not None and cur.get("schedule") == rule["schedule"] and "created" in cur
            rule = dict(rule, created=cur["created"] if same else self._clock())
            if cur != rule:
                cat.write(tx, {"op": "rule", "bus": self._uid, "rule": rule})

    def _rule(self, name: str) -> Rule:
        self._service.catalog.refresh()
        entry = self._entry()
        r = entry.rules.get(name)
        if r is None:
            raise RuleDoesNotExist(f"rule {name!r} does not exist on bus {self.name!r}")
        return Rule(self, r, entry.targets.get(name, []))

    def describe_rule(self, name) -> Rule:
        """The named rule; RuleDoesNotExist if absent."""
        check_rule_name(name)
        return self._rule(name)

    def list_rules(self, prefix: str = "") -> list[Rule]:
        """The bus's rules whose names start with ``prefix``, sorted by name."""
        if not isinstance(prefix, str):
            raise InvalidParameter("prefix must be a str")
        self._service.catalog.refresh()
        entry = self._entry()
        return [Rule(self, entry.rules[n], entry.targets.get(n, []))
                for n in sorted(entry.rules) if n.startswith(prefix)]

    def _set_enabled(self, name, enabled: bool) -> None:
        check_rule_name(name)
        self._service.catalog.refresh()
        cur = self._entry().rules.get(name)
        if cur is None:
            raise RuleDoesNotExist(f"rule {name!r} does not exist on bus {self.name!r}")
        self._write_rule(name, dict(cur, enabled=enabled), must_exist=True)

    def enable_rule(self, name) -> None:
        """Turns a rule on (put_events matches it again)."""
        self._set_enabled(name, True)

    def disable_rule(self, name) -> None:
        """Turns a rule off: put_events no longer matches it; its targets stay."""
        self._set_enabled(name, False)

    def delete_rule(self, name) -> None:
        """Deletes a rule.  As EventBridge, refused while it has targets."""
        check_rule_name(name)
        cat = self._service.catalog
        with cat.locked() as tx:
            cat.replay()
            entry = self._entry()
            if name not in entry.rules:
                raise RuleDoesNotExist(f"rule {name!r} does not exist on bus {self.name!r}")
            if entry.targets.get(name):
                raise InvalidParameter(f"rule {name!r} still has targets; remove them first (remove_targets)")
            cat.write(tx, {"op": "delete_rule", "bus": self._uid, "name": name})

    # -- targets -----------------------------------------------------------------------

    def _target_record(self, t) -> dict:
        """The stored form of ``t`` (no internal queue yet); InvalidParameter
        for a target EventBridge would refuse."""
        from walq.topic.endpoints import classify
        from walq.topic.topic import Topic
        from walq.worker.retry import RetryPolicy

        if not isinstance(t, Target):
            raise InvalidParameter(f"targets must be walq.Target objects; got {type(t).__name__}")
        check_target_id(t.id)
        rec = {"id": t.id}
        ep = t.endpoint
        if isinstance(ep, (Topic, Bus)):
            self._same_store(t.id, ep._broker, f"{type(ep).__name__.lower()} {ep.name!r}")
            if isinstance(ep, Topic):
                topic = self._broker.get_topic(ep.name)
                if topic.fifo:
                    raise InvalidParameter(f"target {t.id!r}: FIFO topic {ep.name!r} needs a message group id, "
                                           "which a walq.Target does not take; use a standard topic")
                rec.update(kind="topic", queue=topic.name, quid=topic._uid)
            else:
                target_bus = self._broker.get_bus(ep.name)
                if target_bus._uid == self._uid:
                    raise InvalidParameter(f"target {t.id!r}: a rule cannot target its own bus")
                if t.input is not None or t.input_path is not None or t.input_transformer is not None:
                    raise InvalidParameter(f"target {t.id!r}: a bus target gets the event itself; "
                                           "input, input_path and input_transformer do not apply")
                rec.update(kind="bus", queue=target_bus.name, quid=target_bus._uid)
        else:
            try:
                kind = classify(self._broker, ep)
            except InvalidParameter as exc:
                raise InvalidParameter(f"target {t.id!r}: {exc}".replace("topic's store", "bus's store")) from None
            if kind.protocol == "sqs":
                q = self._broker.get_queue(kind.endpoint)
                if q.attributes.fifo:
                    raise InvalidParameter(f"target {t.id!r}: FIFO queue {q.name!r} needs a message group id, "
                                           "which a walq.Target does not take; use a standard queue")
                rec.update(kind="sqs", queue=q.name, quid=q._uid)
            else:
                rec.update(kind=kind.protocol, endpoint=kind.endpoint)  # its internal queue comes later
        rec.update(shape_fields(t.input, t.input_path, t.input_transformer))
        if t.retry is not None:
            if not isinstance(t.retry, RetryPolicy):
                raise InvalidParameter(f"target {t.id!r}: retry must be a walq.RetryPolicy")
            p = RetryPolicy.eventbridge(t.retry.max_retries, t.retry.max_age)  # EventBridge's ranges
            rec["retry"] = {"max_retries": p.max_retries, "max_age": p.max_age}
        if t.dead_letter is not None:
            from walq.queue.queue import Queue

            if not isinstance(t.dead_letter, Queue):
                raise InvalidParameter(f"target {t.id!r}: dead_letter must be a walq.Queue")
            self._same_store(t.id, t.dead_letter._broker, f"dead-letter queue {t.dead_letter.name!r}")
            rec["dead_letter"] = self._broker.get_queue(t.dead_letter.name).name
        return rec

    def _same_store(self, tid: str, broker, what: str) -> None:
        mine, theirs = os.path.realpath(self._broker.path), os.path.realpath(broker.path)
        if mine != theirs:
            raise InvalidParameter(f"target {tid!r}: {what} belongs to the store at {theirs}, "
                                   f"not this bus's store at {mine}")

    def put_targets(self, rule_name, targets) -> BatchResult:
        """Adds or replaces targets of a rule (by id).  A target EventBridge
        would refuse raises InvalidParameter and nothing is written."""
        check_rule_name(rule_name)
        if not isinstance(targets, (list, tuple)) or not targets:
            raise InvalidParameter("put_targets needs a non-empty list of walq.Target")
        recs = [self._target_record(t) for t in targets]
        ids = [r["id"] for r in recs]
        if len(set(ids)) != len(ids):
            raise InvalidParameter("put_targets: target ids must be distinct")
        cat = self._service.catalog
        cat.refresh()
        self._check_room(self._entry(), rule_name, ids)  # before any internal queue is made
        made = []
        try:
            for r in recs:
                if r["kind"] in DELIVERED:
                    name = INTERNAL_PREFIX + secrets.token_hex(16)
                    q = self._broker._create_internal_queue(name, False)
                    made.append(name)
                    r.update(queue=name, quid=q._uid)
            with cat.locked() as tx:
                cat.replay()
                entry = self._entry()
                self._check_room(entry, rule_name, ids)
                old = {t["id"]: t for t in entry.targets.get(rule_name, [])}
                merged = dict(old)
                merged.update((r["id"], r) for r in recs)
                cat.write(tx, {"op": "targets", "bus": self._uid, "rule": rule_name,
                               "targets": list(merged.values())})
        except BaseException:
            for name in made:
                self._drop_queue(name)
            raise
        for tid in ids:
            if tid in old and old[tid].get("kind") in DELIVERED:
                self._drop_queue(old[tid]["queue"])
        return BatchResult([(i, r["id"]) for i, r in enumerate(recs)])

    def _check_room(self, entry, rule_name: str, ids: list) -> None:
        if rule_name not in entry.rules:
            raise RuleDoesNotExist(f"rule {rule_name!r} does not exist on bus {self.name!r}")
        have = {t["id"] for t in entry.targets.get(rule_name, [])}
        n = len(have | set(ids))
        if n > MAX_TARGETS:
            raise InvalidParameter(f"rule {rule_name!r} would have {n} targets; at most {MAX_TARGETS}")

    def _drop_queue(self, name: str) -> None:
        try:
            self._broker.delete_queue(name)
        except QueueDoesNotExist:
            pass

    def remove_targets(self, rule_name, ids) -> BatchResult:
        """Removes targets of a rule by id; an unknown id fails alone."""
        check_rule_name(rule_name)
        if isinstance(ids, str) or not isinstance(ids, (list, tuple)) or not ids:
            raise InvalidParameter("remove_targets needs a non-empty list of target ids")
        cat = self._service.catalog
        with cat.locked() as tx:
            cat.replay()
            entry = self._entry()
            if rule_name not in entry.rules:
                raise RuleDoesNotExist(f"rule {rule_name!r} does not exist on bus {self.name!r}")
            cur = entry.targets.get(rule_name, [])
            have = {t["id"] for t in cur}
            ok = [(i, tid) for i, tid in enumerate(ids) if tid in have]
            failed = [(i, InvalidParameter(f"rule {rule_name!r} has no target {tid!r}"))
                      for i, tid in enumerate(ids) if tid not in have]
            gone = {tid for _, tid in ok}
            if ok:
                cat.write(tx, {"op": "targets", "bus": self._uid, "rule": rule_name,
                               "targets": [t for t in cur if t["id"] not in gone]})
        for t in cur:
            if t["id"] in gone and t.get("kind") in DELIVERED:
                self._drop_queue(t["queue"])
        return BatchResult(ok, failed)

    # -- events ---------------------------------------------------------------------------

    def _matcher(self):
        """(Matcher of the enabled pattern rules, {rule name: its targets
        prepared for routing}), built again when the catalog moved: rule
        changes are rare next to events, so per event only the matching and
        the copies themselves are left."""
        cat = self._service.catalog
        cat.refresh()
        at, cached = self._routing
        if at == cat.version:
            return cached
        entry = self._entry()
        m = Matcher("pattern")
        for name, r in entry.rules.items():
            if r["enabled"] and r["pattern"] is not None and entry.targets.get(name):
                m.add(name, r["pattern"])
        m.match({})  # builds the index now, so that threads sharing the bus only read it
        plan = {}
        for name in entry.rules:
            arn = self._rule_arn(name)
            prepared = []
            for t in entry.targets.get(name, []):
                kind = O.KIND_OF.get(t["kind"], "q")
                # A target without input options (or a bus) gets the event's JSON itself.
                plain = kind == "b" or not ("input" in t or "input_path" in t or "input_transformer" in t)
                prepared.append((t, kind, (kind, t["queue"], t["quid"]), O.pos_key(kind, t["quid"]),
                                 f"|{name}|{t['id']}|{t['quid']}".encode(), arn, plain))
            plan[name] = prepared
        cached = (m, plan)
        self._routing = (cat.version, cached)
        return cached

    def _queues(self, plan: dict) -> dict:
        """The queue destinations of ``plan`` (from ``_matcher``), (kind,
        name, uid) -> the queue or None, opened again whenever either
        catalog moved (a deleted queue moves the broker's)."""
        broker = self._broker
        broker._catalog.refresh()
        key = (self._routing[0], broker._catalog.log.end)
        at, cached = self._queue_plan
        if at == key:
            return cached
        cached = {}
        for prepared in plan.values():
            for p in prepared:
                if p[1] == "q" and p[2] not in cached:
                    cached[p[2]] = O.open_dest(broker, "q", p[2][1], p[2][2])
        self._queue_plan = (key, cached)
        return cached

    def _event(self, e, now: float) -> dict:
        if not isinstance(e, dict):
            raise InvalidParameter(f"an entry must be a dict; got {type(e).__name__}")
        unknown = set(e) - {"source", "detail_type", "detail", "resources", "time"}
        if unknown:
            raise InvalidParameter(f"unknown entry keys: {', '.join(sorted(unknown))}")
        for k in ("source", "detail_type", "detail"):
            if e.get(k) is None:
                raise InvalidParameter(f"entry is missing {k}")
        source, dtype, detail = e["source"], e["detail_type"], e["detail"]
        if not isinstance(source, str) or not source:
            raise InvalidParameter("source must be non-empty text")
        if not isinstance(dtype, str) or not dtype:
            raise InvalidParameter("detail_type must be non-empty text")
        if isinstance(detail, str):
            try:
                detail = json.loads(detail)
            except ValueError as exc:
                raise InvalidParameter(f"detail is not valid JSON: {exc}") from None
        if not isinstance(detail, dict):
            raise InvalidParameter("detail must be a JSON object (a dict or its JSON text)")
        resources = e.get("resources") or []
        if not isinstance(resources, (list, tuple)) or not all(isinstance(r, str) for r in resources):
            raise InvalidParameter("resources must be a list of str")
        b = self._broker
        return {"version": "0", "id": str(uuid.uuid4()), "detail-type": dtype, "source": source,
                "account": b.account, "time": _entry_time(e.get("time"), now), "region": b.region,
                "resources": list(resources), "detail": detail}

    def put_events(self, entries) -> BatchResult:
        """Sends events to every enabled rule they match.  Returns per-entry
        results: successful ``(index, event id)``, failed ``(index, error)``.
        When it returns, every queue target holds its copy (all or none)."""
        if not isinstance(entries, (list, tuple)) or not entries:
            raise BatchError("put_events needs a non-empty list of entries")
        if len(entries) > MAX_ENTRIES:
            raise BatchError(f"put_events takes at most {MAX_ENTRIES} entries; got {len(entries)}")
        now = self._clock()
        ok, failed, events = [], [], []
        for i, e in enumerate(entries):
            try:
                ev = self._event(e, now)
            except InvalidParameter as exc:
                failed.append((i, exc))
                continue
            events.append(ev)
            ok.append((i, ev["id"]))
        if events:
            self._deliver(events, iso_time(now))
        return BatchResult(ok, failed)

    def _deliver(self, events: list, ingestion: str) -> None:
        opened: dict = {}
        texts: list = []
        copies, positions = self._route(events, ingestion, opened=opened, texts=texts)
        if not copies:
            return
        rec = {"c": copies, "p": positions, "e": texts}
        seq = self._log.append(O.encode(copies, positions, texts), O.ROUTED)
        self._outbox.run({seq: rec}, opened)

    def _route(self, events: list, ingestion: str, src: str | None = None,
               rules: list | None = None, only: list | None = None, archive: bool = True,
               opened: dict | None = None, texts: list | None = None) -> tuple[list, dict]:
        """The copies ``events`` make through the enabled rules, each
        ``[name, uid, copy id hex, body, kind]``, and each destination log's
        end before them (where completing a cut-short copy looks).
        ``opened``: filled with the destinations opened, (kind, name, uid)
        -> the queue, topic or bus (None when deleted).  ``texts``: gets
        each event's JSON once, and the copies that are that JSON name its
        index there instead of holding it (outbox.encode)."""
        matcher, plan = self._matcher()
        queues = self._queues(plan)
        copies, positions = [], {}
        dests = {} if opened is None else opened
        head = src or ""
        blake2b = hashlib.blake2b
        for ev in events:
            if archive and rules is None:
                self._archive_copies(ev, copies, positions)
            hit = matcher.match(ev) if rules is None else rules
            if not hit:
                continue
            if rules is None and len(hit) > 1:
                hit = sorted(hit)
            if only is not None:
                hit = [n for n in hit if n in only]
            text = None  # the event's JSON (or its index in texts), made once for every plain target
            # Copy ids hash src|event id|rule|target|uid: the common head once per event.
            ev_hash = blake2b(f"{head}|{ev['id']}".encode(), digest_size=16)
            for rule_name in hit:
                for t, kind, key, pkey, tail, rule_arn, plain in plan.get(rule_name, ()):
                    dest = dests.get(key, dests)
                    if dest is dests:
                        dest = queues[key] if kind == "q" else O.open_dest(self._broker, kind, key[1], key[2])
                        dests[key] = dest
                        if dest is not None:
                            positions.setdefault(pkey, dest._log.end)
                    if dest is None:
                        continue  # deleted: EventBridge fails that delivery
                    h = ev_hash.copy()
                    h.update(tail)
                    cid = h.hexdigest()
                    if plain:
                        if text is None:
                            text = json.dumps(ev)
                            if texts is not None:
                                texts.append(text)
                                text = len(texts) - 1
                        body = text
                    else:
                        body = render(t, ev, rule_arn, rule_name, ingestion)
                    copies.append([key[1], key[2], cid, body, kind])
        return copies, positions

    def _archive_copies(self, ev: dict, copies: list, positions: dict) -> None:
        cat = self._service.catalog
        mine = [a for a in cat.archives.values() if a["bus"] == self._uid]
        if not mine:
            return
        at, m = self._archive_matcher
        if at != cat.version:
            m = Matcher("pattern")
            for a in mine:
                if a["pattern"] is not None:
                    m.add(a["name"], a["pattern"])
            self._archive_matcher = (cat.version, m)
        hit = m.match(ev)
        for a in mine:
            if a["pattern"] is not None and a["name"] not in hit:
                continue
            dest = self._service.archive_log(a["name"], a["uid"])
            if dest is None:
                continue
            positions.setdefault(O.pos_key("a", a["uid"]), dest._log.end)
            cid = hashlib.blake2b(f"archive|{ev['id']}|{a['uid']}".encode(), digest_size=16).hexdigest()
            copies.append([a["name"], a["uid"], cid, json.dumps(ev), "a"])

    # -- archives and replays ----------------------------------------------------------------

    def create_archive(self, name, *, pattern=None, retention_days=0):
        """Creates an archive of this bus's events (those matching ``pattern``,
        or all); returns it.  ``retention_days``: 0 keeps them forever."""
        from walq.bus.archive import Archive, archive_dir

        check_rule_name(name)
        text = None
        if pattern is not None:
            compile_pattern(pattern)
            text = json.dumps(json.loads(pattern) if isinstance(pattern, str) else pattern, sort_keys=True)
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 0:
            raise InvalidParameter(f"retention_days must be an integer >= 0; got {retention_days!r}")
        cat = self._service.catalog
        with cat.locked() as tx:
            cat.replay()
            self._entry()
            cur = cat.archives.get(name)
            if cur is not None:
                raise InvalidParameter(f"archive {name!r} already exists")
            uid = cat.new_uid()
            d = archive_dir(self._service.root, uid)
            from walq.log.access import Access
            parent = os.path.dirname(d)
            if not os.path.isdir(parent):
                Access.inherited(parent).make_dir(parent)
            Access.inherited(d).make_dir(d)
            rec = {"name": name, "uid": uid, "bus": self._uid, "pattern": text, "retention_days": retention_days}
            cat.write(tx, {"op": "archive", "archive": rec})
        return Archive(self, rec)

    def list_archives(self) -> list:
        """This bus's archives, by name."""
        from walq.bus.archive import Archive

        cat = self._service.catalog
        cat.refresh()
        return [Archive(self, a) for n, a in sorted(cat.archives.items()) if a["bus"] == self._uid]

    def start_replay(self, name, archive, start, end, rules=None):
        """Starts replaying ``archive``'s events whose time is in [start, end)
        (datetimes or epoch seconds) to this bus's rules (``rules``: only
        these); a worker runs it.  Returns the walq Replay."""
        from walq.bus.archive import Replay, epoch

        check_rule_name(name)
        aname = archive.name if hasattr(archive, "name") else archive
        s, e = epoch(start, "start"), epoch(end, "end")
        if e <= s:
            raise InvalidParameter("end must be after start")
        if rules is not None:
            if isinstance(rules, str) or not all(isinstance(r, str) for r in rules):
                raise InvalidParameter("rules must be a list of rule names")
            rules = [check_rule_name(r) for r in rules]
        cat = self._service.catalog
        with cat.locked() as tx:
            cat.replay()
            entry = self._entry()
            a = cat.archives.get(aname)
            if a is None or a["bus"] != self._uid:
                raise InvalidParameter(f"archive {aname!r} does not exist on bus {self.name!r}")
            for r in rules or ():
                if r not in entry.rules:
                    raise RuleDoesNotExist(f"rule {r!r} does not exist on bus {self.name!r}")
            if name in cat.replays:
                raise InvalidParameter(f"replay {name!r} already exists")
            alog = self._service.archive_log(a["name"], a["uid"])
            cat.write(tx, {"op": "replay", "replay": {
                "name": name, "bus": self._uid, "archive": aname, "auid": a["uid"], "start": s, "end": e,
                "rules": rules, "pos": alog._log.first if alog is not None else 0, "state": "RUNNING"}})
        return Replay(self, name)

    def describe_replay(self, name):
        """The replay ``name`` (its ``state`` read fresh)."""
        from walq.bus.archive import Replay

        self._service.catalog.refresh()
        if name not in self._service.catalog.replays:
            raise InvalidParameter(f"replay {name!r} does not exist")
        return Replay(self, name)

    def list_replays(self) -> list:
        """This bus's replays (running and completed), by name."""
        from walq.bus.archive import Replay

        cat = self._service.catalog
        cat.refresh()
        return [Replay(self, n) for n, r in sorted(cat.replays.items()) if r["bus"] == self._uid]

    def _forward(self, records: list) -> None:
        """Appends what events forwarded from another bus route to here -
        ``records`` [(copy id hex, event JSON)] - without waiting for
        durability (the sender's cursor syncs this log)."""
        now = self._clock()
        for cid, body in records:
            copies, positions = self._route([json.loads(body)], iso_time(now), src=cid)
            rec = {"c": copies, "p": positions, "src": cid}
            self._log.append(json.dumps(rec, separators=(",", ":")).encode(), O.ROUTED, settle=False)

    # -- lifetime ---------------------------------------------------------------------------

    def _close(self, flush: bool = True) -> None:
        if flush:
            try:
                self._outbox.flush()
            except Exception:
                pass  # the next opener completes from the cursor
        self._outbox.close()
        self._log.close()

    def __repr__(self) -> str:
        return f"Bus({self.name!r})"
