"""Checkpoints: a queue's index saved at a log position, so that opening it
replays only the tail (recovery time follows the data since the checkpoint,
not the size of the store).

    checkpoint := magic:"WALQCKP2" applied:u64 json_len:u32 json
                  (array_len:u32 array_bytes)*20 checksum:u64
    json       := {"fifo", "dedup_scope", "group_of": [[seq, group]*],
                   "dedup": [[key, message_id_hex, seq, sent_at]*]}
    arrays     := state_seq:i64* state_val:i8*            live messages, seq ascending
                  ret_seq:i64* ret_at:f64*                retention order, live only
                  delayed_at:f64* delayed_seq:i64*        delayed heap, live only
                  lease_msg:i64* lease_seq:i64* lease_deadline:f64*
                  recv_msg:i64* recv_count:i64* recv_first:f64*
                  prior_msg:i64* prior_count:i64*
                  late_at:f64* late_seq:i64*              ret_late, live only
                  redirect_old:i64* redirect_new:i64*
                  orig_seq:i64* orig_orig:i64*
    checksum   := XXH3-64 of everything before it

Each line of ``arrays`` is one table stored as columns of equal length,
little-endian.  Still read: ``WALQCKP1``, the first six arrays with the
other tables as JSON rows (docs/format.md has both).

File name ``checkpoint-%020d`` (the log sequence it covers up to, exclusive);
written tmp, fsync, rename, fsync directory.  The newest valid one wins; a
damaged one raises CorruptionError rather than being skipped.

Encoding and decoding run in C-level loops (``map``, ``compress``, array
and bytes operations) rather than per-message Python code: a process that
comes due writes one every 50,000 operations, in the path of its caller.
"""

from __future__ import annotations

import heapq
import json
import operator
import os
import re
import struct
import sys
from array import array
from bisect import bisect_left
from collections import deque
from itertools import compress, repeat
from operator import itemgetter

from walq.errors import CorruptionError
from walq.log._native import lib
from walq.log.format import hash64
from walq.queue.index import DELAYED, INFLIGHT, VISIBLE, Index
from walq.queue.native_index import NativeIndex, native_index_enabled

MAGIC = b"WALQCKP2"
MAGIC_V1 = b"WALQCKP1"
_NAME = re.compile(r"^checkpoint-(\d{20})$")
_V1_ARRAYS = (("state_seq", "q"), ("state_val", "b"), ("ret_seq", "q"), ("ret_at", "d"),
              ("delayed_at", "d"), ("delayed_seq", "q"))
_ARRAYS = _V1_ARRAYS + (
    ("lease_msg", "q"), ("lease_seq", "q"), ("lease_deadline", "d"),
    ("recv_msg", "q"), ("recv_count", "q"), ("recv_first", "d"),
    ("prior_msg", "q"), ("prior_count", "q"),
    ("late_at", "d"), ("late_seq", "q"),
    ("redirect_old", "q"), ("redirect_new", "q"),
    ("orig_seq", "q"), ("orig_orig", "q"),
)
_SWAP = sys.byteorder != "little"
#: state_val bytes -> 1 where VISIBLE, else 0 (a selector for compress).
_VISIBLE_MASK = bytes.maketrans(bytes([VISIBLE, DELAYED, INFLIGHT]), bytes([1, 0, 0]))
#: The retention order is filtered in pieces this long (see _live_runs):
#: shorter pieces find more all-live runs, at ~2 us of overhead each.
_RET_PIECE = 1024


def checkpoint_name(applied: int) -> str:
    """File name of the checkpoint covering the log up to ``applied``."""
    return f"checkpoint-{applied:020d}"


