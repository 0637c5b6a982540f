"""Queue: SQS semantics over one log.

Every decision (which messages to lease, whether a receipt is current,
whether a FIFO send is a duplicate) is taken under the queue log's append
lock, after catching the index up with every record any process appended.
Writes that decide nothing (standard sends) skip the lock's catch-up.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import threading
import time
import warnings
from array import array
from collections.abc import Iterator
from functools import partial, wraps
from itertools import repeat
from typing import Callable, ParamSpec, TypeVar

import portalocker

from walq.errors import (
    BatchError,
    BrokerClosed,
    CorruptionError,
    InvalidParameter,
    InvalidReceipt,
    MessageNotInflight,
    MessageTooLarge,
    QueueDoesNotExist,
    ReadOnlyStore,
    StoreFull,
    WalqError,
)
from walq.log import Log, RecordGone
from walq.log.fileio import OsIO
from walq.log.log import RunBuffers
from walq.log._native import ffi, lib
from walq.queue import checkpoint, receipts
from walq.queue.ids import IdGenerator, format_id
from walq.queue import message_attributes as mattrs
from walq.queue import records as R
from walq.queue.attributes import RANGES, QueueAttributes
from walq.queue.index import DELAYED, INFLIGHT, VISIBLE, Index
from walq.queue.native_index import NativeIndex, new_index
from walq.queue.results import BatchResult, Message, QueueStats, SendResult

_ID_CHARS = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")
_SEND_KEYS = frozenset(("body", "attributes", "delay", "group", "dedup_id"))
MAX_RECEIVE = 1_000
#: Message operations (sends, leases, deletes...) applied between
#: checkpoints: bounds the replay on open.
CHECKPOINT_EVERY = 50_000
#: ... or the live messages // this, when that is more (0: fixed interval;
#: tests that want frequent checkpoints set it).
CHECKPOINT_LIVE_DIVISOR = 4
#: How long a message being moved to a dead-letter queue stays hidden; if the
#: mover dies, it reappears and is moved again (at-least-once).
MOVE_HIDE_S = 60.0
#: SendResult from a (message_id, sequence, duplicate) tuple, with no
#: Python-level __new__ in between (send_batch builds one per message).
_new_send_result = partial(tuple.__new__, SendResult)
_JUST_BYTES = {bytes}
_JUST_STR = {str}
_JUST_RECEIPT_LEN = {56}
#: Most receipts a delete_batch hands the index in one call.
DOOMED_MAX = lib.WALQ_QX_DOOMED_MAX
#: walq_qx_receive: messages past the segment's frame index (index, retry).
_UNINDEXED = lib.WALQ_QX_RECV_UNINDEXED
#: Most messages a receive leases in one native call.
RECV_MAX = lib.WALQ_QX_RECV_MAX
#: struct walq_qx_got, read for all of a receive's messages in one pass.
_GOT = struct.Struct("=ddQIII4x")  # native byte order, as C wrote it
if _GOT.size != ffi.sizeof("struct walq_qx_got"):
    raise ImportError("walq's native extension does not match this walq/queue/queue.py: reinstall walq")


def _enumerated(entries: tuple) -> list:
    """A batch's ``successful`` when every entry succeeded as it is."""
    return list(enumerate(entries))


def _send_results(ids: bytes) -> list:
    """A plain send_batch's ``successful``, from its ids joined by commas."""
    # Iterators all the way down: no Python frame per message.
    results = map(_new_send_result, zip(ids.decode("ascii").split(","), repeat(None), repeat(False)))
    return list(enumerate(results))


def _message_parts(p: bytes) -> tuple:
    """``(body, attributes, group, dedup_id)`` of a SEND payload that is not
    a plain body (a receive takes plain ones straight after the head)."""
    rec = R.decode_send(p)
    return rec.body, mattrs.decode(rec.attributes) if rec.attributes else {}, rec.group, rec.dedup_id


_P = ParamSpec("_P")
_R = TypeVar("_R")


_scratch = threading.local()


def _run_buffers() -> RunBuffers:
    """This thread's catch-up scratch (84 KiB, zero-filled): one per thread,
    not per queue - a process may hold a thousand queues (a topic's
    publisher holds every subscribed one).  Used only within one
    _catch_up call, which never runs another queue's."""
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = RunBuffers()
    return buf


