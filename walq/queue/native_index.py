"""A standard queue's index in C (native/qindex.c): the same state, rules
and methods as walq.queue.index.Index with ``fifo=False``.

The Python Index pays about a microsecond of dict and heap work per message
for every lease and delete it replays, and every consumer replays every
other consumer's; here those are C loops over one table.  FIFO queues keep
the Python Index (groups and dedup windows).  ``WALQ_INDEX=python`` makes
standard queues use it too (for comparison and as a fallback).
"""

from __future__ import annotations

import os
from array import array

from walq.errors import CorruptionError, InvalidParameter
from walq.log._native import ffi, lib
from walq.queue.index import INFLIGHT, Index

__all__ = ["NativeIndex", "COLUMNS", "native_index_enabled", "new_index"]

#: The checkpoint's tables as (column, typecode), grouped by table in the
#: order of struct walq_qx_columns's rows[].
COLUMNS = (
    (("state_seq", "q"), ("state_val", "b")),
    (("ret_seq", "q"), ("ret_at", "d")),
    (("delayed_at", "d"), ("delayed_seq", "q")),
    (("lease_msg", "q"), ("lease_seq", "q"), ("lease_deadline", "d")),
    (("recv_msg", "q"), ("recv_count", "q"), ("recv_first", "d")),
    (("prior_msg", "q"), ("prior_count", "q")),
    (("late_at", "d"), ("late_seq", "q")),
    (("redirect_old", "q"), ("redirect_new", "q")),
    (("orig_seq", "q"), ("orig_orig", "q")),
)
#: The largest batch whose output arrays an index keeps for reuse (a
#: receive takes at most 1,000).
_SCRATCH_MAX = 1024
_UNINDEXED = lib.WALQ_QX_RECV_UNINDEXED
_STALE = lib.WALQ_QX_RECV_STALE
_DELETE_SLOW = lib.WALQ_QX_DELETE_SLOW
_APPEND_SLOW = lib.WALQ_QX_APPEND_SLOW
#: Scratch arrays the C code fills before they are read need no zeroing
#: (a checkpoint's columns are megabytes).
_raw_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_CODES = {name: code for table in COLUMNS for name, code in table}
_ITEMSIZE = {"q": 8, "d": 8, "b": 1}
_CTYPES = {"q": "int64_t[]", "d": "double[]", "b": "uint8_t[]"}


def native_index_enabled() -> bool:
    """Whether standard queues use NativeIndex (unless ``WALQ_INDEX=python``).

    Every process sharing a queue builds its own index from the same log
    and checkpoints; either kind reads the other's checkpoints.
    """
    kind = os.environ.get("WALQ_INDEX", "native")
    if kind not in ("native", "python"):
        raise InvalidParameter(f"WALQ_INDEX must be 'native' or 'python'; got {kind!r}")
    return kind == "native"


def new_index(fifo: bool, dedup_scope: str = "queue") -> Index | NativeIndex:
    """An empty index of the kind a queue of this type uses."""
    if not fifo and native_index_enabled():
        return NativeIndex()
    return Index(fifo, dedup_scope)


def _check(rc: int, what: str) -> None:
    if rc == -2:
        raise MemoryError(f"queue index: out of memory in {what}")
    if rc < 0:
        raise CorruptionError(f"queue index: a malformed record in {what}")