def list_checkpoints(directory: str) -> list[int]:
    """Positions of the checkpoints in ``directory``, oldest first."""
    out = []
    for name in os.listdir(directory):
        m = _NAME.match(name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


# -- encoding ------------------------------------------------------------------


def encode(idx: Index | NativeIndex) -> bytes:
    """Serializes an index (format ``WALQCKP2``, see the module docstring)."""
    if isinstance(idx, NativeIndex):
        meta = {"fifo": False, "dedup_scope": idx.dedup_scope, "group_of": [], "dedup": []}
        if _SWAP:
            cols = idx.columns()
            return _frame(idx.applied, meta, {name: [_as_array(code, cols[name])] for name, code in _ARRAYS})
        bufs = idx.column_buffers()
        return _frame(idx.applied, meta, {name: [bufs[name]] for name, _code in _ARRAYS})
    state = idx.state
    keys = list(state)
    ordered = sorted(keys)
    # Sends enter the dict in log order, so it is almost always ascending
    # already; then its values are in order too (sorting a sorted list is
    # one pass, and the comparison meets the same objects).
    if ordered == keys:
        vals = bytes(state.values())
    else:
        vals = bytes(map(state.__getitem__, ordered))
    state_seq = array("q", ordered)
    runs = _live_runs(idx, state_seq)
    delayed_at, delayed_seq = _live_delayed(idx)
    lease_seq, lease_deadline = _columns(idx.leases.values(), 2)
    recv_count, recv_first = _columns(idx.receives.values(), 2)
    late_at, late_seq = _columns([e for e in idx.ret_late if e[1] in state], 2)
    columns = {
        "state_seq": state_seq, "state_val": vals,
        "delayed_at": delayed_at, "delayed_seq": delayed_seq,
        "lease_msg": list(idx.leases), "lease_seq": lease_seq, "lease_deadline": lease_deadline,
        "recv_msg": list(idx.receives), "recv_count": recv_count, "recv_first": recv_first,
        "prior_msg": list(idx.prior), "prior_count": list(idx.prior.values()),
        "late_at": late_at, "late_seq": late_seq,
        "redirect_old": list(idx.redirect), "redirect_new": list(idx.redirect.values()),
        "orig_seq": list(idx.orig), "orig_orig": list(idx.orig.values()),
    }
    meta = {
        "fifo": idx.fifo,
        "dedup_scope": idx.dedup_scope,
        "group_of": list(idx.group_of.items()),
        "dedup": [[k, mid.hex(), s, t] for k, (mid, s, t) in idx.dedup.items()],
    }
    bufs = {name: [_as_array(code, columns[name])] for name, code in _ARRAYS if name in columns}
    bufs["ret_seq"] = _gather(idx.ret_seq, runs)
    bufs["ret_at"] = _gather(idx.ret_at, runs)
    # The views into ret_seq/ret_at pin those arrays' size (an array cannot
    # resize while exported) until this function returns.
    return _frame(idx.applied, meta, bufs)


def _frame(applied: int, meta: dict, bufs: dict[str, list]) -> bytes:
    """The checkpoint file: header, JSON, each array (as buffers in
    ``bufs[name]``, little-endian) and the checksum."""
    blob = json.dumps(meta, separators=(",", ":")).encode()
    parts = [MAGIC, struct.pack("<QI", applied, len(blob)), blob]
    for name, _code in _ARRAYS:
        parts.append(struct.pack("<I", sum(memoryview(b).nbytes for b in bufs[name])))
        parts += bufs[name]
    body = b"".join(parts)
    return body + struct.pack("<Q", hash64(body))


def _as_array(code: str, values) -> array:
    """``values`` as a little-endian array of ``code`` (bytes.join takes it as is)."""
    if isinstance(values, array) and values.typecode == code and not _SWAP:
        return values
    a = array(code, values)
    if _SWAP:
        a.byteswap()
    return a


def _gather(a: array, runs: list[tuple[int, int]]) -> list:
    """The entries of ``a`` in ``runs``, as little-endian buffers for
    bytes.join: views, not copies (a million entries copied twice cost
    ~15 ms, mostly page faults)."""
    view = memoryview(a)
    parts = [view[start:stop] for start, stop in runs]
    if _SWAP:
        out = array(a.typecode, b"".join(parts))
        out.byteswap()
        return [out]
    return parts


def _columns(rows, width: int) -> tuple[list, ...]:
    """Transposes an iterable of ``width``-tuples into ``width`` lists.

    (``zip(*rows)`` builds one argument per row: ~3x slower at 1M rows.)
    """
    rows = rows if isinstance(rows, list) else list(rows)
    return tuple(list(map(itemgetter(i), rows)) for i in range(width))


def _live_delayed(idx: Index) -> tuple[list[float], list[int]]:
    """The delayed heap's entries whose message is still delayed, in heap order."""
    at, seqs = _columns(idx.delayed, 2)
    # operator.eq, not DELAYED.__eq__: a missing message's None must compare
    # False, not NotImplemented (which is true).
    live = list(map(operator.eq, map(idx.state.get, seqs), repeat(DELAYED)))
    if all(live):
        return at, seqs
    return list(compress(at, live)), list(compress(seqs, live))


def _live_runs(idx: Index, keys: array) -> list[tuple[int, int]]:
    """Where the retention order holds live messages: ``[start, stop)``
    ranges of ``ret_seq`` from ``ret_head`` on, ascending.

    Deleted messages stay in the retention order until a sweep compacts it
    (up to two dead entries per live one), so each entry must be checked;
    doing that one by one, a dict lookup each (cache misses, ~250 ns), was
    most of encode().  But the order (log order) and ``keys`` (the live
    sequences, sorted) both ascend, so live entries come in runs that
    appear in ``keys`` unchanged.  The order is taken in pieces: one equal
    to a slice of ``keys`` (one memcmp) is all live; one with no key
    between its min and max is all dead; in any other, each entry is looked
    up among the few keys in that range.

    Invariant: ``keys`` is sorted (encode sorted it): the second and third
    checks need that to be sound (the first holds for any ``keys``).  The
    order's ascending only makes them fast: were it misordered, encode
    would be slower, never wrong.
    """
    rs = idx.ret_seq
    end = len(rs)
    runs: list[tuple[int, int]] = []

    def add(start: int, stop: int) -> None:
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], stop)
        else:
            runs.append((start, stop))

    for lo in range(idx.ret_head, end, _RET_PIECE):
        piece = rs[lo : lo + _RET_PIECE]
        j = bisect_left(keys, piece[0])
        if keys[j : j + len(piece)] == piece:
            add(lo, lo + len(piece))
            continue
        low, high = min(piece), max(piece)
        j = bisect_left(keys, low)
        k = bisect_left(keys, high + 1, j)
        if j == k:
            continue  # no live message in this piece
        near = set(keys[j:k]) if k - j <= 4 * len(piece) else idx.state
        live = bytes(map(near.__contains__, piece))
        start = live.find(1)
        while start != -1:
            stop = live.find(0, start)
            if stop == -1:
                stop = len(live)
            add(lo + start, lo + stop)
            start = live.find(1, stop)
    return runs


