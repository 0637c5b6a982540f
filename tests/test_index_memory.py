"""A queue's index keeps memory in proportion to its live messages, not to
how many it has seen: the lease heap kept an entry for every lease until
that lease's deadline, deleted or not, so a consumer loop (receive, delete)
grew by receive rate x visibility timeout - without bound for long
timeouts, and invisibly to tracemalloc in the C index (bench/bench_rss.py
measures the whole process)."""

from __future__ import annotations

import ctypes
import ctypes.util
import random

import pytest

from walq.queue import records as R
from walq.queue.index import Index

native_index = pytest.importorskip("walq.queue.native_index")

CYCLES = 150_000
DEADLINE = 1_700_000_000.0 + 43_200  # the longest visibility timeout


def _malloc_bytes():
    """Bytes glibc's malloc has handed out (heap and mmapped chunks), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        info2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    info2.restype = Info
    return lambda: info2().uordblks + info2().hblkhd


def consume(idx, cycles: int) -> None:
    """Sends, leases (12 hours) and deletes one message at a time."""
    send = R.encode_send(random.Random(1).randbytes(16), 1_700_000_000.0, 1_700_000_000.0, b"body")
    seq = 0
    for _ in range(cycles):
        m = seq
        idx.apply(seq, R.SEND, send)
        idx.apply(seq + 1, R.LEASE, R.encode_lease(1_700_000_000.0, [(m, DEADLINE)]))
        idx.apply(seq + 2, R.DELETE, R.encode_seqs([m]))
        seq += 3


def test_the_native_index_does_not_grow_with_deleted_leases():
    used = _malloc_bytes()
    if used is None:
        pytest.skip("needs glibc's mallinfo2 to see the C index's memory")
    idx = native_index.NativeIndex()
    consume(idx, 5_000)  # warm up: every table at its working size
    before = used()
    consume(idx, CYCLES)
    grown = used() - before
    assert idx.live() == 0
    # 24 bytes a stale lease: 3.6 MB if each were kept.
    assert grown < 1_000_000, f"the index grew by {grown} bytes over {CYCLES} receive+delete cycles"


def test_the_python_index_does_not_grow_with_deleted_leases():
    idx = Index(False)
    consume(idx, CYCLES // 3)
    assert not idx.leases
    assert len(idx.lease_heap) <= 2 * 4096, f"{len(idx.lease_heap)} lease entries for no message in flight"


def test_a_fifo_group_keeps_one_ready_entry_not_one_per_message(tmp_path):
    """FIFO: the heap of ready groups gained an entry on every send,
    receive and delete of one group and dropped only those a receive
    popped, so each receive walked every message the queue had seen."""
    import walq

    with walq.open(tmp_path / "data", durability="os") as broker:
        q = broker.create_queue("q.fifo", visibility_timeout=600, content_based_dedup=True)
        for i in range(3000):
            q.send(b"m%d" % i, group="g")
            [m] = q.receive(1)
            m.ack()
        assert len(q._index.ready) <= 2 * 1 + 64 + 2
