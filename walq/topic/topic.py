"""Topic and Subscription: the public handles of SNS-style topics.

A publish is one record in the topic's own log (walq/topic/records.py),
then a fan-out into every subscribed queue (walq/topic/fanout.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass

from walq.errors import BatchError, InvalidParameter, MessageTooLarge, QueueDoesNotExist, TopicDoesNotExist
from walq.log import Log, RecordGone
from walq.queue import message_attributes as mattrs
from walq.queue.ids import IdGenerator, format_id
from walq.queue.results import BatchResult
from walq.topic import records as P
from walq.topic.catalog import SubEntry
from walq.topic.envelope import Envelope
from walq.topic.fanout import DEDUP_WINDOW_S, Fanout
from walq.topic.filters import SCOPES, compile_policy, parse_policy
from walq.topic.results import PublishResult

#: SNS's largest message, attributes included (256 KiB).
MAX_MESSAGE = 262_144
_ID_CHARS = re.compile(r"^[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}$")
_PUBLISH_KEYS = frozenset(("message", "subject", "attributes", "group", "dedup_id"))
_UNSET = object()


@dataclass(frozen=True)
class SubscriptionStats:
    """Deliveries of an HTTP or handler subscription (the worker counts
    them) and how many wait in its internal queue.  Queue subscriptions are
    not counted: their messages are in the queue once ``publish`` returns
    (all zeros; see the queue's own ``stats()``)."""

    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    pending: int = 0


def topic_arn(broker, name: str) -> str:
    """``arn:aws:sns:{region}:{account}:{name}``."""
    return f"arn:aws:sns:{broker.region}:{broker.account}:{name}"


def _check_subject(subject) -> None:
    if subject is None:
        return
    if not isinstance(subject, str) or not 1 <= len(subject) < 100:
        raise InvalidParameter("subject must be a str of 1-99 characters")
    if not subject.isascii() or any(ord(c) < 32 or ord(c) == 127 for c in subject) or not subject[0].isprintable() \
            or subject[0].isspace():
        raise InvalidParameter("subject must be ASCII text without line breaks or control characters, "
                               "starting with a letter, number or punctuation mark")


class Topic:
    """One topic, as seen by this process.  Get it from ``Broker.create_topic``
    or ``Broker.get_topic``; share it between threads."""

    def __init__(self, service, name: str, uid: int, directory: str, fifo: bool, content_based_dedup: bool):
        self._service = service
        self._broker = service.broker
        self._clock = self._broker._clock
        self.name = name
        self._uid = uid
        self._dir = directory
        self.fifo = fifo
        self.content_based_dedup = content_based_dedup
        self._log = Log.open(directory, self._broker._log_options, self._broker._log_io(directory), create=False)
        try:
            self._fan = Fanout(self)
        except BaseException:
            self._log.close()
            raise
        self._ids = IdGenerator()
        self._mu = threading.Lock()  # the FIFO dedup window
        self._window: dict[str, tuple[bytes, int, float]] = {}
        self._win_applied = self._log.first
        self._closed = False

    # -- identity ----------------------------------------------------------------

    @property
    def arn(self) -> str:
        """``arn:aws:sns:{region}:{account}:{name}``."""
        return topic_arn(self._broker, self.name)

    def _entry(self):
        """The topic's catalog entry; TopicDoesNotExist if it was deleted."""
        self._broker._check()
        cat = self._service.catalog
        cat.refresh()
        entry = cat.topics.get(self.name)
        if entry is None or entry.uid != self._uid:
            raise TopicDoesNotExist(f"topic {self.name!r} does not exist (it was deleted)")
        return entry

    # -- subscriptions --------------------------------------------------------------

    def subscribe(self, endpoint, *, filter_policy=None, filter_scope="attributes", raw=False,
                  dead_letter=None, retry=None) -> "Subscription":
        """Subscribes a queue of this store, an http(s) URL, or a handler.

        The same endpoint again returns the existing subscription if its
        attributes are the same, else InvalidParameter.  A refused call
        changes nothing.
        """
        from walq.topic.endpoints import classify  # imports handlers' modules: only when subscribing

        self._entry()
        kind = classify(self._broker, endpoint)
        fields = self._sub_fields(filter_policy, filter_scope, raw, dead_letter, retry)
        if kind.protocol == "sqs":
            q = self._broker.get_queue(kind.endpoint)
            if q.attributes.fifo != self.fifo:
                raise InvalidParameter(
                    f"queue {q.name!r} is {'FIFO' if q.attributes.fifo else 'standard'} but topic {self.name!r} is "
                    f"{'FIFO' if self.fifo else 'standard'}: FIFO topics deliver to FIFO queues only, and "
                    "standard topics to standard queues only")
        existing = self._same_endpoint(kind)
        if existing is not None:
            return self._existing_or_refuse(existing, fields)
        return self._service.subscribe(self, kind, fields)

    def _sub_fields(self, filter_policy, filter_scope, raw, dead_letter, retry) -> dict:
        """Validated subscription attributes, as the catalog stores them."""
        if filter_scope not in SCOPES:
            raise InvalidParameter(f"filter_scope must be 'attributes' or 'body'; got {filter_scope!r}")
        text = None
        if filter_policy is not None:
            compile_policy(filter_policy, filter_scope)  # InvalidPattern if SNS would refuse it
            text = json.dumps(parse_policy(filter_policy), sort_keys=True)
        if not isinstance(raw, bool):
            raise InvalidParameter("raw must be True or False")
        dl = None
        if dead_letter is not None:
            from walq.queue.queue import Queue
            if not isinstance(dead_letter, Queue):
                raise InvalidParameter("dead_letter must be a walq.Queue of this store, or None")
            from walq.topic.endpoints import classify

            got = classify(self._broker, dead_letter)
            self._broker.get_queue(got.endpoint)  # QueueDoesNotExist if it is gone
            dl = got.endpoint
        policy = None
        if retry is not None:
            from walq.worker.retry import RetryPolicy
            if not isinstance(retry, RetryPolicy):
                raise InvalidParameter("retry must be a walq.RetryPolicy or None")
            policy = {"max_retries": retry.max_retries, "max_age": retry.max_age}
        return {"filter_policy": text, "filter_scope": filter_scope, "raw": raw, "dead_letter": dl, "retry": policy}

    def _same_endpoint(self, kind) -> SubEntry | None:
        for sub in self._entry().subs.values():
            if sub.protocol == kind.protocol and sub.endpoint == kind.endpoint:
                return sub
        return None

    def _existing_or_refuse(self, sub: SubEntry, fields: dict) -> "Subscription":
        if any(getattr(sub, k) != v for k, v in fields.items()):
            raise InvalidParameter(f"a subscription of {sub.endpoint!r} to topic {self.name!r} already exists "
                                   "with different attributes")
        return Subscription(self, sub)

    def subscriptions(self) -> list["Subscription"]:
        """Every subscription of the topic, in the order they were made."""
        return [Subscription(self, s) for s in self._entry().subs.values()]

    # -- publishing -------------------------------------------------------------------

    def publish(self, message, *, subject=None, attributes=None, group=None, dedup_id=None) -> PublishResult:
        """Publishes one message; when it returns, the message is in every
        subscribed queue whose filter matches (all of them or none)."""
        self._entry()
        return self._publish([self._prepare(message, subject, attributes, group, dedup_id)])[0]

    def publish_batch(self, entries) -> BatchResult:
        """Publishes many messages with one write and one fan-out; each entry
        (a message, or a dict of publish()'s keywords plus ``message``)
        succeeds or fails alone."""
        self._entry()
        if not isinstance(entries, (list, tuple)) or not entries:
            raise BatchError("publish_batch needs a non-empty list of entries")
        result = BatchResult()
        good, where = [], []
        for i, entry in enumerate(entries):
            try:
                if isinstance(entry, dict):
                    unknown = set(entry) - _PUBLISH_KEYS
                    if unknown or "message" not in entry:
                        raise InvalidParameter(
                            f"batch entry {i}: needs 'message'; unknown keys: {sorted(unknown) or 'none'}")
                    prepared = self._prepare(entry["message"], entry.get("subject"), entry.get("attributes"),
                                             entry.get("group"), entry.get("dedup_id"))
                else:
                    prepared = self._prepare(entry, None, None, None, None)
            except InvalidParameter as exc:
                result.failed.append((i, exc))
                continue
            good.append(prepared)
            where.append(i)
        if good:
            result.successful.extend(zip(where, self._publish(good)))
        return result

    def _prepare(self, message, subject, attributes, group, dedup_id) -> tuple:
        if isinstance(message, str):
            body = message.encode("utf-8")
        elif isinstance(message, (bytes, bytearray, memoryview)):
            body = bytes(message)
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidParameter("message must be text (str, or UTF-8 bytes)") from None
        else:
            raise InvalidParameter(f"message must be a str; got {type(message).__name__}")
        if not body:
            raise InvalidParameter("message must not be empty")
        _check_subject(subject)
        encoded, counted = mattrs.encode(attributes)
        if len(body) + counted > MAX_MESSAGE:
            raise MessageTooLarge(f"message of {len(body) + counted} bytes (message plus attributes) exceeds "
                                  f"SNS's {MAX_MESSAGE}-byte limit")
        if group is not None and (not isinstance(group, str) or not _ID_CHARS.match(group)):
            raise InvalidParameter(f"group must be 1-128 characters of letters, digits and punctuation; got {group!r}")
        if self.fifo:
            if group is None:
                raise InvalidParameter("FIFO topics need a message group (group=...)")
            if dedup_id is None:
                if not self.content_based_dedup:
                    raise InvalidParameter("FIFO topic without content_based_dedup: each message needs dedup_id=...")
                dedup_id = hashlib.sha256(body).hexdigest()
            elif not isinstance(dedup_id, str) or not _ID_CHARS.match(dedup_id):
                raise InvalidParameter(
                    f"dedup_id must be 1-128 characters of letters, digits and punctuation; got {dedup_id!r}")
        elif dedup_id is not None:
            raise InvalidParameter("dedup_id applies to FIFO topics only")
        return body, encoded, subject, group, dedup_id

    def _publish(self, prepared: list[tuple]) -> list[PublishResult]:
        now = self._clock()
        ids, payloads = [], []
        for body, encoded, subject, group, dedup in prepared:
            text, raw = self._ids.next()
            ids.append((text, raw))
            payloads.append(P.encode(raw, now, body, encoded, subject, group, dedup))
        log = self._log
        if not self.fifo:
            if len(payloads) == 1:
                seq = log.append(payloads[0], P.PUBLISH)
                seqs = range(seq, seq + 1)
            else:
                seqs = log.append_batch(payloads, P.PUBLISH)
            # The records are durable (in "always"); copying may begin.
            self._fan.run(seqs.stop, {seq: P.Publish(seq, raw, now, subject, group, dedup, encoded, body)
                                      for seq, (_t, raw), (body, encoded, subject, group, dedup)
                                      in zip(seqs, ids, prepared)})
            return [PublishResult(text) for text, _raw in ids]
        results: list = [None] * len(prepared)
        with log.locked() as tx, self._mu:
            self._catch_up_window()
            now = self._clock()
            fresh, fresh_at, pending = [], [], {}
            for i, (_b, _e, _s, _g, dedup) in enumerate(prepared):
                hit = self._window.get(dedup)
                if hit is not None and now - hit[2] < DEDUP_WINDOW_S:
                    results[i] = PublishResult(format_id(hit[0]), hit[1])
                elif dedup in pending:
                    results[i] = pending[dedup]
                else:
                    pending[dedup] = i
                    fresh.append(payloads[i])
                    fresh_at.append(i)
            known = {}
            if fresh:
                seqs = tx.append_batch(fresh, P.PUBLISH)
                known = {seq: P.decode(seq, payload) for seq, payload in zip(seqs, fresh)}
                for i, seq in zip(fresh_at, seqs):
                    results[i] = PublishResult(ids[i][0], seq)
            upto = tx.end
        # The lock's release waited for the whole log as seen (a duplicate's
        # original included) to be durable.
        for i, r in enumerate(results):
            if isinstance(r, int):
                results[i] = results[r]
        self._fan.run(upto, known)
        return results

    def _catch_up_window(self) -> None:
        """Adds the publishes appended since the last look to the FIFO dedup
        window (under the topic log's lock), and forgets expired ones."""
        end = self._log.end
        for _attempt in range(3):
            if self._win_applied < self._log.first:
                self._win_applied = self._log.first  # trimmed: older than the window anyway
            try:
                for pub in self._read_publishes(self._win_applied, end):
                    if pub.dedup_id is not None:
                        self._window[pub.dedup_id] = (pub.message_id, pub.seq, pub.published_at)
                    self._win_applied = pub.seq + 1
                break
            except RecordGone:
                continue  # a cursor trimmed the log meanwhile
        self._win_applied = max(self._win_applied, end)
        if len(self._window) > 1024:
            cutoff = self._clock() - DEDUP_WINDOW_S
            self._window = {k: v for k, v in self._window.items() if v[2] >= cutoff}

    def _read_publishes(self, start: int, end: int):
        """The publishes in [start, end) of the topic's log."""
        for rec in self._log.iter_from(start):
            if rec.seq >= end:
                return
            if rec.type == P.PUBLISH:
                yield P.decode(rec.seq, rec.payload)

    def _envelope(self, pub: P.Publish) -> Envelope:
        return Envelope(message_id=format_id(pub.message_id), topic_arn=self.arn, region=self._broker.region,
                        message=pub.message.decode("utf-8"), published_at=pub.published_at,
                        subject=pub.subject, attributes=pub.attributes,
                        sequence=pub.seq if self.fifo else None)

    # -- lifetime -------------------------------------------------------------------------

    def _close(self, flush: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if flush:
            try:
                self._fan.flush()
            except (OSError, QueueDoesNotExist, TopicDoesNotExist):
                pass
            except Exception:  # close must release files whatever happened
                pass
        self._fan.close()
        self._log.close()

    def __repr__(self) -> str:
        return f"<walq.Topic {self.name!r}>"


class Subscription:
    """One subscription of a topic."""

    def __init__(self, topic: Topic, entry: SubEntry):
        self._topic = topic
        self._snap = entry
        self.id = entry.id

    def _current(self) -> SubEntry:
        try:
            entry = self._topic._entry()
        except TopicDoesNotExist:
            return self._snap
        cur = entry.subs.get(self.id)
        if cur is not None:
            self._snap = cur
        return self._snap

    @property
    def arn(self) -> str:
        """The topic's ARN, ``:`` and the subscription's id."""
        return f"{self._topic.arn}:{self.id}"

    @property
    def topic_arn(self) -> str:
        """The topic's ARN."""
        return self._topic.arn

    @property
    def protocol(self) -> str:
        """``"sqs"``, ``"http"``, ``"https"`` or ``"handler"``."""
        return self._snap.protocol

    @property
    def endpoint(self) -> str:
        """The queue's ARN, the URL, or ``"package.module:function"``."""
        s = self._snap
        if s.protocol == "sqs":
            b = self._topic._broker
            return f"arn:aws:sqs:{b.region}:{b.account}:{s.endpoint}"
        return s.endpoint

    @property
    def filter_policy(self) -> dict | None:
        """The filter policy (a dict), or None."""
        text = self._current().filter_policy
        return None if text is None else json.loads(text)

    @property
    def filter_scope(self) -> str:
        """``"attributes"`` or ``"body"``."""
        return self._current().filter_scope

    @property
    def raw(self) -> bool:
        """Raw message delivery."""
        return self._current().raw

    @property
    def dead_letter(self):
        """The dead-letter queue (a walq.Queue), or None."""
        name = self._current().dead_letter
        return None if name is None else self._topic._broker.get_queue(name)

    @property
    def retry(self):
        """The retry policy (a walq.RetryPolicy), or None for the default."""
        from walq.worker.retry import RetryPolicy
        r = self._current().retry
        return None if r is None else RetryPolicy(**r)

    def unsubscribe(self) -> None:
        """Removes the subscription (its internal queue goes with it).  Idempotent."""
        self._topic._service.unsubscribe(self._topic, self.id)

    def set_attributes(self, *, filter_policy=_UNSET, filter_scope=_UNSET, raw=_UNSET, dead_letter=_UNSET,
                       retry=_UNSET) -> None:
        """Changes the filter policy (None removes it), its scope, raw
        delivery, the dead-letter queue or the retry policy; applies to the
        next publish in every process."""
        cur = self._current()
        given = {"filter_policy": filter_policy, "filter_scope": filter_scope, "raw": raw,
                 "dead_letter": dead_letter, "retry": retry}
        merged = {
            "filter_policy": cur.filter_policy if filter_policy is _UNSET else filter_policy,
            "filter_scope": cur.filter_scope if filter_scope is _UNSET else filter_scope,
            "raw": cur.raw if raw is _UNSET else raw,
            "dead_letter": (None if cur.dead_letter is None else self._topic._broker.get_queue(cur.dead_letter))
            if dead_letter is _UNSET else dead_letter,
            "retry": self.retry if retry is _UNSET else retry,
        }
        if all(v is _UNSET for v in given.values()):
            return
        fields = self._topic._sub_fields(**merged)
        self._topic._service.set_subscription(self._topic, self.id, fields)

    def stats(self) -> SubscriptionStats:
        """Deliveries so far and pending (HTTP and handler subscriptions)."""
        s = self._current()
        if s.protocol == "sqs":
            return SubscriptionStats()
        from walq.worker import counters

        c = counters.read(self._topic._broker, self.arn)
        counts = (c.delivered, c.failed, c.dead_lettered)
        try:
            qs = self._topic._broker.get_queue(s.queue).stats()
            pending = qs.visible + qs.in_flight + qs.delayed
        except QueueDoesNotExist:
            pending = 0
        return SubscriptionStats(*counts, pending)

    def __eq__(self, other) -> bool:
        return isinstance(other, Subscription) and other.arn == self.arn

    def __hash__(self) -> int:
        return hash(self.arn)

    def __repr__(self) -> str:
        return f"<walq.Subscription {self.arn} {self.protocol}>"