# -- decoding ------------------------------------------------------------------


def decode(raw: bytes, path: str) -> Index | NativeIndex:
    """Rebuilds an index from a ``WALQCKP2`` or ``WALQCKP1`` checkpoint;
    CorruptionError if the file does not validate."""
    return _build(*_parse(raw, path))


def _parse(raw: bytes, path: str) -> tuple[int, dict, dict]:
    """``(applied, meta, columns)`` of a checkpoint's bytes, copied out of
    them: load_newest drops the file's bytes before the index is built, which
    keeps them out of the peak (25 MB at a million messages)."""
    # The checksum covers all but its own 8 bytes: hashed in place (a
    # slice would copy the whole file once more).
    if (len(raw) < 28 or raw[:8] not in (MAGIC, MAGIC_V1)
            or struct.unpack_from("<Q", raw, len(raw) - 8)[0] != lib.walq_hash(raw, len(raw) - 8, 0)):
        raise CorruptionError(f"checkpoint {path} does not validate", path, 0)
    applied, blen = struct.unpack_from("<QI", raw, 8)
    pos = 20
    meta = json.loads(raw[pos : pos + blen])
    pos += blen
    version2 = raw[:8] == MAGIC
    view = memoryview(raw)
    cols: dict = {}
    for name, code in _ARRAYS if version2 else _V1_ARRAYS:
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        a = array(code)
        a.frombytes(view[pos : pos + n])
        # Version 1 wrote the host's byte order; version 2 little-endian.
        if version2 and _SWAP:
            a.byteswap()
        pos += n
        cols[name] = a
    if not version2:
        cols.update(_v1_columns(meta))
    return applied, meta, cols


