"""pytest-benchmark benchmarks of the log: 100-byte records, beside the disk's
raw fdatasync and SQLite in the same session.

Not part of the default test run (``testpaths`` is ``tests/``); run them with

    pytest bench/test_bench_log.py --benchmark-columns=median,ops,rounds

``ops`` is calls per second; an ``append_batch`` call carries 100 records.
The full comparison with targets is ``python bench/bench_log.py``.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from walq.log import Log, LogOptions

PAYLOAD = b"r" * 100
BATCH = [PAYLOAD] * 100


@pytest.fixture(autouse=True)
def quiet_disk():
    """Writes back what earlier benchmarks left dirty, so that a durable
    benchmark does not pay for a fast one's writeback (ext4's ordered mode
    makes an fdatasync wait for it)."""
    os.sync()


@pytest.fixture
def make_log(tmp_path):
    logs = []

    def make(mode: str) -> Log:
        log = Log(tmp_path / mode, LogOptions(durability=mode))
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


@pytest.mark.parametrize("mode", ["always", "batch", "os"])
def test_append(benchmark, make_log, mode):
    log = make_log(mode)
    benchmark.group = "append() of 100 B"
    benchmark.extra_info["records_per_call"] = 1
    benchmark(log.append, PAYLOAD)


@pytest.mark.parametrize("mode", ["always", "batch", "os"])
def test_append_batch_100(benchmark, make_log, mode):
    log = make_log(mode)
    benchmark.group = "append_batch(100 x 100 B)"
    benchmark.extra_info["records_per_call"] = 100
    benchmark(log.append_batch, BATCH)


def test_raw_fdatasync_peer(benchmark, tmp_path):
    """The disk's limit: pwrite 128 B + fdatasync into a preallocated file."""
    fd = os.open(tmp_path / "raw.bin", os.O_RDWR | os.O_CREAT, 0o644)
    size = 256 << 20
    os.posix_fallocate(fd, 0, size)
    os.fsync(fd)
    buf = os.urandom(128)
    pos = [0]

    def write_sync():
        os.pwrite(fd, buf, pos[0])
        os.fdatasync(fd)
        pos[0] = (pos[0] + 128) % size

    benchmark.group = "append() of 100 B"
    try:
        benchmark(write_sync)
    finally:
        os.close(fd)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_sqlite_insert_peer(benchmark, tmp_path, synchronous):
    """SQLite WAL, one 100-byte insert per transaction."""
    db = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    benchmark.group = "append() of 100 B"
    try:
        benchmark(db.execute, "INSERT INTO q (body) VALUES (?)", (PAYLOAD,))
    finally:
        db.close()