def _names_the_queue(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Wraps a public Queue method: an error caused by the queue's deletion
    (in another thread or process, part way through the call: its files
    gone, its handle closed) is reported as QueueDoesNotExist."""

    @wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except (OSError, WalqError) as exc:
            # Here, with every lock of the call released: retiring the
            # handle closes its log, which must not wait for a lock this
            # thread holds.
            queue = args[0]
            queue._broker._raise_if_deleted(queue, exc)  # type: ignore[attr-defined]
            raise

    return call


class _Deciding:
    """Queue._deciding's context: the append lock, then the queue's lock,
    the catch-up and the sweep; released in the reverse order.  A class,
    not a generator: a receive enters one per call."""

    __slots__ = ("_q", "_retention", "_tx")

    def __init__(self, q: "Queue", retention: float, wait_durable: bool):
        self._q = q
        self._retention = retention
        self._tx = q._log.locked(wait_durable)

    def __enter__(self) -> tuple:
        q = self._q
        tx = self._tx.__enter__()
        q._mu.acquire()
        try:
            q._catch_up()
            now = q._clock()
            q._index.sweep(now, self._retention)
        except BaseException as exc:
            q._mu.release()
            self._tx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return tx, q._index, now

    def __exit__(self, exc_type, exc, tb) -> None:
        self._q._mu.release()
        self._tx.__exit__(exc_type, exc, tb)


class Queue:
    """One queue, as seen by this process.  Get it from ``Broker.create_queue``
    or ``Broker.get_queue``; share it between threads freely."""

    def __init__(self, broker, name: str, uid: int, directory: str):
        self._broker = broker
        self.name = name
        self._uid = uid
        self._dir = directory
        self._clock = broker._clock
        self._closed = False
        io = broker._log_io(directory)
        self._log = Log.open(directory, broker._log_options, io, readonly=broker._readonly, create=False,
                             on_recover=partial(self._after_recovery, io or OsIO()))
        self._mu = threading.RLock()
        self._ckpt_mu = threading.Lock()
        try:
            self._ckpt_fh = None if broker._readonly else self._log._lock_file("lock.checkpoint")
        except BaseException:
            self._log.close()
            raise
        self._ids = IdGenerator()
        self._recv_local = threading.local()  # each thread's native receive results
        self._blind_ops = 0
        # _attrs' cache: the attributes as of the catalog log's end.  The
        # reference to the control block's buffer keeps it mapped even after
        # the broker closes the catalog, so the load below is always safe.
        cat_log = broker._catalog.log
        self._cat_ctl, self._cat_end = cat_log._ctl_buf, cat_log._p_end_seq
        self._log_ctl = self._log._ctl_buf  # the same for _receive_now's load of the log's end
        self._attrs_memo = (-1, None)  # one attribute: threads read it whole
        try:
            with self._mu:
                self._index = self._load_index()
                self._last_ckpt = self._index.ops
                self._ckpt_pos = self._index.applied
                self._ckpt_base = self._log.active_base
                # No catch-up here: the calls that read the index catch up
                # first anyway, and a handle that only writes (a sender, a
                # topic's fan-out into a thousand subscribed queues) never
                # needs to replay - the records it would read cost memory
                # per queue (the log pages the replay maps).
        except BaseException:
            # A queue that fails to open (damage) must not keep its log open:
            # the error's traceback may outlive it, holding lock.users.
            self._ckpt_fh.close()
            self._log.close()
            raise

    def _after_recovery(self, io, end: int) -> None:
        """Log.open's on_recover: no checkpoint may claim records the log
        does not hold (checkpoint.set_aside_ahead)."""
        for path in checkpoint.set_aside_ahead(self._dir, end, io):
            warnings.warn(f"queue {self.name}: {path} covered records beyond the log's end ({end}); "
                          "set aside, the queue is rebuilt from an older checkpoint or the log",
                          RuntimeWarning, stacklevel=2)

    # -- plumbing --------------------------------------------------------------

    @property
    def attributes(self) -> QueueAttributes:
        """The queue's current attributes (a frozen dataclass)."""
        return self._attrs()

    @property
    def arn(self) -> str:
        """``arn:aws:sqs:{region}:{account}:{name}``, with the broker's region and account."""
        return f"arn:aws:sqs:{self._broker.region}:{self._broker.account}:{self.name}"

    def _attrs(self) -> QueueAttributes:
        """The queue's attributes; BrokerClosed or QueueDoesNotExist.

        Every call checks them, so while the catalog log has not moved (one
        shared-memory load) the last answer stands: every change to a queue
        (attributes, deletion) is a catalog record.
        """
        at, attrs = self._attrs_memo
        if lib.walq_load(self._cat_end) == at and not self._broker._closed:
            return attrs
        # The end first: a record appended meanwhile only makes the next call look again.
        at = lib.walq_load(self._cat_end)
        attrs = self._broker._attributes_of(self)
        self._attrs_memo = (at, attrs)
        return attrs

    def _load_index(self) -> Index | NativeIndex:
        first = self._log.first  # before listing checkpoints (see load_newest)
        idx = checkpoint.load_newest(self._dir, self._log.io, first)
        if idx is None:
            attrs = self._attrs()
            idx = new_index(attrs.fifo, attrs.dedup_scope)
            idx.applied = self._log.first
        return idx

    def _catch_up(self) -> None:
        """Applies every record appended since this process last looked."""
        log, idx = self._log, self._index
        if getattr(idx, "poisoned", False):
            # A native call ran out of memory part way through: start again
            # from the newest checkpoint rather than trust a half-applied index.
            idx = self._reload_index()
        while True:
            end = log.end
            if idx.applied >= end:
                return
            buf = _run_buffers()
            try:
                mm, base, n = log.frame_run(idx.applied, buf)
            except RecordGone:
                # Another process compacted past our position: its checkpoint
                # covers what the removed segments held.  It may be saving a
                # newer one and trimming while we load - then load again.
                for _attempt in range(20):
                    idx = self._reload_index()
                    if idx.applied >= log.first:
                        break
                else:
                    raise CorruptionError(
                        f"queue {self.name}: log starts at {log.first} but the newest checkpoint "
                        f"covers only up to {idx.applied}",
                        self._dir,
                    ) from None
                continue
            idx.apply_run(mm, base, idx.applied, n, buf)

    def _reload_index(self) -> Index | NativeIndex:
        """Replaces the index with the newest checkpoint's (the caller
        catches up from there) and restarts checkpoint pacing at it."""
        self._index = idx = self._load_index()
        self._last_ckpt = idx.ops
        self._ckpt_pos = idx.applied
        return idx

    def _deciding(self, retention: float, wait_durable: bool = True) -> "_Deciding":
        """The append lock held, the index caught up and swept to now:
        enters as ``(tx, index, now)``.  Every decision is taken inside one.

        Invariant (Index.sweep): the index is swept only here, under the
        lock, so a lapsed lease is never forgotten ahead of a record another
        process appended before the deadline.
        """
        return _Deciding(self, retention, wait_durable)

    def _write(self, tx, payloads: list[bytes], types) -> range:
        """Appends under the held lock and folds the records in directly.

        The caller caught up under this lock, so the records land right
        where the index stands; reading them back from the log is skipped.
        """
        seqs = tx.append_batch(payloads, types)
        idx = self._index
        if idx.applied != seqs.start:
            self._catch_up()
            return seqs
        kinds = [types] * len(payloads) if isinstance(types, int) else types
        for seq, t, p in zip(seqs, kinds, payloads):
            idx.apply(seq, t, p)
        return seqs

    def _write_one(self, tx, payload: bytes, type: int) -> int:
        """_write of one record (a receive's lease): its sequence."""
        seq = tx.append(payload, type)
        idx = self._index
        if idx.applied == seq:
            idx.apply(seq, type, payload)
        else:
            self._catch_up()
        return seq

    def _fold_in(self, start: int, fold) -> None:
        """After a write made without the lock (a blind send or delete)
        that landed at ``start``: if nothing came between, ``fold(index)``
        applies it now, rather than a later catch-up reading it back."""
        with self._mu:
            if self._index.applied == start:
                fold(self._index)

    def _check(self) -> None:
        self._broker._check_queue(self)

    def _count_blind(self, n: int) -> None:
        """Counts writes made without catching up (standard sends and
        deletes).  A process that only sends never catches up, so it would
        never checkpoint, and nothing would bound the next open's replay
        (DESIGN guarantee 5).  Every checkpoint interval of blind writes it
        catches up (plain sends are added in bulk) and checkpoints if due,
        unless another process checkpointed lately."""
        self._blind_ops += n
        # The first comparison keeps the common case (not due) to one test.
        if self._blind_ops >= CHECKPOINT_EVERY and self._blind_ops >= self._checkpoint_interval():
            self._blind_ops = 0
            # A process that only writes never consults its index; it has
            # only to see that someone keeps the replay bounded.  Where
            # consumers run, they catch up anyway, and one of them has
            # checkpointed lately: then there is nothing to do (a producer
            # used to replay every consumer's records to reach the same
            # checkpoint).
            newest = checkpoint.list_checkpoints(self._dir)
            if newest and newest[-1] > self._ckpt_pos and newest[-1] + self._checkpoint_interval() >= self._log.end:
                return
            with self._mu:
                self._catch_up()
            self._maintain()

    def _checkpoint_interval(self) -> int:
        """Operations between checkpoints: CHECKPOINT_EVERY, or a quarter of
        the live messages when that is more.  Encoding a checkpoint costs
        O(live); a fixed interval made a growing backlog cost O(live) per
        operation.  A quarter keeps the replay on open (up to live/4
        operations, about 1.5 us each for leases) near the checkpoint's own
        load time: half made opening a queue with 500,000 live messages
        replay up to 250,000 operations (bench_index: 0.31 -> 0.43 s)."""
        divisor = CHECKPOINT_LIVE_DIVISOR
        return max(CHECKPOINT_EVERY, self._index.live() // divisor if divisor else 0)

    def _maintain(self) -> None:
        """Checkpoint (and compact) once enough records have been applied."""
        since = self._index.ops - self._last_ckpt
        # Large messages roll segments long before CHECKPOINT_EVERY
        # operations; a roll since the last checkpoint also calls for one,
        # or disk use would outgrow "2x live data + two segments".
        # (The first test alone settles the usual case: not due.)
        if since >= CHECKPOINT_EVERY // 10 and (
            since >= self._checkpoint_interval() or self._log.active_base != self._ckpt_base
        ):
            # Every process applies every record, so all of them come due at
            # about the same moment; one checkpoint serves them all (each
            # costs O(live messages) of encoding).  Another process's counts
            # if it covers most of what was appended since ours.
            newest = checkpoint.list_checkpoints(self._dir)
            recent = self._ckpt_pos + (self._index.applied - self._ckpt_pos) // 2
            try:
                skipped = (newest and newest[-1] > recent) or self.checkpoint() is None
            except StoreFull:
                # The caller's operation is already written: it must not
                # fail for a checkpoint, which is retried an interval later.
                skipped = True
            if skipped:
                self._last_ckpt = self._index.ops
                self._ckpt_pos = max(newest[-1] if newest else 0, self._ckpt_pos)
                self._ckpt_base = self._log.active_base

    # -- sending ---------------------------------------------------------------

    @_names_the_queue
    def send(self, body, *, attributes=None, delay=None, group=None, dedup_id=None) -> SendResult:
        """Stores one message; returns its id (and FIFO sequence)."""
        attrs = self._attrs()
        if not attrs.fifo:
            # The common case, kept short: no decision, so no lock or catch-up.
            if (type(body) is bytes and 0 < len(body) <= attrs.max_message_size and attributes is None
                    and delay is None and group is None and dedup_id is None):
                # A plain body needs none of _prepare's checks but the size.
                now = self._clock()
                text, raw = self._ids.next()
                head = R.SEND_HEAD.pack(raw, now, now + attrs.delay, 0.0, 0, 0, 0, 0, 0)
                self._log.append(head + body, R.SEND)
                self._count_blind(1)
                return _new_send_result((text, None, False))
            b, encoded, d, g, _ = self._prepare(attrs, body, attributes, delay, group, dedup_id)
            now = self._clock()
            text, raw = self._ids.next()
            self._log.append(R.encode_send(raw, now, now + d, b, encoded, g), R.SEND)
            self._count_blind(1)
            return SendResult(text)
        return self._store([self._prepare(attrs, body, attributes, delay, group, dedup_id)], attrs)[0]

    @_names_the_queue
    def send_batch(self, entries) -> BatchResult:
        """Sends many messages with one write; each entry succeeds or fails alone.

        ``entries``: bodies, or dicts with send()'s keywords and ``body``.
        """
        attrs = self._attrs()
        if not isinstance(entries, (list, tuple)) or not entries:
            raise BatchError("send_batch needs a non-empty list of entries")
        result = BatchResult()
        good, where = [], []
        if not attrs.fifo and set(map(type, entries)) == _JUST_BYTES:
            # Checked with C-level loops (map, min, max): a generator over
            # the entries cost more than encoding them.
            lens = list(map(len, entries))
            if min(lens) > 0 and max(lens) <= attrs.max_message_size:
                return self._send_plain(entries, lens, attrs.delay)
        for i, entry in enumerate(entries):
            try:
                if isinstance(entry, dict):
                    unknown = set(entry) - _SEND_KEYS
                    if unknown or "body" not in entry:
                        raise InvalidParameter(
                            f"batch entry {i}: needs 'body'; unknown keys: {sorted(unknown) or 'none'}"
                        )
                    prepared = self._prepare(attrs, entry["body"], entry.get("attributes"),
                                             entry.get("delay"), entry.get("group"), entry.get("dedup_id"))
                else:
                    prepared = self._prepare(attrs, entry, None, None, None, None)
            except InvalidParameter as exc:
                result.failed.append((i, exc))
                continue
            good.append(prepared)
            where.append(i)
        if good:
            for i, r in zip(where, self._store(good, attrs)):
                result.successful.append((i, r))
        return result

    def _send_plain(self, bodies: list[bytes], lengths: list[int], delay: int) -> BatchResult:
        """send_batch of valid plain bodies on a standard queue: the same
        records as _store writes, with the per-entry checks already done,
        encoded natively in one call (walq_encode_sends)."""
        n = len(bodies)
        now = self._clock()
        data = b"".join(bodies)
        lens = array("I", lengths)
        size = len(data) + R.SEND_HEAD.size * n
        out = ffi.new("char[]", size)
        out_lens = ffi.new("uint32_t[]", n)
        text = ffi.new("char[]", 37 * n - 1)
        lib.walq_encode_sends(data, ffi.from_buffer("uint32_t[]", lens), n, self._ids.batch_prefix,
                              self._ids.reserve(n), now, now + delay, out, out_lens, text)
        log = self._log
        # Written and added to the index in one native call, under this
        # process's locks in _deciding's order; the general way otherwise.
        written = False
        with log._tlock:
            if not log._closed:
                with self._mu:
                    idx = self._index
                    if type(idx) is NativeIndex:
                        written = idx.append_sends(log._writer, n, out, out_lens, now, now + delay, log._seq_out)
                        start = log._seq_out[0]
        if not written:
            seqs = log.append_packed(n, out, out_lens, R.SEND, settle=False)
            self._fold_in(seqs.start, lambda idx: idx.add_sends(seqs, now, now + delay))  # as _append_delete
            start = seqs.start
        log.settle(start + n)
        self._count_blind(n)
        return BatchResult._all_ok(partial(_send_results, ffi.buffer(text)[:]))

    def _prepare(self, attrs: QueueAttributes, body, attributes, delay, group, dedup_id) -> tuple:
        if isinstance(body, str):
            try:
                body = body.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 for it
                raise InvalidParameter(f"message body is not valid Unicode text: {exc.reason} at {exc.start}") from None
        elif isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        elif not isinstance(body, bytes):
            raise InvalidParameter(f"message body must be bytes or str; got {type(body).__name__}")
        if not body:
            raise InvalidParameter("message body must not be empty")
        encoded, counted = mattrs.encode(attributes)
        size = len(body) + counted
        if size > attrs.max_message_size:
            raise MessageTooLarge(
                f"message of {size} bytes (body plus attributes) exceeds queue {self.name}'s "
                f"max_message_size of {attrs.max_message_size}"
            )
        if attrs.fifo:
            if delay not in (None, 0):
                raise InvalidParameter("FIFO queues do not support a per-message delay; set the queue's delay")
            if group is None:
                raise InvalidParameter("FIFO queues need a message group (group=...)")
            if dedup_id is None:
                if not attrs.content_based_dedup:
                    raise InvalidParameter(
                        "FIFO queue without content_based_dedup: each message needs dedup_id=..."
                    )
                dedup_id = hashlib.sha256(body).hexdigest()
            for what, value in (("group", group), ("dedup_id", dedup_id)):
                if not isinstance(value, str) or not _ID_CHARS.fullmatch(value):
                    raise InvalidParameter(
                        f"{what} must be 1-128 characters of letters, digits and punctuation; got {value!r}"
                    )
            delay = attrs.delay
        else:
            if dedup_id is not None:
                raise InvalidParameter("dedup_id applies to FIFO queues only")
            if group is not None and (not isinstance(group, str) or not _ID_CHARS.fullmatch(group)):
                raise InvalidParameter(f"group must be 1-128 characters of letters, digits and punctuation; got {group!r}")
            if delay is None:
                delay = attrs.delay
            elif isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 900:
                raise InvalidParameter(f"delay must be an integer 0-900 seconds; got {delay!r}")
        return body, encoded, delay, group, dedup_id

    def _store(self, entries: list[tuple], attrs: QueueAttributes) -> list[SendResult]:
        now = self._clock()
        payloads, ids = [], []
        for body, encoded, delay, group, dedup_id in entries:
            text, raw = self._ids.next()
            ids.append(text)
            payloads.append(R.encode_send(raw, now, now + delay, body, encoded, group, dedup_id))
        if not attrs.fifo:
            self._log.append_batch(payloads, R.SEND)
            self._count_blind(len(payloads))
            return [SendResult(text) for text in ids]
        # FIFO: the dedup window decides, so decide under the lock.
        results: list[SendResult | None] = [None] * len(entries)
        fresh, fresh_at = [], []
        with self._deciding(attrs.retention) as (tx, idx, _now):
            pending: dict[str, int] = {}
            for i, (body, _e, _d, group, dedup_id) in enumerate(entries):
                key = idx.dedup_key(group, dedup_id)
                hit = idx.dedup.get(key)
                if hit is not None:
                    results[i] = SendResult(format_id(hit[0]), hit[1], duplicate=True)
                elif key in pending:
                    results[i] = pending[key]  # filled below
                else:
                    pending[key] = i
                    fresh.append(payloads[i])
                    fresh_at.append(i)
            if fresh:
                seqs = self._write(tx, fresh, R.SEND)
                for i, seq in zip(fresh_at, seqs):
                    results[i] = SendResult(ids[i], seq)
            for i, r in enumerate(results):
                if isinstance(r, int):
                    first = results[r]
                    results[i] = SendResult(first.message_id, first.sequence, duplicate=True)
        self._maintain()
        return results

    def _store_copies(self, copies: list[tuple]) -> int:
        """Writes a topic's fan-out copies, each ``(message_id (16 raw
        bytes), body, encoded attributes, group, dedup_id)``, with the ids
        given and without waiting for durability (the topic makes them
        durable before its cursor passes them: walq/topic/fanout.py).
        A FIFO queue decides under its lock, as a send: a copy whose dedup
        id is in the window is dropped, as SQS drops a duplicate.  Returns
        how many were written."""
        attrs = self._attrs()
        now = self._clock()
        payloads = []
        if not attrs.fifo:
            # Nothing to decide: no lock or catch-up, as a plain send.
            visible = now + attrs.delay
            for mid, body, encoded, group, _dedup in copies:
                payloads.append(R.encode_send(mid, now, visible, body, encoded, group))
            if len(payloads) == 1:
                self._log.append(payloads[0], R.SEND, settle=False)
            else:
                lens = ffi.new("uint32_t[]", [len(p) for p in payloads])
                self._log.append_packed(len(payloads), b"".join(payloads), lens, R.SEND, settle=False)
            self._count_blind(len(payloads))
            return len(payloads)
        with self._deciding(attrs.retention, wait_durable=False) as (tx, idx, _now):
            seen = set()
            for mid, body, encoded, group, dedup in copies:
                key = idx.dedup_key(group, dedup)
                if key in seen or idx.dedup.get(key) is not None:
                    continue
                seen.add(key)
                payloads.append(R.encode_send(mid, now, now + attrs.delay, body, encoded, group, dedup))
            if payloads:
                self._write(tx, payloads, R.SEND)
        self._maintain()
        return len(payloads)

    # -- receiving -------------------------------------------------------------

    @_names_the_queue
    def receive(self, max_messages: int = 1, *, wait=None, visibility_timeout=None) -> list[Message]:
        """Leases up to ``max_messages`` visible messages; long-polls ``wait`` s."""
        attrs = self._attrs()  # also the closed-broker and deleted-queue checks
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or not 1 <= max_messages <= MAX_RECEIVE:
            raise InvalidParameter(f"max_messages must be an integer 1-{MAX_RECEIVE}; got {max_messages!r}")
        if wait is None:
            wait = attrs.receive_wait
        elif isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 20:
            raise InvalidParameter(f"wait must be 0-20 seconds; got {wait!r}")
        if visibility_timeout is None:
            visibility_timeout = attrs.visibility_timeout
        else:
            lo, hi = RANGES["visibility_timeout"]
            if isinstance(visibility_timeout, bool) or not isinstance(visibility_timeout, (int, float)) \
                    or not lo <= visibility_timeout <= hi:
                raise InvalidParameter(f"visibility_timeout must be {lo}-{hi} seconds; got {visibility_timeout!r}")
        if wait <= 0:
            return self._receive_once(max_messages, visibility_timeout, attrs)  # nothing to wait for
        deadline = time.monotonic() + wait
        while True:
            token = self._log.change_token()
            msgs = self._receive_once(max_messages, visibility_timeout, attrs)
            left = deadline - time.monotonic()
            if msgs or left <= 0:
                return msgs
            self._check()
            # Under _mu: a native index is read without the GIL, while
            # another thread's receive may be growing its heaps.
            with self._mu:
                nxt = self._index.next_event()
            if nxt is not None:
                left = min(left, max(0.001, nxt - self._clock()))
            self._log.wait_for_change(token, left)

    def _receive_once(self, n: int, vt: float, attrs: QueueAttributes) -> list[Message]:
        policy = attrs.dead_letter
        dlq = self._broker._dead_letter_target(policy) if policy else None
        if not attrs.fifo and n <= RECV_MAX:
            # With a redrive policy, a receive that would move a message
            # comes back (-1) for the general path to move it.
            out = self._receive_now(n, vt, attrs.retention, policy.max_receives if dlq is not None else 0)
            if out is not None:
                return out
        with self._mu:
            # Cheap pre-check without the lock: nothing visible and nothing
            # due, nothing to do.  It must not sweep (see Index.sweep).
            self._catch_up()
            idx = self._index
            if not idx.visible_count():
                nxt = idx.next_event()
                if nxt is None or nxt > self._clock():
                    return []
        moves = []
        # A lease need not be durable before it is handed out: if a power cut
        # loses it, the message is merely visible again early (at-least-once
        # holds), and the delete that follows is durable and covers it.
        # Only the decision happens under the lock; decoding bodies and
        # building the messages waits until it is released.
        with self._deciding(attrs.retention, wait_durable=False) as (tx, idx, now):
            native = None
            if dlq is None and not attrs.fifo and n <= RECV_MAX and type(idx) is NativeIndex:
                native = self._lease_native(idx, n, now, vt, now - attrs.retention)
            if native is None:
                got = self._lease(tx, idx, n, now, vt, attrs, policy, dlq, moves) + (None,)
        if native is not None:
            # Read out after the locks are released.
            k, r, mm, infos = native
            if k and infos is None:
                out = self._native_messages(k, r, mm)
                self._maintain()
                return out
            got = self._native_results(*native)
        out = self._messages(*got, fifo=attrs.fifo)
        self._maintain()
        if moves:
            self._move_out(moves, dlq, reset_time=attrs.fifo, fresh_count=False, source_name=self.name)
        return out

    def _receive_now(self, n: int, vt: float, retention: float, max_receives: int) -> list[Message] | None:
        """The usual receive on a standard queue: the pre-check, the append
        lock, the sweep and the lease in one native call
        (walq_qx_receive_now), under this process's own locks only.  None
        when the general path must run (walq_qx_receive said so, or the log
        is closed); nothing done here needs undoing: a sweep stands, and
        nothing else changed.  ``max_receives`` is the redrive policy's
        limit (0: none): a receive that would move a message to the
        dead-letter queue is left to the general path, which moves it.

        An index behind the log catches up first, without the append lock,
        as the general path's pre-check does; if records arrive while the
        native call waits for the lock, it returns holding it, and the
        catch-up runs under it, as in _deciding.

        This saves the Python around _deciding and _lease_native: a
        receive(10)'s CPU went from ~39 to ~32 us (bench/RESULTS-queue.md,
        2026-11-22 17:01-19:05 UTC).
        """
        log = self._log
        r = getattr(self._recv_local, "r", None)
        if r is None:
            r = self._recv_local.r = ffi.new("struct walq_qx_recv *")
        if lib.walq_load(log._p_end_seq) != self._index.applied:
            with self._mu:
                self._catch_up()
        # The order of _deciding: the log's thread lock, then the queue's.
        with log._tlock:
            if log._closed:
                return None  # the general path says so
            with self._mu:
                idx = self._index
                if type(idx) is not NativeIndex or idx.poisoned:
                    return None
                held = log.aim_reader(r)
                if held is None:
                    return None
                now = self._clock()
                r.now, r.deadline, r.expired, r.uid, r.applied = now, now + vt, now - retention, self._uid, idx.applied
                r.max_receives = max_receives
                try:
                    k = idx.receive_now(r, n, retention)
                    if r.locked:  # stale under the lock: catch up under it, then finish
                        self._catch_up()
                        idx = self._index
                        held = log.aim_reader(r) if type(idx) is NativeIndex and not idx.poisoned else None
                        if held is None:
                            return None  # (unlocked below)
                        r.applied = idx.applied
                        k = idx.receive_now(r, n, retention)
                finally:
                    if r.locked:  # an error, or the general path: let go
                        r.locked = 0
                        lib.walq_unlock(log._append_fd)
                if k <= 0:
                    return [] if k == 0 else None
                if not r.folded:  # not expected (caught up under the lock, a lease lands at `applied`)
                    self._catch_up()
                    native = self._native_results(k, r, held[0], self._index.describe(ffi.unpack(r.seqs, k)))
        if r.folded:
            out = self._native_messages(k, r, held[0])
        else:
            out = self._messages(*native, fifo=False)
        self._maintain()
        return out

    def _messages(self, leased, kept, infos, lease_seq, texts, *, fifo: bool) -> list[Message]:
        """The Messages of a lease decided in Python (or natively, then
        read back): the leased sequences, their SEND payloads, each one's
        ``(receive count, first received, original seq)``, the LEASE's
        sequence, and the id and receipt texts if already made."""
        out = []
        if not leased:
            return out
        head, hsize = R.SEND_HEAD.unpack_from, R.SEND_HEAD.size
        if texts is None:
            texts = receipts.receive_texts(self._uid, leased, lease_seq, b"".join([p[:16] for p in kept]))
        for p, (count, first, orig), mid, receipt in zip(kept, infos, *texts):
            _mid, sent, _vis, first_rec, _prior, alen, glen, dlen, slen = head(p)
            if alen or glen or dlen or slen:
                body, attributes, group, dedup = _message_parts(p)
            else:  # a plain message: the body follows the head
                body, attributes, group, dedup = p[hsize:], {}, None, None
            # Positional: a dataclass takes keywords at twice the cost,
            # and a receive builds one per message.  (Field order:
            # results.Message.)
            out.append(Message(mid, body, attributes, receipt, count, sent, first_rec or first,
                               group, dedup, orig if fifo else None, self))
        return out

    def _lease_native(self, idx: NativeIndex, n: int, now: float, vt: float, expired: float) -> tuple | None:
        """A standard queue's receive without a redrive policy, decided,
        written and applied in one native call (walq_qx_receive; lock held,
        index caught up and swept).  Returns what _native_results reads out
        once the locks are released, or None when the receive must take the
        general path (_lease): messages outside the segment read last, an
        expired one, or an append that needs the slow path."""
        # The thread's own: read after the locks are released, and only
        # until this thread's next receive.
        r = getattr(self._recv_local, "r", None)
        if r is None:
            r = self._recv_local.r = ffi.new("struct walq_qx_recv *")
        held = self._log.aim_reader(r)
        if held is None:
            return None
        r.now, r.deadline, r.expired, r.uid, r.applied = now, now + vt, expired, self._uid, idx.applied
        r.max_receives = 0  # only without a redrive policy
        k = idx.receive(r, n)
        if k == _UNINDEXED and self._log.index_read_segment():
            held = self._log.aim_reader(r)  # the index grew (and may have moved)
            k = idx.receive(r, n) if held is not None else -1
        if k < 0:
            return None
        mm, _offs = held  # kept alive through the call
        infos = None
        if k and not r.folded:
            self._catch_up()  # applies the lease: nothing else came, we hold the lock
            infos = idx.describe(ffi.unpack(r.seqs, k))
        return k, r, mm, infos

    def _native_messages(self, k: int, r, mm) -> list[Message]:
        """The messages of a native receive that applied its own lease:
        walq_qx_receive filled in every field but the bodies."""
        ids = ffi.unpack(r.ids_text, 37 * k - 1).decode("ascii").split(",")
        handles = ffi.unpack(r.receipts_text, 57 * k - 1).decode("ascii").split(",")
        out = []
        # One buffer for the numbers, not an unpack per field: a receive
        # builds its messages after the lock, and eight unpacks were ~5 us.
        for mid, receipt, (sent, first, off, size, count, plain) in zip(
                ids, handles, _GOT.iter_unpack(ffi.buffer(r.got, _GOT.size * k))):
            # Positional, as in _receive_once.
            if plain:
                out.append(Message(mid, mm[off : off + size], {}, receipt, count, sent, first, None, None, None, self))
            else:
                body, attributes, group, dedup = _message_parts(mm[off : off + size])
                out.append(Message(mid, body, attributes, receipt, count, sent, first, group, dedup, None, self))
        return out

    @staticmethod
    def _native_results(k: int, r, mm, infos) -> tuple:
        """``(leased, payloads, infos, lease_seq, texts)`` of a native
        receive that leased nothing, or whose lease a catch-up applied, as
        _receive_once uses them."""
        if not k:
            return [], [], (), 0, None
        kept = [mm[o : o + size] for o, size in zip(ffi.unpack(r.poffs, k), ffi.unpack(r.lens, k))]
        return ffi.unpack(r.seqs, k), kept, infos, r.lease_seq, None

    def _lease(self, tx, idx, n: int, now: float, vt: float, attrs: QueueAttributes, policy, dlq,
               moves: list) -> tuple:
        """A receive's decision, in general (FIFO, a redrive policy, the
        Python index, messages across segments): ``(leased, payloads, infos,
        lease_seq)``; messages to move to the dead-letter queue are hidden
        and added to ``moves``."""
        leased, kept, hidden = [], [], []  # kept: the payloads of the leased ones
        sent_at = R.F64.unpack_from
        expired = now - attrs.retention  # sent at or before: never delivered
        picks = idx.candidates(n, take=not attrs.fifo)
        infos, lease_seq = (), 0
        try:
            try:
                bodies = self._log.read_many(picks)
            except RecordGone:
                bodies = [None] * len(picks)  # one is gone: look at each alone
            # Receive counts matter here only for a redrive policy.
            infos = idx.describe(picks) if dlq is not None else repeat((0, 0.0, 0))
            for m, p, (count, first, _orig) in zip(picks, bodies, infos):
                if p is None:
                    try:
                        p = self._log.read(m).payload
                    except RecordGone:
                        idx.remove(m)
                        continue
                if sent_at(p, R.SENT_AT_OFFSET)[0] <= expired:
                    idx.remove(m)  # expired: never delivered
                    continue
                if dlq is not None and count + 1 > policy.max_receives:
                    hidden.append(m)
                    rec = R.decode_send(p)
                    if first and not rec.first_received_at:
                        # The record holds it only if it came from elsewhere.
                        rec = rec._replace(first_received_at=first)
                    moves.append((m, rec, count))
                    continue
                leased.append(m)
                kept.append(p)
            if hidden:
                records, types = [R.encode_hide([(m, now + MOVE_HIDE_S) for m in hidden])], [R.HIDE]
                if leased:
                    records.insert(0, R.encode_lease_all(now, leased, now + vt))
                    types.insert(0, R.LEASE)
                lease_seq = self._write(tx, records, types).start
            elif leased:
                lease_seq = self._write_one(tx, R.encode_lease_all(now, leased, now + vt), R.LEASE)
            if leased:
                infos = idx.describe(leased)
        except BaseException:
            idx.give_back(picks)  # taken from the visible heap, and not leased
            raise
        return leased, kept, infos, lease_seq

    def _move_out(self, moves, target: "Queue", *, reset_time: bool, fresh_count: bool,
                  source_name: str | None) -> int:
        """Copies hidden messages into ``target``, then marks them MOVED here.

        Crash between the two steps: the hide runs out, the message is moved
        again, and the target may hold it twice - at-least-once, never lost.
        """
        now = self._clock()
        payloads = []
        for _m, rec, count in moves:
            payloads.append(R.encode_send(
                rec.message_id,
                now if reset_time else rec.sent_at,
                now,
                rec.body,
                rec.attributes,
                rec.group,
                rec.dedup_id,
                source=source_name,
                prior_receives=0 if fresh_count else count,
                first_received_at=0.0 if fresh_count else rec.first_received_at,
            ))
        target._append_moved(payloads)
        with self._log.locked() as tx, self._mu:
            self._catch_up()
            self._write(tx, [R.encode_seqs([m for m, _r, _c in moves])], R.MOVED)
        return len(moves)

    def _hide_visible(self, accept) -> list[tuple[int, R.SendRecord, int]]:
        """Hides every visible message whose record ``accept``s (for redrive)."""
        attrs = self._attrs()
        with self._deciding(attrs.retention) as (tx, idx, now):
            chosen = []
            for m in idx.candidates(idx.live() or 1):
                rec = R.decode_send(self._log.read(m).payload)
                if rec.sent_at + attrs.retention > now and accept(rec):
                    chosen.append((m, rec, 0))
            if chosen:
                self._write(tx, [R.encode_hide([(m, now + MOVE_HIDE_S) for m, _r, _c in chosen])], R.HIDE)
        return chosen

    def _append_moved(self, payloads: list[bytes]) -> None:
        self._check()
        self._log.append_batch(payloads, R.SEND)

    # -- acknowledging ------------------------------------------------------------

    @_names_the_queue
    def delete(self, receipt: str) -> None:
        """Acknowledges (deletes) a message.  Deleting twice is fine."""
        self._check()
        res = self.delete_batch([receipt])
        if res.failed:
            raise res.failed[0][1]

    @_names_the_queue
    def delete_batch(self, receipts_: list[str]) -> BatchResult:
        """Deletes many messages with one write; per-entry results."""
        attrs = self._attrs()  # also the closed-broker and deleted-queue checks
        if not isinstance(receipts_, (list, tuple)) or not receipts_:
            raise BatchError("delete_batch needs a non-empty list of receipts")
        if not attrs.fifo and len(receipts_) <= DOOMED_MAX and set(map(type, receipts_)) == _JUST_STR \
                and set(map(len, receipts_)) == _JUST_RECEIPT_LEN:
            # The usual batch (well-formed handles, a standard queue, the
            # native index) in one native call; anything else goes the
            # general way below, which says what is wrong with which handle.
            text = "".join(receipts_)
            if text.isascii() and self._delete_now(text.encode("ascii"), len(receipts_)):
                return BatchResult._all_ok(partial(_enumerated, tuple(receipts_)))
        result = BatchResult()
        parsed = []
        for i, (r, got) in enumerate(zip(receipts_, receipts.decode_many(receipts_, self._uid))):
            if isinstance(got, InvalidReceipt):
                result.failed.append((i, got))
            else:
                parsed.append((i, r, *got))
        if not parsed:
            return result
        if not attrs.fifo:
            # A standard queue deletes whatever a well-formed receipt names
            # (SQS: a stale receipt may still delete), so there is nothing to
            # decide: no lock, no catch-up.  Every process resolves the
            # sequence through compaction's redirects when it applies the
            # record (Index.apply), and a message already gone is a no-op.
            # What is already gone needs no record.  Catching up here, off
            # the lock, is work the next receive would do under it; and a
            # message never comes back once removed, so what the index says
            # is gone stays gone.
            with self._mu:
                self._catch_up()
                idx = self._index
                doomed = idx.select_live(list(dict.fromkeys(m for _i, _r, m, _lease in parsed)))
                seen = idx.applied
            if doomed:
                self._append_delete(R.encode_seqs(doomed), len(doomed))
            else:
                # Gone already, by records that may not be durable yet.
                self._log.settle(seen)
            result.successful.extend((i, r) for i, r, _m, _lease in parsed)
            result.failed.sort(key=lambda e: e[0])
            return result
        with self._deciding(attrs.retention) as (tx, idx, _now):
            doomed = []
            for i, r, m, lease in parsed:
                m = idx.resolve(m)
                if idx.state_of(m) is None:
                    result.successful.append((i, r))  # already gone: SQS says fine
                    continue
                if attrs.fifo:
                    cur = idx.lease_of(m)
                    if cur is None or cur[0] != lease:
                        result.failed.append((i, InvalidReceipt(
                            "receipt handle has expired: the message's lease ran out or it was received again")))
                        continue
                if m not in doomed:
                    doomed.append(m)
                result.successful.append((i, r))
            if doomed:
                self._write(tx, [R.encode_seqs(doomed)], R.DELETE)
        self._maintain()
        result.successful.sort(key=lambda e: e[0])
        result.failed.sort(key=lambda e: e[0])
        return result

    def _delete_now(self, text: bytes, n: int) -> bool:
        """A standard queue's delete of ``n`` well-formed handles, concatenated
        in ``text``, decided, written and applied in one native call
        (walq_qx_delete_now) under this process's own locks; then made
        durable.  False, with nothing written, when the general path must
        run (a handle of another queue, the Python index, an append that
        needs the slow path).

        No catch-up first: what the index says is gone stays gone, and
        what it has not seen yet is deleted regardless.  The receive that
        usually follows catches up anyway.
        """
        log = self._log
        # The order of _deciding: the log's thread lock, then the queue's.
        with log._tlock:
            if log._closed:
                return False  # the general path says so
            with self._mu:
                idx = self._index
                if type(idx) is not NativeIndex:
                    return False
                k = idx.delete_now(log._writer, text, n, self._uid, log._seq_out)
                seq = log._seq_out[0] if k > 0 else idx.applied
        if k < 0:
            return False
        if k == 0:
            # Every message was gone already, by records that may not be
            # durable yet (another consumer's delete): wait for them too.
            log.settle(seq)
            return True
        log.settle(seq + 1)
        self._count_blind(k)
        return True

    def _append_delete(self, payload: bytes, n: int) -> None:
        """Writes a standard queue's DELETE of ``n`` messages without the
        lock (see delete_batch) and folds it in."""
        log = self._log
        seq = log.append(payload, R.DELETE, settle=False)
        # Folded in before the durability wait: the index follows the log,
        # not the disk, and after the wait's sleep this ran 60-80% slower.
        with self._mu:
            idx = self._index
            if idx.applied == seq:  # nothing came between: _fold_in, without a closure
                idx.apply(seq, R.DELETE, payload)
        log.settle(seq + 1)
        self._count_blind(n)

    @_names_the_queue
    def change_visibility(self, receipt: str, seconds) -> None:
        """Sets the message's lease to end ``seconds`` from now (0 = visible now)."""
        res = self.change_visibility_batch([(receipt, seconds)])
        if res.failed:
            raise res.failed[0][1]

    @_names_the_queue
    def change_visibility_batch(self, entries) -> BatchResult:
        """``[(receipt, seconds), ...]`` with one write; per-entry results."""
        self._check()
        if not isinstance(entries, (list, tuple)) or not entries:
            raise BatchError("change_visibility_batch needs a non-empty list of (receipt, seconds)")
        result = BatchResult()
        parsed = []
        lo, hi = RANGES["visibility_timeout"]
        for i, entry in enumerate(entries):
            try:
                if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                    raise InvalidParameter(f"entry {i} must be (receipt, seconds)")
                receipt, seconds = entry
                if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not lo <= seconds <= hi:
                    raise InvalidParameter(f"visibility timeout must be {lo}-{hi} seconds; got {seconds!r}")
                parsed.append((i, receipt, *receipts.decode(receipt, self._uid), seconds))
            except InvalidParameter as exc:
                result.failed.append((i, exc))
        if parsed:
            attrs = self._attrs()
            with self._deciding(attrs.retention) as (tx, idx, now):
                changes = []
                for i, receipt, m, lease, seconds in parsed:
                    m = idx.resolve(m)
                    cur = idx.lease_of(m)
                    if cur is None or cur[0] != lease:
                        result.failed.append((i, MessageNotInflight(
                            "message is not in flight under this receipt (deleted, or its lease ran out)")))
                        continue
                    changes.append((m, lease, now + seconds))
                    result.successful.append((i, receipt))
                if changes:
                    self._write(tx, [R.encode_chvis(changes)], R.CHVIS)
        result.failed.sort(key=lambda e: e[0])
        return result

    @_names_the_queue
    def purge(self) -> None:
        """Drops every message, in flight included."""
        self._check()
        with self._log.locked() as tx, self._mu:
            self._catch_up()
            self._write(tx, [R.encode_purge(tx.end)], R.PURGE)

    # -- inspecting ------------------------------------------------------------------

    @_names_the_queue
    def stats(self) -> QueueStats:
        """Visible, in-flight and delayed counts and the oldest message's age."""
        self._check()
        attrs = self._attrs()
        # Under the append lock, because it sweeps (see Index.sweep).  It
        # reports, confirms nothing: no durability wait.
        with self._deciding(attrs.retention, wait_durable=False) as (_tx, idx, now):
            oldest = idx.oldest_sent()
            return QueueStats(
                visible=idx.counts[VISIBLE],
                in_flight=idx.counts[INFLIGHT],
                delayed=idx.counts[DELAYED],
                oldest_age_s=max(0.0, now - oldest) if oldest is not None else 0.0,
                total=idx.live(),
                disk_bytes=self._log.disk_bytes(),
            )

    @_names_the_queue
    def set_attributes(self, **changes) -> None:
        """Changes attributes (any but ``name`` and ``fifo``)."""
        self._broker._set_attributes(self, changes)

    # -- maintenance -------------------------------------------------------------------

    @_names_the_queue
    def checkpoint(self) -> int | None:
        """Saves the index and trims the log below what is still needed.

        Returns the checkpoint's position, or None if another process is
        writing one right now.
        """
        if self._ckpt_fh is None:
            raise ReadOnlyStore(f"queue {self.name}: the store is open read-only")
        # One thread at a time (flock does not exclude threads sharing a
        # descriptor), and _close waits for it before closing the file.
        if not self._ckpt_mu.acquire(blocking=False):
            return None
        try:
            if self._closed:
                raise BrokerClosed(f"queue {self.name} is closed")
            return self._checkpoint_locked()
        finally:
            self._ckpt_mu.release()

    def _checkpoint_locked(self) -> int | None:
        try:
            portalocker.lock(self._ckpt_fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.LockException:
            return None
        try:
            # Expire what retention ended first, so that an idle queue's
            # expired messages stop pinning their segments (without this
            # sweep their space was reclaimed only after some other call).
            entry = self._broker._catalog.queues.get(self.name)
            if entry is not None and entry.uid == self._uid:
                with self._deciding(entry.attrs.retention, wait_durable=False):
                    pass  # entering is the work: lock, catch up, sweep to now
            # Copy pinning messages forward first, so that the checkpoint
            # covers the copies and the trim below may drop the originals.
            self._rewrite_forward()
            with self._mu:
                self._catch_up()
                idx = self._index
                # Invariant: a checkpoint never covers a record that is not
                # durable (in every mode: receives' leases are not synced).
                # After a power cut the log could otherwise end below it,
                # and the records written next, at sequences it claims to
                # have applied, would be skipped by every index.
                self._log.sync_to(idx.applied)
                pos = checkpoint.save(idx, self._dir, self._log.io)
                self._last_ckpt = idx.ops
                self._ckpt_pos = pos
                self._ckpt_base = self._log.active_base
                low = idx.min_live()
                # Invariant: nothing at or above the newest checkpoint is ever
                # trimmed - a process that fell behind reloads from it and
                # replays from its position.
                keep = pos if low is None else min(low, pos)
            self._log.delete_below(keep)
            return pos
        finally:
            portalocker.unlock(self._ckpt_fh)

    def _rewrite_forward(self) -> None:
        """Copies the few live messages that pin old segments to the log's end
        (checkpoint() then trims the originals' segments).

        A CARRY record moves each message's state to its copy: its lease
        (old receipts follow the redirect), receive count, first receive and,
        for FIFO, its sequence number.  FIFO order within a group is order of
        sequence, so a FIFO rewrite takes every live message of each group
        involved, in order.
        """
        attrs = self._attrs()
        bases = self._log.segment_bases()
        if len(bases) < 2:
            return
        # Everything below the active segment: with bases[-2] the previous
        # segment stayed pinned and a roll before the next checkpoint made
        # three, over the "live data x2 + two segments" bound.
        cutoff = bases[-1]
        with self._log.locked() as tx, self._mu:
            self._catch_up()
            idx = self._index
            # More than this many pinning messages is genuinely live data:
            # disk use already tracks it, and there is nothing to rewrite.
            limit = max(1000, idx.live() // 10)
            pinning = idx.live_below(cutoff, limit)
            if attrs.fifo and pinning:
                groups = {idx.group_of[m] for m in pinning}
                pinning = [m for m in idx.live_seqs() if idx.group_of[m] in groups]
            if not pinning or len(pinning) > limit:
                return
            payloads, types, carry = [], [], []
            new = tx.end
            for m, (count, first, orig) in zip(pinning, idx.describe(pinning)):
                rec = R.decode_send(self._log.read(m).payload)
                payloads.append(R.encode_send(rec.message_id, rec.sent_at, rec.visible_at, rec.body,
                                              rec.attributes, rec.group, rec.dedup_id, rec.source,
                                              count, rec.first_received_at or first))
                types.append(R.SEND)
                lease_seq, deadline = idx.lease_of(m) or (0, 0.0)
                carry.append((new, m, lease_seq, deadline, orig))
                new += 1
            payloads.append(R.encode_carry(carry))
            types.append(R.CARRY)
            self._write(tx, payloads, types)

    def _close(self, deleted: bool = False) -> None:
        """Closes this handle; calls other threads have in progress end
        with BrokerClosed (QueueDoesNotExist if ``deleted``), never on a
        closed descriptor (Log._release_files)."""
        try:
            if not deleted and self._index.ops - self._last_ckpt > 1000:
                self.checkpoint()
        except WalqError:
            pass
        with self._ckpt_mu:
            self._closed = True
            self._log.close()
            if self._ckpt_fh is not None:
                self._ckpt_fh.close()

    def __repr__(self) -> str:
        return f"<walq.Queue {self.name!r}>"

    def messages(self, wait: float = 20, max_messages: int = 10, *,
                 visibility_timeout: float | None = None) -> Iterator[Message]:
        """Yields messages as they come, long-polling up to ``wait`` seconds
        (0 < wait <= 20) for up to ``max_messages`` (1-1,000) at a time::

            for m in q.messages():
                handle(m)
                m.ack()

        Each message is leased when its batch is received, so a batch's last
        message has waited for the ones before it: keep ``max_messages``
        times the handling time well under the visibility timeout.  Never
        ends by itself; it stops when the broker is closed (from another
        thread: within ``wait`` seconds) and when the loop breaks.
        """
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 < wait <= 20:
            raise InvalidParameter(f"wait must be more than 0 and at most 20 seconds; got {wait!r}")
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or not 1 <= max_messages <= MAX_RECEIVE:
            raise InvalidParameter(f"max_messages must be an integer 1-{MAX_RECEIVE}; got {max_messages!r}")

        def stream() -> Iterator[Message]:
            while True:
                try:
                    batch = self.receive(max_messages, wait=wait, visibility_timeout=visibility_timeout)
                except Exception:
                    # BrokerClosed; or, closed by another thread mid-wait,
                    # whatever the closed log raised (a TypeError today).
                    if self._broker._closed:
                        return
                    raise
                yield from batch

        return stream()