def _v1_columns(meta: dict) -> dict:
    """Version 1 kept these tables as JSON rows: the same columns from them."""
    cols = {}
    tables = (("leases", ("lease_msg", "lease_seq", "lease_deadline")),
              ("receives", ("recv_msg", "recv_count", "recv_first")),
              ("prior", ("prior_msg", "prior_count")),
              ("ret_late", ("late_at", "late_seq")),
              ("redirect", ("redirect_old", "redirect_new")),
              ("orig", ("orig_seq", "orig_orig")))
    for key, names in tables:
        cols.update(zip(names, _columns(meta.get(key, []), len(names))))
    return cols


def _build(applied: int, meta: dict, c: dict) -> Index | NativeIndex:
    """The index the decoded columns describe (both versions end here)."""
    if not meta["fifo"] and native_index_enabled():
        return NativeIndex.from_columns(applied, c)
    idx = Index(meta["fifo"], meta["dedup_scope"])
    idx.applied = applied
    seqs, vals = c["state_seq"], c["state_val"].tobytes()
    idx.state = state = dict(zip(seqs, vals))
    idx.counts = [vals.count(VISIBLE), vals.count(DELAYED), vals.count(INFLIGHT)]
    idx.ret_seq, idx.ret_at = c["ret_seq"], c["ret_at"]
    idx.ret_late = list(zip(c["late_at"], c["late_seq"]))
    heapq.heapify(idx.ret_late)
    idx.redirect = dict(zip(c["redirect_old"], c["redirect_new"]))
    for o, n in idx.redirect.items():
        idx.aliases.setdefault(n, []).append(o)
    idx.orig = orig = dict(zip(c["orig_seq"], c["orig_orig"]))
    idx.leases = dict(zip(c["lease_msg"], zip(c["lease_seq"], c["lease_deadline"])))
    idx.lease_heap = list(zip(c["lease_deadline"], c["lease_msg"], c["lease_seq"]))
    heapq.heapify(idx.lease_heap)
    idx.receives = dict(zip(c["recv_msg"], zip(c["recv_count"], c["recv_first"])))
    idx.prior = dict(zip(c["prior_msg"], c["prior_count"]))
    idx.delayed = list(zip(c["delayed_at"], c["delayed_seq"]))
    heapq.heapify(idx.delayed)
    if idx.fifo:
        idx.group_of = {int(m): g for m, g in meta["group_of"]}
        idx.dedup = {k: (bytes.fromhex(mid), s, t) for k, mid, s, t in meta["dedup"]}
        idx.dedup_order = deque(sorted((t, k) for k, (_m, _s, t) in idx.dedup.items()))
        for m, st in state.items():
            g = idx.group_of[m]
            if st == VISIBLE:
                idx.groups.setdefault(g, []).append(m)
            elif st == INFLIGHT:
                idx.group_inflight[g] = idx.group_inflight.get(g, 0) + 1
        for g, heap in idx.groups.items():
            heapq.heapify(heap)
            if not idx.group_inflight.get(g):
                idx.ready.append((heap[0], g))
        heapq.heapify(idx.ready)
    elif idx.counts[VISIBLE] == len(seqs) and not orig:
        # state_seq is sorted, so the visible seqs already form a heap.
        # Reuse the dict's int objects: a second copy of a million ints
        # would cost ~30 MB.
        idx.visible = list(state)
    else:
        # Keyed by original sequence (Index.visible); orig.get returns the
        # dict's own int when there is no entry.  The dict iterates in
        # state_seq's order, the order of the mask.
        visible = list(compress(state, vals.translate(_VISIBLE_MASK)))
        idx.visible = list(map(orig.get, visible, visible)) if orig else visible
        heapq.heapify(idx.visible)
    return idx


