"""The in-memory index of one queue: which messages are visible, delayed or
in flight, rebuilt from a checkpoint plus the log tail.

The index is a pure function of the records applied (``apply``) and of the
time passed to ``sweep``; every process builds the same one from the same
log, so decisions taken under the queue's append lock agree across processes.
It holds no message bodies: those stay in the log and are read on delivery.

Heaps are invalidated lazily: an entry counts only while ``state`` agrees
with it, so removing a message is O(1) and the heaps are cleaned as popped.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque

from walq.log._native import ffi, lib
from walq.log.log import RunBuffers
from walq.queue import records as R
from walq.queue.attributes import DEDUP_WINDOW_S

VISIBLE, DELAYED, INFLIGHT = 0, 1, 2
#: How far out of send-time order a message may arrive and still join the
#: retention order (rather than the heap of late arrivals).
RET_SLACK_S = 1.0
#: Stale heap entries tolerated beyond the live ones before a heap is filtered.
HEAP_SLACK = 4096


class Index:
    """State of every live message of one queue."""

    def __init__(self, fifo: bool, dedup_scope: str = "queue"):
        self.fifo = fifo
        self.dedup_scope = dedup_scope
        self.applied = 0  # next log sequence to apply
        self.ops = 0  # message operations applied (checkpoint pacing)
        self.state: dict[int, int] = {}  # msg seq -> VISIBLE/DELAYED/INFLIGHT
        self.counts = [0, 0, 0]
        # Standard queues: heap of the visible messages' original sequences
        # (a message compaction copied forward keeps its place in line; the
        # redirect from its original sequence finds its copy).
        self.visible: list[int] = []
        self.delayed: list[tuple[float, int]] = []  # heap (visible_at, seq)
        self.leases: dict[int, tuple[int, float]] = {}  # seq -> (lease seq, deadline)
        self.lease_heap: list[tuple[float, int, int]] = []  # (deadline, seq, lease seq)
        self.receives: dict[int, tuple[int, float]] = {}  # seq -> (count, first received at)
        self.prior: dict[int, int] = {}  # seq -> receives carried from another queue
        # Retention sweep order: sends in log order (times are nearly sorted).
        self.ret_seq = array("q")
        self.ret_at = array("d")
        self.ret_head = 0
        # Sends older than the retention order's tail by more than
        # RET_SLACK_S (messages moved in from another queue keep their send
        # time): a heap (sent_at, seq), so that they expire on time too.
        self.ret_late: list[tuple[float, int]] = []
        # FIFO only.
        self.group_of: dict[int, str] = {}
        self.groups: dict[str, list[int]] = {}  # group -> heap of visible seqs
        self.ready: list[tuple[int, str]] = []  # heap (head seq, group), lazily valid
        self.group_inflight: dict[str, int] = {}
        self.dedup: dict[str, tuple[bytes, int, float]] = {}  # key -> (message id, seq, sent_at)
        self.dedup_order: deque[tuple[float, str]] = deque()
        # Compaction rewrites a message under a new sequence (CARRY): old
        # receipts follow `redirect`; FIFO messages keep their sequence number.
        self.redirect: dict[int, int] = {}  # old seq -> live seq (chains compressed)
        self.aliases: dict[int, list[int]] = {}  # live seq -> old seqs redirected to it
        self.orig: dict[int, int] = {}

    # -- applying records ----------------------------------------------------

    def apply(self, seq: int, type: int, payload: bytes) -> None:
        """Folds one log record into the index."""
        self.ops += 1 if type == R.SEND else 1 + len(payload) // 16
        if type == R.SEND:
            sent, vis, prior, group, dedup, mid = R.decode_send_head(payload)
            self._add(seq, sent, vis, prior, group, dedup, mid)
        elif type == R.LEASE:
            (self._apply_lease_fifo if self.fifo else self._apply_lease)(seq, payload)
        elif type == R.HIDE:
            for m, deadline in R.decode_hide(payload):
                if m in self.state:
                    self._lease(m, seq, deadline)
        elif type == R.CHVIS:
            for m, lease_seq, deadline in R.decode_chvis(payload):
                cur = self.leases.get(m)
                if cur is not None and cur[0] == lease_seq:
                    self.leases[m] = (lease_seq, deadline)
                    heapq.heappush(self.lease_heap, (deadline, m, lease_seq))
                    self._trim_leases()
        elif type == R.DELETE and not self.fifo and not self.aliases:
            self._apply_delete(payload)
        elif type in (R.DELETE, R.MOVED):
            # A standard queue's deletes are written without the lock, so the
            # receipt's sequence may have been rewritten (CARRY) since: follow
            # the redirect here, where every process resolves it alike.
            for m in R.decode_seqs(payload):
                self.remove(self.resolve(m))
        elif type == R.CARRY:
            for new, old, lease_seq, deadline, orig in R.decode_carry(payload):
                st = self.state.get(old)
                if st is None:
                    self.remove(new)  # the original went first: so does its copy
                    continue
                moved = self.aliases.pop(old, [])
                self.remove(old)
                moved.append(old)
                for k in moved:
                    self.redirect[k] = new
                self.aliases[new] = moved
                if orig != new:
                    self.orig[new] = orig
                    if not self.fifo and self.state.get(new) == VISIBLE:
                        # Its place in line is the original's (see visible).
                        heapq.heappush(self.visible, orig)
                if st == INFLIGHT and new in self.state:
                    self._lease(new, lease_seq, deadline)
        elif type == R.PURGE:
            upto = R.decode_purge(payload)
            for m in [m for m in self.state if m < upto]:
                self.remove(m)
            self._compact_heaps()
        self.applied = seq + 1

    def apply_frames(self, mm, seq0: int, offs: list[int], lens: list[int], types: list[int]) -> None:
        """Folds a run of records given as lists (payload ``i`` is
        ``mm[offs[i] : offs[i] + lens[i]]``): apply_run for callers that
        hold Python lists rather than a Log.frame_run."""
        n = len(offs)
        if not n:
            return
        buf = RunBuffers(n)
        buf.poffs[0:n] = offs
        buf.lens[0:n] = lens
        buf.types[0:n] = types
        base = ffi.from_buffer(mm)
        try:
            self.apply_run(mm, base, seq0, n, buf)
        finally:
            # A view left exported keeps the map from being closed (a
            # segment trimmed or remapped later would raise BufferError).
            ffi.release(base)

    def apply_run(self, mm, base, seq0: int, n: int, buf) -> None:
        """Folds records ``seq0 .. seq0 + n`` as Log.frame_run left them in
        ``buf`` (``base`` points at ``mm``).

        The hot case - a standard queue's plain sends - is found in C and
        applied in bulk; everything else goes through apply(), which takes
        a standard queue's LEASE and DELETE by their inlined paths.
        """
        poffs, lens, types = buf.poffs, buf.lens, buf.types
        if self.fifo:
            for i in range(n):
                off = poffs[i]
                self.apply(seq0 + i, types[i], mm[off : off + lens[i]])
            return
        sent = buf.sent
        run = lib.walq_plain_send_run
        ra = self.ret_at
        i = 0
        while i < n:
            k = run(base, poffs + i, lens + i, types + i, n - i,
                    len(ra) > 0, ra[-1] if ra else 0.0, RET_SLACK_S, sent)
            if k:
                ra.frombytes(ffi.buffer(sent, 8 * k))
                self._add_bulk(range(seq0 + i, seq0 + i + k))
                i += k
                if i == n:
                    break
            off = poffs[i]
            self.apply(seq0 + i, types[i], mm[off : off + lens[i]])
            i += 1
        self.applied = seq0 + n

    def _apply_lease_fifo(self, seq: int, payload: bytes) -> None:
        """apply() of a LEASE through the general helpers (FIFO groups)."""
        now, entries = R.decode_lease(payload)
        for m, deadline in entries:
            if m in self.state:
                count, first = self.receives.get(m, (self.prior.get(m, 0), now))
                self.receives[m] = (count + 1, first)
                self._lease(m, seq, deadline)

    def _apply_lease(self, seq: int, payload: bytes) -> None:
        """apply() of a standard queue's LEASE, inlined: every consumer
        replays every other consumer's receives, under the append lock.
        (apply() counted the operations.)"""
        now = R.F64.unpack_from(payload)[0]
        state, counts, leases, receives, prior = self.state, self.counts, self.leases, self.receives, self.prior
        heap = self.lease_heap
        for m, deadline in R.SEQ_DL.iter_unpack(payload[8:]):
            st = state.get(m)
            if st is None:
                continue
            r = receives.get(m)
            receives[m] = (r[0] + 1, r[1]) if r is not None else (prior.get(m, 0) + 1, now)
            if st != INFLIGHT:
                counts[st] -= 1
                counts[INFLIGHT] += 1
                state[m] = INFLIGHT
            leases[m] = (seq, deadline)
            heapq.heappush(heap, (deadline, m, seq))
        self._trim_leases()

    def _apply_delete(self, payload: bytes) -> None:
        """apply() of a standard queue's DELETE when no message has been
        rewritten (no redirects to follow, no aliases to drop), inlined.
        (The caller counted the operations.)"""
        state, counts, leases, receives, prior = self.state, self.counts, self.leases, self.receives, self.prior
        orig = self.orig
        for (m,) in R.SEQ.iter_unpack(payload):
            st = state.pop(m, None)
            if st is None:
                continue  # no aliases means no redirects: nothing to follow
            counts[st] -= 1
            if st == INFLIGHT:
                del leases[m]
            receives.pop(m, None)
            if prior:
                prior.pop(m, None)
            if orig:
                orig.pop(m, None)

    def add_sends(self, seqs: range, sent_at: float, visible_at: float) -> None:
        """Folds in a run of a standard queue's plain SENDs (no attributes,
        group or prior receives) sent at one time, as written by the caller
        just now: the same as applying their records."""
        ra = self.ret_at
        if visible_at > sent_at or (ra and sent_at < ra[-1] - RET_SLACK_S):
            for seq in seqs:
                self.ops += 1
                self._add(seq, sent_at, visible_at, 0, None, None, b"")
            self.applied = seqs[-1] + 1
            return
        ra.frombytes(R.F64.pack(sent_at) * len(seqs))
        self._add_bulk(seqs)

    def _add_bulk(self, seqs: list[int]) -> None:
        # Their send times are already in ret_at.  New sends carry sequences
        # above every message in the heap, so appending keeps it a heap.
        self.ret_seq.extend(seqs)
        self.state.update(dict.fromkeys(seqs, VISIBLE))
        self.counts[VISIBLE] += len(seqs)
        self.visible.extend(seqs)
        self.ops += len(seqs)
        self.applied = seqs[-1] + 1

    def _add(self, seq, sent, vis, prior, group, dedup, mid) -> None:
        if prior:
            self.prior[seq] = prior
        ra = self.ret_at
        if len(ra) > self.ret_head and sent < ra[-1] - RET_SLACK_S:
            heapq.heappush(self.ret_late, (sent, seq))
        else:
            # Concurrent senders' clocks interleave by microseconds; within
            # the slack the order is close enough (delivery re-checks).
            self.ret_seq.append(seq)
            ra.append(sent)
        if self.fifo:
            self.group_of[seq] = group or ""
            if dedup:
                key = self.dedup_key(group, dedup)
                cur = self.dedup.get(key)
                # Replace an entry whose window had ended by this send: a
                # replay (no sweep between records) still holds it, and
                # keeping it forgot the newer send once the old one expired.
                if cur is None or cur[2] <= sent - DEDUP_WINDOW_S:
                    self.dedup[key] = (mid, seq, sent)
                    self.dedup_order.append((sent, key))
        if vis > sent:
            self._set(seq, DELAYED)
            heapq.heappush(self.delayed, (vis, seq))
        else:
            self._make_visible(seq)

    def dedup_key(self, group: str | None, dedup_id: str) -> str:
        """The dedup window's key under the queue's dedup scope."""
        return f"{group}\x00{dedup_id}" if self.dedup_scope == "group" else dedup_id

    def _set(self, seq: int, st: int) -> None:
        old = self.state.get(seq)
        if old is not None:
            self.counts[old] -= 1
        self.state[seq] = st
        self.counts[st] += 1

    def _make_visible(self, seq: int) -> None:
        self._set(seq, VISIBLE)
        if self.fifo:
            g = self.group_of[seq]
            heap = self.groups.setdefault(g, [])
            heapq.heappush(heap, seq)
            if heap[0] == seq and not self.group_inflight.get(g):
                heapq.heappush(self.ready, (seq, g))
        else:
            heapq.heappush(self.visible, self.orig.get(seq, seq))

    def _lease(self, m: int, lease_seq: int, deadline: float) -> None:
        if self.fifo and self.state[m] != INFLIGHT:
            g = self.group_of[m]
            self.group_inflight[g] = self.group_inflight.get(g, 0) + 1
        self._set(m, INFLIGHT)
        self.leases[m] = (lease_seq, deadline)
        heapq.heappush(self.lease_heap, (deadline, m, lease_seq))
        self._trim_leases()

    def _trim_leases(self) -> None:
        # A lease's entry stays until its deadline even after its message
        # is deleted: receive rate x visibility timeout of them, without
        # bound for long timeouts.  Dropped once they outnumber the live
        # ones (amortized O(1) a lease; native/qindex.c does the same).
        if len(self.lease_heap) > 2 * len(self.leases) + HEAP_SLACK:
            self.lease_heap = [e for e in self.lease_heap if self.leases.get(e[1]) == (e[2], e[0])]
            heapq.heapify(self.lease_heap)

    def _unlease(self, m: int) -> None:
        del self.leases[m]
        if self.fifo:
            g = self.group_of[m]
            left = self.group_inflight[g] - 1
            if left:
                self.group_inflight[g] = left
            else:
                del self.group_inflight[g]
                heap = self.groups.get(g)
                if heap:
                    heapq.heappush(self.ready, (heap[0], g))

    def resolve(self, m: int) -> int:
        """The live sequence of the message a receipt names (after rewrites).

        Invariant: every redirect points at a live message - each rewrite
        repoints the older aliases, and removing a message drops its aliases -
        so this is one lookup, and the table holds only live messages' aliases.
        """
        return m if m in self.state else self.redirect.get(m, m)

    def remove(self, m: int) -> None:
        """Forgets a message (deleted, moved, purged or expired)."""
        st = self.state.pop(m, None)
        self.orig.pop(m, None)
        for k in self.aliases.pop(m, ()):
            self.redirect.pop(k, None)
        if st is None:
            return
        self.counts[st] -= 1
        if st == INFLIGHT:
            self._unlease(m)
        self.receives.pop(m, None)
        self.prior.pop(m, None)
        if self.fifo:
            g = self.group_of.pop(m)
            heap = self.groups.get(g)
            if heap and heap[0] == m:
                self._clean_group(g)

    def _clean_group(self, g: str) -> None:
        heap = self.groups.get(g)
        while heap and self.state.get(heap[0]) != VISIBLE:
            heapq.heappop(heap)
        if not heap:
            self.groups.pop(g, None)
        elif not self.group_inflight.get(g):
            heapq.heappush(self.ready, (heap[0], g))

    # -- time ------------------------------------------------------------------

    def sweep(self, now: float, retention: float) -> None:
        """Applies the passage of time: leases run out, delays end, retention
        expires.  Deterministic in ``now``, so it needs no records.

        Invariant: callers sweep only while holding the queue log's append
        lock, after catching up.  A lapsed lease is forgotten, so a sweep
        that ran ahead of a change_visibility another process appended just
        before the deadline would ignore that record and lease the message
        a second time.
        """
        lh = self.lease_heap
        while lh and lh[0][0] <= now:
            deadline, m, lease_seq = heapq.heappop(lh)
            if self.leases.get(m) == (lease_seq, deadline):
                self._unlease(m)
                self._make_visible(m)
        dh = self.delayed
        while dh and dh[0][0] <= now:
            _, m = heapq.heappop(dh)
            if self.state.get(m) == DELAYED:
                self._make_visible(m)
        limit = now - retention
        rs, ra = self.ret_seq, self.ret_at
        i = self.ret_head
        while i < len(rs) and ra[i] <= limit:
            self.remove(rs[i])
            i += 1
        self.ret_head = i
        late = self.ret_late
        while late and late[0][0] <= limit:
            self.remove(heapq.heappop(late)[1])
        if i > 4096 and i * 2 > len(rs):
            del rs[:i]
            del ra[:i]
            self.ret_head = 0
        elif len(rs) - i > 2 * len(self.state) + 4096:
            self._compact_retention()
        if self.fifo:
            dq = self.dedup_order
            while dq and dq[0][0] <= now - DEDUP_WINDOW_S:
                _, key = dq.popleft()
                entry = self.dedup.get(key)
                if entry is not None and entry[2] <= now - DEDUP_WINDOW_S:
                    del self.dedup[key]

    def _compact_retention(self) -> None:
        # Deleted messages stay in the retention order until retention runs
        # out (days), and checkpoints and sweeps walk past them: once they
        # outnumber the live ones two to one, keep only the live.  Each
        # rebuild is paid for by the deletes that made it due.
        state, rs, ra = self.state, self.ret_seq, self.ret_at
        keep = [j for j in range(self.ret_head, len(rs)) if rs[j] in state]
        self.ret_seq = array("q", [rs[j] for j in keep])
        self.ret_at = array("d", [ra[j] for j in keep])
        self.ret_head = 0

    def next_event(self) -> float | None:
        """The earliest time at which a sweep could make a message visible."""
        times = []
        if self.lease_heap:
            times.append(self.lease_heap[0][0])
        if self.delayed:
            times.append(self.delayed[0][0])
        return min(times) if times else None

    # -- choosing what to deliver -------------------------------------------------

    def candidates(self, n: int, take: bool = False) -> list[int]:
        """Up to ``n`` visible messages in delivery order, without leasing them.

        Standard: lowest sequence first.  FIFO: the group with the oldest head
        first, in order within it, then the next group; a group with a message
        in flight offers nothing.  With ``take`` (standard queues) they leave
        the visible heap: the caller leases or removes every one of them, or
        hands back the rest with ``give_back``.
        """
        if not self.fifo:
            out = []
            heap, state, pop, orig, redirect = self.visible, self.state, heapq.heappop, self.orig, self.redirect
            while heap and len(out) < n:
                k = pop(heap)
                m = k if k in state else redirect.get(k, k)  # resolve(), inlined
                # A copy's own sequence is pushed once before its CARRY names
                # its original one: only the entry under the original counts.
                if state.get(m) == VISIBLE and orig.get(m, m) == k and (not out or out[-1] != m):
                    out.append(m)
            if not take:
                self.give_back(out)
            return out
        out: list[int] = []
        if len(self.ready) > 2 * len(self.groups) + 64:
            # A group's entry is pushed again whenever its head may have
            # moved, and only the popped ones are dropped: a loop of send,
            # receive, delete on one group left one more each time, and
            # every receive went through all of them.  Rebuilt from the
            # groups (amortized O(1) a push; the loop below skips stale heads).
            self.ready = [(h[0], g) for g, h in self.groups.items() if h and not self.group_inflight.get(g)]
            heapq.heapify(self.ready)
        ready = self.ready
        taken: list[str] = []
        while ready and len(out) < n:
            head, g = heapq.heappop(ready)
            if g in taken or self.group_inflight.get(g):
                continue  # an in-flight group is offered again when its lease ends
            self._clean_group_quiet(g)
            heap = self.groups.get(g)
            if not heap:
                continue
            if heap[0] != head:
                heapq.heappush(ready, (heap[0], g))  # stale entry: requeue at the true head
                continue
            taken.append(g)
            want = n - len(out)
            # A group heap can hold a message twice: its entry stays while it
            # is in flight and a second one is pushed when its lease runs out.
            # Without the set, one receive returned (and leased) it twice.
            picks = sorted({m for m in heapq.nsmallest(2 * want + 8, heap) if self.state.get(m) == VISIBLE})
            if len(picks) < want and len(heap) > 2 * want + 8:
                picks = sorted({m for m in heap if self.state.get(m) == VISIBLE})
            out.extend(picks[:want])
        for g in taken:
            heap = self.groups.get(g)
            if heap:
                heapq.heappush(ready, (heap[0], g))
        return out

    def give_back(self, seqs: list[int]) -> None:
        """Returns taken candidates that were neither leased nor removed."""
        if self.fifo:
            return  # FIFO candidates are never taken
        for m in seqs:
            if self.state.get(m) == VISIBLE:
                heapq.heappush(self.visible, self.orig.get(m, m))

    def _clean_group_quiet(self, g: str) -> None:
        heap = self.groups.get(g)
        while heap and self.state.get(heap[0]) != VISIBLE:
            heapq.heappop(heap)
        if heap is not None and not heap:
            del self.groups[g]

    def _compact_heaps(self) -> None:
        self.visible = [self.orig.get(m, m) for m, st in self.state.items() if st == VISIBLE]
        heapq.heapify(self.visible)
        self.delayed = [e for e in self.delayed if self.state.get(e[1]) == DELAYED]
        heapq.heapify(self.delayed)
        self.lease_heap = [e for e in self.lease_heap if self.leases.get(e[1]) == (e[2], e[0])]
        heapq.heapify(self.lease_heap)
        if self.fifo:
            for g in list(self.groups):
                self.groups[g] = [m for m in self.groups[g] if self.state.get(m) == VISIBLE]
                heapq.heapify(self.groups[g])
                if not self.groups[g]:
                    del self.groups[g]
            self.ready = [(h[0], g) for g, h in self.groups.items() if not self.group_inflight.get(g)]
            heapq.heapify(self.ready)

    # -- queries -------------------------------------------------------------------

    def min_live(self) -> int | None:
        """The lowest live message sequence (what pins the oldest segment)."""
        return min(self.state) if self.state else None

    def oldest_sent(self) -> float | None:
        """Send time of the oldest live message, from the retention order."""
        rs, ra, state = self.ret_seq, self.ret_at, self.state
        i = self.ret_head
        # A removed message never comes back, so skipping it is permanent.
        while i < len(rs) and rs[i] not in state:
            i += 1
        self.ret_head = i
        late = self.ret_late
        while late and late[0][1] not in state:
            heapq.heappop(late)
        times = ([ra[i]] if i < len(rs) else []) + ([late[0][0]] if late else [])
        return min(times) if times else None

    # Read accessors: callers outside the index go through these rather than
    # its dicts, so that NativeIndex (standard queues) can stand in for it.

    def describe(self, ms: list[int]) -> list[tuple[int, float, int]]:
        """``(receive count, first received at, original seq)`` of each of
        ``ms``: the count is the receives carried in until it is received
        here; a message that is not live reads ``(0, 0.0, m)``."""
        out = []
        for m in ms:
            r = self.receives.get(m)
            count, first = r if r is not None else (self.prior.get(m, 0), 0.0)
            out.append((count, first, self.orig.get(m, m)))
        return out

    def select_live(self, ms: list[int]) -> list[int]:
        """Those of ``ms`` still live (through redirects) or not yet applied."""
        state, applied = self.state, self.applied
        return [m for m in ms if m >= applied or self.resolve(m) in state]

    def visible_count(self) -> int:
        """How many messages are visible (``counts[VISIBLE]``)."""
        return self.counts[VISIBLE]

    def live(self) -> int:
        """How many messages are live (visible, delayed or in flight)."""
        return len(self.state)

    def state_of(self, m: int) -> int | None:
        """VISIBLE, DELAYED or INFLIGHT for a live message; None otherwise."""
        return self.state.get(m)

    def receive_info(self, m: int) -> tuple[int, float] | None:
        """``(count, first received at)`` once a live message was received."""
        return self.receives.get(m)

    def prior_of(self, m: int) -> int:
        """Receives a live message carried in from another queue (0 if none)."""
        return self.prior.get(m, 0)

    def lease_of(self, m: int) -> tuple[int, float] | None:
        """``(lease seq, deadline)`` of a message in flight; None otherwise."""
        return self.leases.get(m)

    def orig_of(self, m: int) -> int:
        """The original sequence of a message compaction copied forward (``m`` itself if none)."""
        return self.orig.get(m, m)

    def live_below(self, cutoff: int, limit: int | None = None) -> list[int] | None:
        """The live sequences below ``cutoff``, ascending (what pins old
        segments); None if there are more than ``limit``."""
        below = sorted(m for m in self.state if m < cutoff)
        return None if limit is not None and len(below) > limit else below

    def live_seqs(self) -> list[int]:
        """Every live sequence, ascending."""
        return sorted(self.state)
