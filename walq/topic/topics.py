"""Topics: a broker's topics - create, look up, list, delete, subscribe -
over the topics' catalog (walq/topic/catalog.py).

Each topic lives in ``<store>/topics/<uid:016x>/`` (its log, fan-out mark,
cursor and fan-out lock); a fresh uid per creation keeps a deleted topic's
files from mixing with a new topic of the same name.  HTTP and handler
subscriptions each get an internal queue named ``~<subscription id>``
(``.fifo`` on FIFO topics): ``~`` is outside the queue-name alphabet, so no
user queue can take or see that name, and ``list_queues`` leaves them out.
"""

from __future__ import annotations

import os
import re
import secrets
import threading

from walq.errors import InvalidParameter, QueueDoesNotExist, TopicDoesNotExist
from walq.log.access import Access, finish_deletions, remove_aside
from walq.topic import fanout
from walq.topic.catalog import SubEntry, TopicCatalog
from walq.topic.topic import Subscription, Topic, topic_arn

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
#: Internal queues' names start with this (not a queue-name character).
INTERNAL_PREFIX = "~"


def validate_name(name) -> None:
    """SNS topic names: 1-256 of [A-Za-z0-9_-], plus '.fifo' (counted) for FIFO topics."""
    if not isinstance(name, str):
        raise InvalidParameter(f"topic name must be a str; got {type(name).__name__}")
    stem = name[:-5] if name.endswith(".fifo") else name
    if not _NAME.match(stem) or len(name) > 256:
        raise InvalidParameter(f"invalid topic name {name!r}: use 1-256 characters of A-Z a-z 0-9 _ - "
                               "(FIFO topics end in .fifo, counted in the 256)")


def _make_dir(path: str) -> None:
    """Creates ``path`` (its parent exists) durably, with the store's mode
    and group (walq/log/access.py)."""
    Access.inherited(path).make_dir(path)


