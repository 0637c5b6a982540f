"""Fan-out: every publish in a topic's log copied, exactly once, into each
subscribed queue whose filter matches (a transactional outbox).

1. ``publish`` appends one PUBLISH record to the topic's log and waits for it
   to be durable (group commit: about one fdatasync however many queues).
2. Under the topic's fan-out lock (``lock.fanout``, an flock: one fan-out at
   a time per topic, which keeps each group's order), every publish past the
   fan-out mark is copied into each target queue's log *without* an fsync.
   A copy's message id is derived from the publish's id and the queue's uid
   (records.copy_id).
3. The durable ``cursor`` file (tmp, fsync, rename, fsync dir) says: every
   publish below ``upto`` is durable in every target queue.  It is written
   only after each target queue's log was synced past its copies, every
   CURSOR_EVERY publishes, when the topic's log rolls, and at close; it
   records, per queue, the log position it synced to.

The mark (``fanout.ctl``, a small shared mapping, never synced) holds the
boot id, ``done`` (every publish below it is copied, in the OS) and
``busy`` (a fan-out up to it is under way).  It is trusted only in the boot
that wrote it: a power cut may lose copies the mark claims, so after a
reboot (or if the mark is missing) the fan-out restarts from the cursor.

Completion: a holder that finds ``busy > done`` (a fan-out was killed part
way), or a mark from another boot, copies that range again but first reads
each target queue's log from the cursor's position for that queue, and
skips the publishes whose derived ids it already holds.  So a publish killed
at any instant ends in all of its queues or none, once completion has run:
at the next publish to the topic (any process), when a process opens the
topic (``get_topic``, ``create_topic``), and at broker open when a topic's
mark says a fan-out was cut short or comes from another boot.

Invariant: the cursor never covers a publish whose topic record, or whose
copies, are not durable (the topic log and every queue log are synced first).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import struct
import threading

from walq.clock import _read_boot_id
from walq.errors import CorruptionError, QueueDoesNotExist, WalqError
from walq.log import RecordGone
from walq.log._native import ffi, lib
from walq.log.access import Access
from walq.log.fileio import OsIO, allocate
from walq.queue import message_attributes as mattrs
from walq.queue import records as R
from walq.topic import records as P
from walq.topic.copyplan import CopyPlan
from walq.topic.envelope import unsubscribe_field
from walq.topic.filters import attribute_view, compile_policy, new_matcher

#: Publishes between two cursors (more when there are many targets, so that
#: the targets' fsyncs stay a small share of the publishes they cover).
CURSOR_EVERY = 1024
#: ... at least this many publishes per target queue synced.
CURSOR_PER_TARGET = 16
#: A FIFO topic keeps its log back this far for the dedup window.
DEDUP_WINDOW_S = 300.0

MARK_FILE, CURSOR_FILE, LOCK_FILE = "fanout.ctl", "cursor", "lock.fanout"
_MARK = struct.Struct("<8s40sQQ")  # magic, boot id, done, busy
_MAGIC = b"WALQFAN1"
_DONE_WORD, _BUSY_WORD = 6, 7  # their offsets / 8


def _boot_id() -> str:
    """This boot's id ("" where there is none: then a mark is always trusted)."""
    return _read_boot_id() or ""


class Target:
    """One subscription's queue, resolved for a fan-out."""

    __slots__ = ("sub", "arn", "queue", "uid", "uid_bytes", "fifo", "envelope", "unsubscribe")

    def __init__(self, sub, arn: str, queue, region: str):
        self.sub, self.arn, self.queue = sub, arn, queue
        self.uid = queue._uid
        self.uid_bytes = self.uid.to_bytes(8, "big")
        self.fifo = queue.attributes.fifo
        self.envelope = not sub.raw or sub.protocol != "sqs"  # internal queues always get the envelope
        self.unsubscribe = unsubscribe_field(region, arn)


