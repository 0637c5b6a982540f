"""pytest-benchmark versions of the single-process queue benchmarks.

Not part of the default test run (pytest collects ``tests/`` only).  Run:

    pytest bench/test_bench_queue.py                       # everything
    pytest bench/test_bench_queue.py -k "walq or sqlite"   # a subset
    pytest bench/test_bench_queue.py --benchmark-group-by=group

Each benchmark is ``<op>[<queue>-<durability>]``; ops: ``send`` (one
message), ``send_batch_10``, ``send_batch_100``, ``receive_delete_10``
(``receive(10)`` + ``delete_batch`` on a pre-filled queue).  100-byte bodies.
The queues and their durability settings are described in peers.py;
bench_queue.py runs the same operations, interleaved, plus the
multi-process and long-poll benchmarks.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402

PAYLOAD = b"m" * 100
CONFIGS = [(k, d) for k in peers.KINDS for d in peers.DURABILITIES[k]]
#: receive+delete runs this many rounds of one call (10 messages) each.
RECEIVE_ROUNDS = 300


def _ids(config):
    return f"{config[0]}-{config[1]}"


@pytest.fixture(params=CONFIGS, ids=_ids)
def queue(request, tmp_path):
    kind, dur = request.param
    if not peers.available(kind):
        pytest.skip(f"{kind} is not installed (pip install -e '.[bench]')")
    q = peers.make(kind, dur, str(tmp_path / "store"))
    yield q
    q.close()


def _send_config(queue):
    if getattr(queue, "lazy_lease", False):
        pytest.skip("FULL-LAZY-LEASE sends exactly as FULL")


def test_send(benchmark, queue):
    _send_config(queue)
    benchmark.group = "send"
    body = queue.wrap(PAYLOAD)
    send = queue.send
    benchmark(send, body)


@pytest.mark.parametrize("size", [10, 100])
def test_send_batch(benchmark, queue, size):
    _send_config(queue)
    if not queue.supports_batch:
        pytest.skip(f"{queue.kind} has no batch send")
    benchmark.group = f"send_batch({size})"
    benchmark.extra_info["messages_per_call"] = size
    bodies = [queue.wrap(PAYLOAD)] * size
    benchmark(queue.send_batch, bodies)


def test_receive_delete(benchmark, queue):
    benchmark.group = "receive(10) + delete_batch"
    benchmark.extra_info["messages_per_call"] = 10
    # Enough for every round plus warm-up; a standing backlog like a busy queue's.
    queue.prefill(RECEIVE_ROUNDS * 10 + 5_000, PAYLOAD)
    rd = queue.receive_delete

    def once():
        got = rd(10)
        assert len(got) == 10
        return got

    benchmark.pedantic(once, rounds=RECEIVE_ROUNDS, iterations=1, warmup_rounds=5)