# -- files ---------------------------------------------------------------------


def load_newest(directory: str, first: int | None = None) -> Index | NativeIndex | None:
    """The newest checkpoint's index, or None if there is none.

    ``first`` is the log's first record, read before this call: the
    checkpoint must cover every record below it (CorruptionError naming the
    lost range if none does - a deleted checkpoint file must not open as a
    queue without the messages it held).  A trim raises the first record
    only after writing a checkpoint at least that new, so reading ``first``
    before listing never sees a live compaction as a gap.
    """
    for _attempt in range(20):
        positions = list_checkpoints(directory)
        if first is not None and first > (positions[-1] if positions else 0):
            covered = positions[-1] if positions else 0
            raise CorruptionError(
                f"the log in {directory} starts at record {first}, but "
                + (f"the newest checkpoint covers only records below {covered}"
                   if positions else "there is no checkpoint")
                + f": records {covered}-{first - 1} are gone (a checkpoint or segment file was deleted)",
                directory)
        if not positions:
            return None
        path = os.path.join(directory, checkpoint_name(positions[-1]))
        try:
            with open(path, "rb") as f:
                parsed = _parse(f.read(), path)
            return _build(*parsed)
        except FileNotFoundError:
            continue  # a newer one replaced it between the listing and the open
        except CorruptionError as exc:
            if first == 0:
                why = ("the log still holds every record from 0, so nothing is lost: `walq repair` sets the "
                       "checkpoint aside and replays the log")
            else:
                why = ("`walq repair` falls back to an older checkpoint, or to the records the log still "
                       f"holds from {first}" if first is not None else "")
            raise CorruptionError(f"{exc.args[0].split('; run `walq repair')[0]}: {why}" if why else str(exc),
                                  exc.path, exc.offset) from None
    raise CorruptionError(f"checkpoints in {directory} keep vanishing while being read", directory)


def set_aside_ahead(directory: str, end: int, io) -> list[str]:
    """Renames the checkpoints that claim records at or above ``end`` (the
    log's end as recovery found it) to ``checkpoint-N.ahead-of-log``;
    returns their new paths.

    A checkpoint is written only after the log is durable up to it, so one
    ahead of the log is from an older walq, or the log lost synced records
    (damage, which recovery reports on its own).  Trusted, it would make
    every index skip the records written next, at sequences it claims to
    have applied; set aside, the queue loads an older checkpoint or replays
    the log (and is reported damaged if the log no longer allows that).
    """
    moved = []
    for pos in list_checkpoints(directory):
        if pos > end:
            src = os.path.join(directory, checkpoint_name(pos))
            dst = src + ".ahead-of-log"
            io.rename(src, dst)
            moved.append(dst)
    if moved:
        io.fsync_dir(directory)
    return moved


def save(idx: Index, directory: str, io) -> int:
    """Writes a checkpoint durably, then removes older ones; returns its position."""
    path = os.path.join(directory, checkpoint_name(idx.applied))
    io.write_file_atomic(path, encode(idx))
    for pos in list_checkpoints(directory):
        if pos < idx.applied:
            io.unlink(os.path.join(directory, checkpoint_name(pos)))
    return idx.applied