class Topics:
    """A broker's topics, and this process's open Topic handles."""

    def __init__(self, broker):
        self.broker = broker
        self.root = os.path.join(broker.path, "topics")
        if not os.path.isdir(self.root):
            _make_dir(self.root)
        self.catalog = TopicCatalog(broker.path, broker._log_options,
                                    broker._log_io(os.path.join(self.root, "catalog")))
        self._handles: dict[str, Topic] = {}
        self._mu = threading.RLock()
        self._remove_deleted_dirs()

    def topic_dir(self, uid: int) -> str:
        """Where the topic ``uid`` keeps its files."""
        return os.path.join(self.root, f"{uid:016x}")

    # -- topics ----------------------------------------------------------------------

    def create_topic(self, name, fifo=None, content_based_dedup=False) -> Topic:
        """Creates a topic, or returns it if it exists with the same attributes."""
        validate_name(name)
        is_fifo = name.endswith(".fifo")
        if fifo is not None:
            if not isinstance(fifo, bool):
                raise InvalidParameter("fifo must be True, False or None")
            if fifo != is_fifo:
                raise InvalidParameter(
                    f"topic {name!r}: fifo={fifo} but FIFO topic names must end in .fifo (and only they may)")
        if not isinstance(content_based_dedup, bool):
            raise InvalidParameter("content_based_dedup must be True or False")
        if content_based_dedup and not is_fifo:
            raise InvalidParameter("content_based_dedup applies to FIFO topics only")
        cat = self.catalog
        with cat.locked() as tx:
            cat.replay()
            cur = cat.topics.get(name)
            if cur is not None:
                if cur.content_based_dedup != content_based_dedup:
                    raise InvalidParameter(f"topic {name!r} already exists with different attributes")
            else:
                uid = cat.new_uid()
                d = self.topic_dir(uid)
                # Durable before the record that names it.
                _make_dir(d)
                fanout.init_mark(d)
                cat.write(tx, {"op": "topic", "name": name, "uid": uid, "fifo": is_fifo,
                               "content_based_dedup": content_based_dedup})
        return self.get_topic(name)

    def get_topic(self, name) -> Topic:
        """The named topic; TopicDoesNotExist if absent.  Opening a topic in
        a process completes a fan-out that was cut short, and copies
        publishes whose publisher died before copying them."""
        if not isinstance(name, str):
            raise InvalidParameter(f"topic name must be a str; got {type(name).__name__}")
        self.catalog.refresh()
        entry = self.catalog.topics.get(name)
        if entry is None:
            raise TopicDoesNotExist(f"topic {name!r} does not exist")
        with self._mu:
            t = self._handles.get(name)
            if t is not None and t._uid != entry.uid:
                t._close(flush=False)
                t = None
            if t is None:
                try:
                    t = Topic(self, name, entry.uid, self.topic_dir(entry.uid), entry.fifo, entry.content_based_dedup)
                except FileNotFoundError:
                    raise TopicDoesNotExist(f"topic {name!r} does not exist (it was deleted)") from None
                self._handles[name] = t
                if t._fan.suspect() or t._fan.done() < t._log.end:
                    t._fan.complete()  # cut short, or appended by a publisher that died before copying
            return t

    def list_topics(self, prefix: str = "") -> list[str]:
        """Topic names starting with ``prefix``, sorted."""
        if not isinstance(prefix, str):
            raise InvalidParameter("prefix must be a str")
        self.catalog.refresh()
        return sorted(n for n in self.catalog.topics if n.startswith(prefix))

    def delete_topic(self, name) -> None:
        """Deletes a topic and its subscriptions (their internal queues too)."""
        if not isinstance(name, str):
            raise InvalidParameter(f"topic name must be a str; got {type(name).__name__}")
        cat = self.catalog
        with cat.locked() as tx:
            cat.replay()
            entry = cat.topics.get(name)
            if entry is None:
                raise TopicDoesNotExist(f"topic {name!r} does not exist")
            subs = list(entry.subs.values())
            cat.write(tx, {"op": "delete_topic", "name": name, "uid": entry.uid})
        for sub in subs:
            self._drop_internal_queue(sub)
        with self._mu:
            t = self._handles.pop(name, None)
        if t is not None and t._uid == entry.uid:
            t._close(flush=False)
        self._remove_dir(entry.uid)

    def _remove_dir(self, uid: int) -> None:
        remove_aside(self.topic_dir(uid))

    def _remove_deleted_dirs(self) -> None:
        """Finishes deletions a crash interrupted."""
        finish_deletions(self.root, self.catalog.deleted, {e.uid for e in self.catalog.topics.values()})

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(self, topic: Topic, kind, fields: dict) -> Subscription:
        """Writes a new subscription (``kind`` from endpoints.classify,
        ``fields`` validated); creates its internal queue first if it needs one."""
        sid = secrets.token_hex(16)
        if kind.protocol == "sqs":
            q = self.broker.get_queue(kind.endpoint)
            qname, internal = kind.endpoint, False
        else:
            qname = INTERNAL_PREFIX + sid + (".fifo" if topic.fifo else "")
            q = self.broker._create_internal_queue(qname, topic.fifo)
            internal = True
        sub = SubEntry(id=sid, protocol=kind.protocol, endpoint=kind.endpoint, queue=qname, quid=q._uid,
                       qpos=q._log.end, **fields)
        cat = self.catalog
        try:
            with cat.locked() as tx:
                cat.replay()
                entry = cat.topics.get(topic.name)
                if entry is None or entry.uid != topic._uid:
                    raise TopicDoesNotExist(f"topic {topic.name!r} does not exist (it was deleted)")
                for other in entry.subs.values():  # made by another process meanwhile?
                    if other.protocol == kind.protocol and other.endpoint == kind.endpoint:
                        existing = other
                        break
                else:
                    existing = None
                    cat.write(tx, {"op": "subscribe", "topic": topic._uid, "sub": sub.to_json()})
        except BaseException:
            if internal:
                self._drop_internal_queue(sub)
            raise
        if existing is not None:
            if internal:
                self._drop_internal_queue(sub)
            return topic._existing_or_refuse(existing, fields)
        return Subscription(topic, sub)

    def unsubscribe(self, topic: Topic, sid: str) -> None:
        """Removes a subscription (and its internal queue); idempotent."""
        cat = self.catalog
        with cat.locked() as tx:
            cat.replay()
            entry = cat.by_uid(topic._uid)
            sub = entry.subs.get(sid) if entry is not None else None
            if sub is None:
                return
            cat.write(tx, {"op": "unsubscribe", "topic": topic._uid, "id": sid})
        self._drop_internal_queue(sub)

    def set_subscription(self, topic: Topic, sid: str, fields: dict) -> None:
        """Replaces a subscription's attributes."""
        cat = self.catalog
        with cat.locked() as tx:
            cat.replay()
            entry = cat.by_uid(topic._uid)
            if entry is None:
                raise TopicDoesNotExist(f"topic {topic.name!r} does not exist (it was deleted)")
            sub = entry.subs.get(sid)
            if sub is None:
                raise InvalidParameter(f"subscription {topic.arn}:{sid} does not exist (it was unsubscribed)")
            new = sub.with_changes(**fields)
            if new != sub:
                cat.write(tx, {"op": "set", "topic": topic._uid, "sub": new.to_json()})

    def _drop_internal_queue(self, sub: SubEntry) -> None:
        if sub.protocol == "sqs":
            return
        try:
            self.broker.delete_queue(sub.queue)
        except QueueDoesNotExist:
            pass

    # -- the worker's view -----------------------------------------------------------------

    def delivery_targets(self) -> list:
        """One DeliveryTarget per HTTP or handler subscription of every topic."""
        from walq.worker.retry import RetryPolicy
        from walq.worker.targets import DeliveryTarget

        self.catalog.refresh()
        out = []
        b = self.broker
        for entry in list(self.catalog.topics.values()):
            arn = topic_arn(b, entry.name)
            for sub in list(entry.subs.values()):
                if sub.protocol == "sqs":
                    continue
                try:
                    q = b.get_queue(sub.queue)
                except QueueDoesNotExist:
                    continue
                dl = None
                if sub.dead_letter is not None:
                    try:
                        dl = b.get_queue(sub.dead_letter)
                    except QueueDoesNotExist:
                        dl = None
                out.append(DeliveryTarget(
                    key=f"{arn}:{sub.id}", queue=q, kind=sub.protocol, endpoint=sub.endpoint, raw=sub.raw,
                    retry=RetryPolicy(**sub.retry) if sub.retry else RetryPolicy(), dead_letter=dl,
                    topic_arn=arn))
        return out

    # -- lifetime ---------------------------------------------------------------------------

    @classmethod
    def any_cut_short(cls, store: str) -> bool:
        """True if some topic of the store at ``store`` needs completing (its
        mark says a fan-out was cut short, or comes from another boot).
        Reads one small file per topic: a process that never uses topics
        pays no more at open."""
        root = os.path.join(store, "topics")
        try:
            names = os.listdir(root)
        except FileNotFoundError:
            return False
        for name in names:
            if len(name) == 16 and cls._needs_completion(os.path.join(root, name)):
                return True
        return False

    def complete_cut_short(self) -> None:
        """At broker open: completes every topic whose mark says a fan-out
        was cut short or that no fan-out has run since a reboot."""
        for entry in list(self.catalog.topics.values()):
            if self._needs_completion(self.topic_dir(entry.uid)):
                try:
                    self.get_topic(entry.name)  # opening completes it
                except TopicDoesNotExist:
                    pass

    @staticmethod
    def _needs_completion(directory: str) -> bool:
        try:
            with open(os.path.join(directory, fanout.MARK_FILE), "rb") as f:
                raw = f.read(fanout._MARK.size)
        except FileNotFoundError:
            return True
        if len(raw) < fanout._MARK.size:
            return True
        magic, boot, done, busy = fanout._MARK.unpack(raw)
        return magic != fanout._MAGIC or boot.rstrip(b"\0").decode("ascii", "replace") != fanout._boot_id() \
            or busy > done

    def close(self) -> None:
        """Closes every handle (writing their cursors) and the catalog."""
        with self._mu:
            for t in self._handles.values():
                t._close()
            self._handles.clear()
        self.catalog.close()