class NativeIndex:
    """State of every live message of one standard queue (see Index)."""

    fifo = False
    dedup_scope = "queue"

    def __init__(self, fifo: bool = False, dedup_scope: str = "queue"):
        if fifo:
            raise ValueError("NativeIndex serves standard queues only")
        x = lib.walq_qx_new()
        if x == ffi.NULL:
            raise MemoryError("queue index: out of memory")
        self._x = ffi.gc(x, lib.walq_qx_free)
        self._st = lib.walq_qx_stats(self._x)
        self._view = ffi.new("struct walq_qx_view *")
        self._dbl = ffi.new("double *")
        self._u64 = ffi.new("uint64_t *")
        self._scratch_n = 0
        self._scratch_bufs: tuple = ()
        self.applied = 0  # next log sequence to apply
        # Set when a call ran out of memory part way: what it had applied
        # is unknown, so the queue rebuilds the index (Queue._catch_up).
        self.poisoned = False

    def _ok(self, rc: int, what: str) -> None:
        if rc == -2:
            self.poisoned = True
        _check(rc, what)

    def set_prune_floor(self, floor: int) -> None:
        """Prune dead redirect chains once ``floor`` (default 1,024) more
        than twice the live ones pile up: tests use a tiny floor so that
        every rewrite prunes."""
        lib.walq_qx_set_prune_floor(self._x, floor)

    # -- counters --------------------------------------------------------------

    @property
    def ops(self) -> int:
        """Message operations applied (checkpoint pacing)."""
        return self._st.ops

    @property
    def counts(self) -> list[int]:
        """Messages ``[visible, delayed, in flight]``."""
        c = self._st.counts
        return [c[0], c[1], c[2]]

    def visible_count(self) -> int:
        """Visible messages (counts[VISIBLE], without building the list)."""
        return self._st.counts[0]

    def live(self) -> int:
        """Live messages."""
        return self._st.live

    # -- applying records ------------------------------------------------------

    def apply(self, seq: int, type: int, payload: bytes) -> None:
        """Folds one log record into the index."""
        self._ok(lib.walq_qx_apply(self._x, seq, type, payload, len(payload)), f"record {seq} (type {type})")
        self.applied = seq + 1

    #: Folds a run of records given as lists: the Python index's, which
    #: only packs them for apply_run.
    apply_frames = Index.apply_frames

    def apply_run(self, mm, base, seq0: int, n: int, buf) -> None:
        """Folds records ``seq0 .. seq0 + n`` as Log.frame_run left them."""
        rc = lib.walq_qx_apply_run(self._x, base, buf.poffs, buf.lens, buf.types, n, seq0)
        if rc < 0:  # (tested once: every catch-up comes through here)
            if rc <= -3:
                bad = seq0 - rc - 3
                self.applied = bad  # the records before it were applied (as Index.apply leaves it)
                raise CorruptionError(f"queue index: record {bad} is malformed for its type")
            self._ok(rc, "apply_run")
        self.applied = seq0 + n

    def add_sends(self, seqs: range, sent_at: float, visible_at: float) -> None:
        """Folds in a run of plain SENDs written just now (Index.add_sends)."""
        self._ok(lib.walq_qx_add_sends(self._x, seqs.start, len(seqs), sent_at, visible_at), "add_sends")
        self.applied = seqs.stop

    # -- time ------------------------------------------------------------------

    def sweep(self, now: float, retention: float) -> None:
        """Leases run out, delays end, retention expires (Index.sweep)."""
        self._ok(lib.walq_qx_sweep(self._x, now, retention), "sweep")

    def next_event(self) -> float | None:
        """The earliest time at which a sweep could make a message visible."""
        return self._dbl[0] if lib.walq_qx_next_event(self._x, self._dbl) else None

    # -- choosing what to deliver ----------------------------------------------

    def candidates(self, n: int, take: bool = False) -> list[int]:
        """Up to ``n`` visible messages, lowest sequence first (Index.candidates)."""
        out = self._scratch(n)[3]
        k = lib.walq_qx_candidates(self._x, n, take, out)
        self._ok(k, "candidates")
        return ffi.unpack(out, k)

    def give_back(self, seqs: list[int]) -> None:
        """Returns taken candidates that were neither leased nor removed."""
        if seqs:
            self._ok(lib.walq_qx_give_back(self._x, seqs, len(seqs)), "give_back")

    def remove(self, m: int) -> None:
        """Forgets a message (deleted, moved, purged or expired)."""
        lib.walq_qx_remove(self._x, m)

    def resolve(self, m: int) -> int:
        """The live sequence of the message a receipt names (after rewrites)."""
        return lib.walq_qx_resolve(self._x, m)

    def describe(self, ms: list[int]) -> list[tuple[int, float, int]]:
        """``(receive count, first received at, original seq)`` of each of
        ``ms``: what a receive hands out (Index.describe)."""
        n = len(ms)
        counts, firsts, origs, _out = self._scratch(n)
        lib.walq_qx_describe(self._x, ms, n, counts, firsts, origs)
        return list(zip(ffi.unpack(counts, n), ffi.unpack(firsts, n), ffi.unpack(origs, n)))

    def receive(self, r, n: int) -> int:
        """A receive of up to ``n`` messages in one call (walq_qx_receive,
        whose struct ``r`` the caller filled): how many were leased, -1 for
        the general path, or WALQ_QX_RECV_UNINDEXED when the segment's
        frame index must be extended first (nothing changed either way)."""
        k = lib.walq_qx_receive(self._x, r, n)
        if k == -1 or k == _UNINDEXED:
            return k
        self._ok(k, "receive")
        if k and r.folded:
            self.applied = r.lease_seq + 1
        return k

    def receive_now(self, r, n: int, retention: float) -> int:
        """``receive`` with the pre-check, the append lock and the sweep in
        the same native call (walq_qx_receive_now; the caller holds only its
        process's locks): how many were leased, or a negative code for the
        general path (-1, WALQ_QX_RECV_UNINDEXED, or WALQ_QX_RECV_STALE when
        the index must catch up first)."""
        k = lib.walq_qx_receive_now(self._x, r, n, retention)
        if k in (-1, _UNINDEXED, _STALE):
            return k
        self._ok(k, "receive")
        if k and r.folded:
            self.applied = r.lease_seq + 1
        return k

    def delete_now(self, writer, text: bytes, n: int, queue_uid: int, seq_out) -> int:
        """A standard queue's delete of ``n`` receipt handles (56 characters
        each, concatenated in ``text``) in one call (walq_qx_delete_now; the
        caller holds its process's locks): the messages still live or not
        yet applied, each once, in a DELETE record written through the log's
        ``writer`` and, if nothing came before it, applied.  Returns how
        many it names (0: none, nothing written), its sequence in
        ``seq_out[0]``; or, with nothing written, -1 if a handle is
        malformed or another queue's or there are too many (the caller then
        decodes them one by one, which says which), WALQ_QX_DELETE_SLOW if
        the append needs the slow path."""
        k = lib.walq_qx_delete_now(self._x, writer, text, n, queue_uid, self.applied, seq_out)
        if k == -1 or k == _DELETE_SLOW:
            return k
        self._ok(k, "delete")
        if k and seq_out[0] == self.applied:
            self.applied += 1
        return k

    def append_sends(self, writer, n: int, data, lens, sent_at: float, visible_at: float, seq_out) -> bool:
        """Writes ``n`` encoded plain SENDs through the log's ``writer`` and,
        if nothing came before them, adds them (walq_qx_append_sends; the
        caller holds its process's locks).  True if written (first sequence
        in ``seq_out[0]``), False if the append needs the slow path."""
        rc = lib.walq_qx_append_sends(self._x, writer, n, data, lens, self.applied, sent_at, visible_at, seq_out)
        if rc == _APPEND_SLOW:
            return False
        self._ok(rc, "add_sends")
        if rc:
            self.applied = seq_out[0] + n
        return True

    def select_live(self, ms: list[int]) -> list[int]:
        """Those of ``ms`` still live (through redirects) or not yet applied."""
        n = len(ms)
        out = self._scratch(n)[3]
        return ffi.unpack(out, lib.walq_qx_select_live(self._x, ms, n, self.applied, out))

    def _scratch(self, n: int) -> tuple:
        """Output arrays for ``n`` messages, reused: a receive asks about
        ten at a time, and allocating four arrays a call cost more than
        the call.  (Callers hold the queue's lock, so one set suffices.)"""
        if n <= self._scratch_n:
            return self._scratch_bufs
        bufs = (ffi.new("uint32_t[]", n), ffi.new("double[]", n), ffi.new("uint64_t[]", n), ffi.new("uint64_t[]", n))
        if n <= _SCRATCH_MAX:  # a redrive's candidates(all) is not kept
            self._scratch_n, self._scratch_bufs = n, bufs
        return bufs

    # -- queries ---------------------------------------------------------------

    def state_of(self, m: int) -> int | None:
        """VISIBLE, DELAYED or INFLIGHT; None if ``m`` is not live."""
        return self._view.state if lib.walq_qx_get(self._x, m, self._view) else None

    def receive_info(self, m: int) -> tuple[int, float] | None:
        """``(receive count, first received at)``, or None if never received."""
        v = self._view
        if lib.walq_qx_get(self._x, m, v) and v.has_recv:
            return (v.count, v.first)
        return None

    def prior_of(self, m: int) -> int:
        """Receives the message carried in from another queue."""
        return self._view.prior if lib.walq_qx_get(self._x, m, self._view) else 0

    def lease_of(self, m: int) -> tuple[int, float] | None:
        """``(lease seq, deadline)`` while in flight, else None."""
        v = self._view
        if lib.walq_qx_get(self._x, m, v) and v.state == INFLIGHT:
            return (v.lease_seq, v.deadline)
        return None

    def orig_of(self, m: int) -> int:
        """The sequence whose place in line the message keeps."""
        return self._view.orig if lib.walq_qx_get(self._x, m, self._view) else m

    def live_below(self, cutoff: int, limit: int | None = None) -> list[int] | None:
        """Live sequences below ``cutoff``, ascending; None if there are
        more than ``limit`` (the search stops there)."""
        room = self._st.live if limit is None else min(limit, self._st.live)
        out = _raw_alloc("uint64_t[]", room + 1)
        k = lib.walq_qx_live_seqs(self._x, cutoff, room, out)
        self._ok(k, "live_below")
        return None if k > room else ffi.unpack(out, k)

    def live_seqs(self) -> list[int]:
        """Every live sequence, ascending."""
        return self.live_below(2**64 - 1)

    def min_live(self) -> int | None:
        """The lowest live message sequence (what pins the oldest segment)."""
        return self._u64[0] if lib.walq_qx_min_live(self._x, self._u64) else None

    def oldest_sent(self) -> float | None:
        """Send time of the oldest live message."""
        return self._dbl[0] if lib.walq_qx_oldest_sent(self._x, self._dbl) else None

    # -- checkpoints -----------------------------------------------------------

    def columns(self) -> dict[str, array]:
        """The checkpoint's tables (walq.queue.checkpoint) as arrays."""
        out = {}
        for name, buf in self.column_buffers().items():
            a = out[name] = array(_CODES[name])
            a.frombytes(buf)
        return out

    def column_buffers(self) -> dict:
        """columns() as buffers over the exported C arrays, in native byte
        order, without copying them: what a checkpoint writes (a million
        live messages make megabytes of columns)."""
        bounds = ffi.new("uint64_t[9]")
        lib.walq_qx_bounds(self._x, bounds)
        c = ffi.new("struct walq_qx_columns *")
        arrays = {}
        for t, table in enumerate(COLUMNS):
            for name, code in table:
                a = arrays[name] = _raw_alloc(_CTYPES[code], bounds[t] + 1)
                setattr(c, name, a)
        self._ok(lib.walq_qx_export(self._x, c), "export")
        out = {}
        for t, table in enumerate(COLUMNS):
            rows = c.rows[t]
            for name, code in table:
                out[name] = ffi.buffer(arrays[name], rows * _ITEMSIZE[code])
        return out

    @classmethod
    def from_columns(cls, applied: int, cols: dict) -> NativeIndex:
        """The index a checkpoint's columns describe; CorruptionError if
        they contradict each other."""
        idx = cls()
        c = ffi.new("struct walq_qx_columns *")
        keep = []
        for t, table in enumerate(COLUMNS):
            rows = {len(cols[name]) for name, _code in table}
            if len(rows) != 1:
                raise CorruptionError(f"checkpoint table {table[0][0]} has columns of different lengths")
            c.rows[t] = rows.pop()
            for name, code in table:
                col = cols[name]
                if not isinstance(col, array) or col.typecode != code:
                    # Version 1 checkpoints kept these tables as JSON rows.
                    col = array(code, col)
                buf = ffi.from_buffer(col)
                keep.append((col, buf))
                setattr(c, name, ffi.cast(ffi.typeof(getattr(c, name)), buf))
        rc = lib.walq_qx_import(idx._x, c)
        if rc == -1:
            raise CorruptionError("checkpoint tables contradict each other (a message twice or in an "
                                  "unknown state, a lease for one not in flight, or a redirect backwards)")
        _check(rc, "import")
        idx.applied = applied
        return idx

    # -- inspection ------------------------------------------------------------
    # Copies of the tables in the shape Index keeps them, built from the
    # columns (O(live)): for tests and tools; changing them changes nothing.

    @property
    def state(self) -> dict[int, int]:
        """``{seq: VISIBLE/DELAYED/INFLIGHT}`` of the live messages (a copy)."""
        c = self.columns()
        return dict(zip(c["state_seq"], c["state_val"]))

    @property
    def leases(self) -> dict[int, tuple[int, float]]:
        """``{seq: (lease seq, deadline)}`` of the messages in flight (a copy)."""
        c = self.columns()
        return dict(zip(c["lease_msg"], zip(c["lease_seq"], c["lease_deadline"])))

    @property
    def receives(self) -> dict[int, tuple[int, float]]:
        """``{seq: (receive count, first received at)}`` (a copy)."""
        c = self.columns()
        return dict(zip(c["recv_msg"], zip(c["recv_count"], c["recv_first"])))

    @property
    def prior(self) -> dict[int, int]:
        """``{seq: receives carried from another queue}`` (a copy)."""
        c = self.columns()
        return dict(zip(c["prior_msg"], c["prior_count"]))

    @property
    def orig(self) -> dict[int, int]:
        """``{seq: original seq}`` of the messages compaction copied (a copy)."""
        c = self.columns()
        return dict(zip(c["orig_seq"], c["orig_orig"]))

    @property
    def redirect(self) -> dict[int, int]:
        """``{old seq: live seq}`` left by compaction (a copy)."""
        c = self.columns()
        return dict(zip(c["redirect_old"], c["redirect_new"]))

    #: FIFO-only tables, empty for a standard queue.
    dedup: dict = {}
    group_of: dict = {}
