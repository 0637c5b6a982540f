"""Checkpoints: a queue's index saved at a log position, so that opening it
replays only the tail (recovery time follows the data since the checkpoint,
not the size of the store).

    checkpoint := magic:"WALQCKP1" applied:u64 json_len:u32 json
                  (array_len:u32 array_bytes)* checksum:u64
    checksum   := XXH3-64 of everything before it

File name ``checkpoint-%020d`` (the log sequence it covers up to, exclusive);
written tmp, fsync, rename, fsync directory.  The newest valid one wins; a
damaged one raises CorruptionError rather than being skipped.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import struct
from array import array
from collections import deque

from walq.errors import CorruptionError
from walq.log.format import hash64
from walq.queue.index import DELAYED, INFLIGHT, VISIBLE, Index

MAGIC = b"WALQCKP1"
_NAME = re.compile(r"^checkpoint-(\d{20})$")
_ARRAYS = ("state_seq", "state_val", "ret_seq", "ret_at", "delayed_at", "delayed_seq")


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


def encode(idx: Index) -> bytes:
    """Serializes an index."""
    keys = sorted(idx.state)
    state = idx.state
    ret_seq, ret_at = array("q"), array("d")
    for m, t in zip(idx.ret_seq[idx.ret_head :], idx.ret_at[idx.ret_head :]):
        if m in state:
            ret_seq.append(m)
            ret_at.append(t)
    arrays = {
        "state_seq": array("q", keys),
        "state_val": array("b", map(state.__getitem__, keys)),
        "ret_seq": ret_seq,
        "ret_at": ret_at,
        "delayed_at": array("d", [t for t, m in idx.delayed if idx.state.get(m) == DELAYED]),
        "delayed_seq": array("q", [m for t, m in idx.delayed if idx.state.get(m) == DELAYED]),
    }
    meta = {
        "fifo": idx.fifo,
        "dedup_scope": idx.dedup_scope,
        "leases": [[m, l, d] for m, (l, d) in idx.leases.items()],
        "receives": [[m, c, f] for m, (c, f) in idx.receives.items()],
        "prior": list(idx.prior.items()),
        "group_of": list(idx.group_of.items()),
        "dedup": [[k, mid.hex(), s, t] for k, (mid, s, t) in idx.dedup.items()],
        "ret_late": [[t, m] for t, m in idx.ret_late if m in state],
        "redirect": list(idx.redirect.items()),
        "orig": list(idx.orig.items()),
    }
    blob = json.dumps(meta, separators=(",", ":")).encode()
    parts = [MAGIC, struct.pack("<QI", idx.applied, len(blob)), blob]
    for name in _ARRAYS:
        raw = arrays[name].tobytes()
        parts += [struct.pack("<I", len(raw)), raw]
    body = b"".join(parts)
    return body + struct.pack("<Q", hash64(body))


def decode(raw: bytes, path: str) -> Index:
    """Rebuilds an index; CorruptionError if the file does not validate."""
    if len(raw) < 28 or raw[:8] != MAGIC or struct.unpack_from("<Q", raw, len(raw) - 8)[0] != hash64(raw[:-8]):
        raise CorruptionError(f"checkpoint {path} does not validate", path, 0)
    applied, blen = struct.unpack_from("<QI", raw, 8)
    pos = 20
    meta = json.loads(raw[pos : pos + blen])
    pos += blen
    arrays = {}
    for name, code in zip(_ARRAYS, "qbqddq"):
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        a = array(code)
        a.frombytes(raw[pos : pos + n])
        pos += n
        arrays[name] = a
    idx = Index(meta["fifo"], meta["dedup_scope"])
    idx.applied = applied
    seqs, vals = arrays["state_seq"], arrays["state_val"]
    idx.state = dict(zip(seqs, vals))
    idx.counts = [vals.count(VISIBLE), vals.count(DELAYED), vals.count(INFLIGHT)]
    idx.ret_seq, idx.ret_at = arrays["ret_seq"], arrays["ret_at"]
    idx.ret_late = [(t, m) for t, m in meta.get("ret_late", [])]
    idx.redirect = {o: n for o, n in meta.get("redirect", [])}
    for o, n in idx.redirect.items():
        idx.aliases.setdefault(n, []).append(o)
    idx.orig = {int(n): o for n, o in meta.get("orig", [])}
    heapq.heapify(idx.ret_late)
    idx.leases = {m: (l, d) for m, l, d in meta["leases"]}
    idx.lease_heap = [(d, m, l) for m, (l, d) in idx.leases.items()]
    heapq.heapify(idx.lease_heap)
    idx.receives = {m: (c, f) for m, c, f in meta["receives"]}
    idx.prior = {int(m): c for m, c in meta["prior"]}
    idx.delayed = list(zip(arrays["delayed_at"], arrays["delayed_seq"]))
    heapq.heapify(idx.delayed)
    if idx.fifo:
        idx.group_of = {int(m): g for m, g in meta["group_of"]}
        idx.dedup = {k: (bytes.fromhex(mid), s, t) for k, mid, s, t in meta["dedup"]}
        idx.dedup_order = deque(sorted((t, k) for k, (_m, _s, t) in idx.dedup.items()))
        for m, st in idx.state.items():
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
    else:
        # state_seq is sorted, so the visible seqs already form a heap.
        # Reuse the dict's int objects: a second copy of a million ints
        # would cost ~30 MB.
        state, orig = idx.state, idx.orig
        if idx.counts[VISIBLE] == len(seqs) and not orig:
            idx.visible = list(state)
        else:
            # Keyed by original sequence (Index.visible); orig.get returns
            # the dict's own int when there is no entry.
            idx.visible = [orig.get(m, m) for m in state if state[m] == VISIBLE]
            heapq.heapify(idx.visible)
    return idx


def load_newest(directory: str) -> Index | None:
    """The newest checkpoint's index, or None if there is none."""
    for _attempt in range(20):
        positions = list_checkpoints(directory)
        if not positions:
            return None
        path = os.path.join(directory, checkpoint_name(positions[-1]))
        try:
            with open(path, "rb") as f:
                return decode(f.read(), path)
        except FileNotFoundError:
            continue  # a newer one replaced it between the listing and the open
    raise CorruptionError(f"checkpoints in {directory} keep vanishing while being read", directory)


def save(idx: Index, directory: str, io) -> int:
    """Writes a checkpoint durably, then removes older ones; returns its position."""
    path = os.path.join(directory, checkpoint_name(idx.applied))
    io.write_file_atomic(path, encode(idx))
    for pos in list_checkpoints(directory):
        if pos < idx.applied:
            io.unlink(os.path.join(directory, checkpoint_name(pos)))
    return idx.applied