class Fanout:
    """A topic's fan-out state in this process."""

    def __init__(self, topic):
        self._topic = topic
        d = topic._dir
        self._dir = d
        self._io = topic._log.io or OsIO()
        access = Access.of_directory(d)
        self._lock_fh = os.fdopen(access.create(os.path.join(d, LOCK_FILE)), "a+b")
        mark = os.path.join(d, MARK_FILE)
        fd = access.create(mark)
        try:
            if os.fstat(fd).st_size < _MARK.size:
                # Real blocks before the map: a sparse page written through
                # a map on a full disk is a SIGBUS, not an error.
                allocate(fd, _MARK.size, mark)
            self._mm = mmap.mmap(fd, _MARK.size, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self._words = ffi.cast("uint64_t *", ffi.from_buffer(self._mm))
        self._boot = _boot_id().encode("ascii")[:40].ljust(40, b"\0")
        self._boot_ok = False  # once the mark is this boot's, it stays so
        self._tmu = threading.Lock()
        self._matchers = (None, None)
        self._targets_at = (None, [])
        self._since_cursor = 0
        self._cursor_base = topic._log.active_base

    # -- the mark ---------------------------------------------------------------

    def _mark_current(self) -> bool:
        if self._boot_ok:
            return True
        magic, boot, _d, _b = _MARK.unpack_from(self._mm)
        self._boot_ok = magic == _MAGIC and boot == self._boot
        return self._boot_ok

    def done(self) -> int:
        """Every publish below this is copied (-1: the mark is not trusted)."""
        return lib.walq_load(self._words + _DONE_WORD) if self._mark_current() else -1

    def suspect(self) -> bool:
        """True if a fan-out was cut short or the mark is not this boot's."""
        return not self._mark_current() or \
            lib.walq_load(self._words + _BUSY_WORD) > lib.walq_load(self._words + _DONE_WORD)

    # -- the cursor -------------------------------------------------------------

    def read_cursor(self) -> dict:
        """The durable cursor: ``{"upto", "pos": {queue uid hex: position}, "history"}``."""
        try:
            with open(os.path.join(self._dir, CURSOR_FILE), "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return {"upto": 0, "pos": {}, "history": []}
        except ValueError as exc:
            raise CorruptionError(f"topic cursor {os.path.join(self._dir, CURSOR_FILE)} is damaged: {exc}",
                                  os.path.join(self._dir, CURSOR_FILE)) from None
        return data

    # -- running --------------------------------------------------------------------

    def run(self, upto: int, known: dict | None = None) -> None:
        """Returns once every publish below ``upto`` is in its queues.
        ``known``: sequence -> ``records.Publish`` of records the caller just
        wrote (not read back from the log when they are all it has to copy)."""
        if self.done() >= upto:
            return  # another holder copied it
        with self._tmu:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
            try:
                self._run_locked(known)
            finally:
                fcntl.flock(self._lock_fh, fcntl.LOCK_UN)

    def complete(self) -> None:
        """Completes a fan-out cut short (or unconfirmed since a reboot) now."""
        self.run(self._topic._log.end)

    def _run_locked(self, known: dict | None = None) -> None:
        log = self._topic._log
        end = log.end
        w = self._words
        if not self._mark_current():
            # Another boot's mark (or none): only the cursor is known durable.
            cur = self.read_cursor()
            lib.walq_store(w + _DONE_WORD, max(cur["upto"], log.first))
            lib.walq_store(w + _BUSY_WORD, end)
            self._mm[:48] = _MAGIC + self._boot  # last: the mark is whole before it is trusted
            self._boot_ok = True
        done = lib.walq_load(w + _DONE_WORD)
        busy = lib.walq_load(w + _BUSY_WORD)
        if done >= end:
            return
        lib.walq_store(w + _BUSY_WORD, max(busy, end))
        targets = self._copy(done, end, busy if busy > done else None, known)
        lib.walq_store(w + _DONE_WORD, end)
        self._since_cursor += end - done
        if self._since_cursor >= max(CURSOR_EVERY, CURSOR_PER_TARGET * len(targets)) \
                or log.active_base != self._cursor_base:
            self._write_cursor(end, targets)

    def _targets(self) -> list[Target]:
        """The subscriptions' queues, resolved again whenever either catalog
        moved (a deleted topic moves its catalog: then _entry raises)."""
        topic = self._topic
        broker = topic._broker
        topic._service.catalog.refresh()
        broker._catalog.refresh()
        key = (topic._service.catalog.version, broker._catalog.log.end)
        at, cached = self._targets_at
        if at == key:
            return cached
        entry = topic._entry()
        out = []
        for sub in entry.subs.values():
            try:
                q = broker.get_queue(sub.queue)
            except QueueDoesNotExist:
                continue  # the subscribed queue was deleted: nothing to deliver to (SNS drops it too)
            out.append(Target(sub, f"{topic.arn}:{sub.id}", q, broker.region))
        self._targets_at = (key, out)
        return out

    def _routing(self, targets: list[Target]):
        """(targets without a filter, attribute-scope matcher, body-scope
        matcher, native copy plan), built again only when _targets resolved
        a new list."""
        at, cached = self._matchers
        if at is targets:
            return cached
        plain, by_attr, by_body = [], new_matcher("attributes"), new_matcher("body")
        n_attr = n_body = 0
        for i, t in enumerate(targets):
            if t.sub.filter_policy is None:
                plain.append(i)
            elif t.sub.filter_scope == "body":
                by_body.add(i, compile_policy(t.sub.filter_policy, "body"))
                n_body += 1
            else:
                by_attr.add(i, compile_policy(t.sub.filter_policy, "attributes"))
                n_attr += 1
        routing = (plain, by_attr if n_attr else None, by_body if n_body else None, CopyPlan(targets))
        self._matchers = (targets, routing)
        return routing

    def _copy(self, start: int, end: int, suspect_upto: int | None, known: dict | None = None) -> list[Target]:
        """Copies the publishes in [start, end) into their queues; for those
        below ``suspect_upto``, only the copies a queue does not hold yet."""
        topic = self._topic
        targets = self._targets()
        if not targets:
            return targets
        plain, by_attr, by_body, plan = self._routing(targets)
        filtered = by_attr is not None or by_body is not None
        # Only the targets a publish reaches get an entry: with a thousand
        # subscriptions and a 1% match, per-target lists cost more than the copies.
        copies: dict[int, list] = {}
        if known is not None and all(seq in known for seq in range(start, end)):
            pubs = [known[seq] for seq in range(start, end)]
        else:
            pubs = topic._read_publishes(start, end)
            if suspect_upto is None:
                pubs = list(pubs)
        # Natively, straight away: standard queues' copies of publishes
        # without a group, unless a cut-short fan-out is being completed
        # (which must first look for copies already made).  Writing them
        # publish by publish keeps each queue's order.
        native = suspect_upto is None and all(p.group is None for p in pubs)
        now = topic._clock()
        copy_id = P.copy_id_of
        for pub in pubs:
            if filtered:
                hit = set(plain)
                if by_attr is not None:
                    attrs = mattrs.decode(pub.attributes) if pub.attributes else {}
                    hit |= by_attr.match(attribute_view(attrs))
                if by_body is not None:
                    try:
                        doc = json.loads(pub.message)
                    except ValueError:
                        doc = None
                    if isinstance(doc, dict):
                        hit |= by_body.match(doc)
                if not hit:
                    continue
                hit = sorted(hit)
            else:
                hit = plain  # already in target order
            env = None
            if native:
                hit = self._copy_native(plan, hit, not filtered, pub, targets, now)
            mid, seq = pub.message_id, pub.seq
            for i in hit:
                t = targets[i]
                if t.envelope:
                    if env is None:
                        env = topic._envelope(pub)
                    body, encoded = env.for_subscription(t.unsubscribe), b""
                else:
                    body, encoded = pub.message, pub.attributes
                dedup = None
                if t.fifo:
                    dedup = pub.dedup_id or hashlib.sha256(pub.message).hexdigest()
                got = copies.get(i)
                if got is None:
                    got = copies[i] = []
                got.append((seq, (copy_id(mid, t.uid_bytes), body, encoded, pub.group, dedup)))
        cursor = self.read_cursor() if suspect_upto is not None else None
        for i in (sorted(copies) if filtered else copies):
            t = targets[i]
            if cursor is not None:
                held = self._held(t, cursor)
                batch = [c for s, c in copies[i] if s >= suspect_upto or c[0] not in held]
                if not batch:
                    continue
            else:
                batch = [c for _s, c in copies[i]]
            try:
                t.queue._store_copies(batch)
            except QueueDoesNotExist:
                continue  # deleted meanwhile
        return targets

    def _copy_native(self, plan: CopyPlan, hit: list[int], unfiltered: bool, pub, targets: list[Target],
                     now: float) -> list[int]:
        """Writes ``pub``'s copies into the targets of ``hit`` the plan can
        write natively; returns the rest (in order) for the Python way."""
        if unfiltered and plan.all_native:
            todo, rest, every = hit, [], True
        else:
            todo = [i for i in hit if plan.native[i]]
            if not todo:
                return hit
            rest, every = [i for i in hit if not plan.native[i]], False
        env = self._topic._envelope(pub) if any(targets[i].envelope for i in todo) else None
        head, tail = env.parts() if env is not None else (b"", b"")
        while todo:
            got = plan.write(todo, every, pub, head, tail, now)
            for i in todo[:got]:
                targets[i].queue._count_blind(1)
            if got == len(todo):
                break
            # This copy goes the slow way now (a roll, a closed log: it says
            # what is wrong), in its place in the queue's order; the ones
            # after it natively again.
            t = targets[todo[got]]
            body, encoded = (env.for_subscription(t.unsubscribe), b"") if t.envelope else (pub.message, pub.attributes)
            try:
                t.queue._store_copies([(P.copy_id_of(pub.message_id, t.uid_bytes), body, encoded, None, None)])
            except QueueDoesNotExist:
                pass  # deleted meanwhile
            todo, every = todo[got + 1:], False
        return rest

    def _held(self, t: Target, cursor: dict) -> set:
        """Message ids in ``t``'s queue log from where the cursor (or the
        subscription) says copies not yet covered can start."""
        log = t.queue._log
        start = cursor["pos"].get(f"{t.uid:016x}")
        if start is None:
            start = t.sub.qpos if t.sub.quid == t.uid else 0
        held = set()
        for _attempt in range(10):
            try:
                for rec in log.iter_from(max(start, log.first)):
                    if rec.type == R.SEND:
                        held.add(rec.payload[:16])
                return held
            except RecordGone:
                # Compacted meanwhile: what moved forward kept its id; start again.
                # (A copy consumed and trimmed away cannot be seen: a crash mid-fan-out
                # followed by a checkpoint of that queue before completion ran.)
                held.clear()
        return held

    def _write_cursor(self, upto: int, targets: list[Target]) -> None:
        """Syncs the topic log and every target queue past ``upto``'s copies,
        then records that in the cursor file; trims the topic log below
        what is no longer needed.  Under "os" nothing is synced: that mode
        promises nothing of a power cut, and the syncs (the copies' bytes,
        written back at once) were a third of a publish's time there."""
        log = self._topic._log
        durable = self._topic._broker._log_options.durability != "os"
        if durable:
            log.sync_to(upto)
        pos = {}
        for t in targets:
            try:
                qend = t.queue._log.end
                if durable:
                    t.queue._log.sync_to(qend)
            except (QueueDoesNotExist, WalqError, OSError):
                continue  # deleted: its copies no longer matter
            pos[f"{t.uid:016x}"] = qend
        now = self._topic._clock()
        old = self.read_cursor()
        history = (old.get("history", []) + [[upto, now]])[-16:]
        data = json.dumps({"upto": upto, "pos": pos, "history": history}, sort_keys=True).encode()
        self._io.write_file_atomic(os.path.join(self._dir, CURSOR_FILE), data, sync=durable)
        self._since_cursor = 0
        self._cursor_base = log.active_base
        if self._topic.fifo:
            # The dedup window is rebuilt from the log: keep the last five minutes.
            old_enough = [u for u, at in history if at <= now - DEDUP_WINDOW_S]
            keep = max(old_enough) if old_enough else None
        else:
            keep = upto
        if keep is not None:
            log.delete_below(keep)

    def flush(self) -> None:
        """Writes the cursor if this process copied anything since the last one (at close)."""
        if self._since_cursor == 0:
            return
        with self._tmu:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
            try:
                if self._mark_current():
                    done = lib.walq_load(self._words + _DONE_WORD)
                    busy = lib.walq_load(self._words + _BUSY_WORD)
                    if busy <= done and done > self.read_cursor()["upto"]:
                        self._topic._service.catalog.refresh()
                        self._write_cursor(done, self._targets())
            finally:
                fcntl.flock(self._lock_fh, fcntl.LOCK_UN)

    def close(self) -> None:
        """Releases the lock file and the mark."""
        self._lock_fh.close()
        self._words = None
        try:
            self._mm.close()
        except BufferError:
            pass  # a view is still alive; the mapping goes with it


def init_mark(directory: str) -> None:
    """Writes a new topic's mark: this boot's, nothing copied and nothing under way."""
    path = os.path.join(directory, MARK_FILE)
    fd = Access.of_directory(directory).create(path)
    try:
        os.pwrite(fd, _MARK.pack(_MAGIC, _boot_id().encode("ascii")[:40], 0, 0), 0)
    finally:
        os.close(fd)
