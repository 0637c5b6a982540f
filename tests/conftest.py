"""Test tiers: the default run is fast; ``--crash`` and ``--stress`` add the
long crash-recovery and multi-process tiers (markers ``crash``, ``stress``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import walq

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/queue_helpers.py
from queue_helpers import FakeClock  # noqa: E402

if os.environ.get("WALQ_VALGRIND"):
    # native/valgrind-tests.sh: 30-60x slower, so no deadlines and fewer examples.
    from hypothesis import settings

    settings.register_profile("valgrind", deadline=None, max_examples=10)
    settings.load_profile("valgrind")


def pytest_addoption(parser):
    parser.addoption("--crash", action="store_true", help="run the long crash-recovery tier")
    parser.addoption("--stress", action="store_true", help="run the long multi-process stress tier")


def pytest_collection_modifyitems(config, items):
    for marker in ("crash", "stress"):
        if config.getoption(f"--{marker}"):
            continue
        skip = pytest.mark.skip(reason=f"long tier: run with --{marker}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def clock():
    """A fake epoch clock (advance() it) for visibility, delay, retention, dedup."""
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    """Opens (and reopens) brokers on one directory with the fake clock; closes them all."""
    opened = []

    def open_(**kw):
        kw.setdefault("durability", "os")
        kw.setdefault("clock", clock)
        b = walq.open(tmp_path / "data", **kw)
        opened.append(b)
        return b

    yield open_
    for b in opened:
        b.close()


@pytest.fixture
def broker(store):
    """A broker on the test's store."""
    return store()


@pytest.fixture(params=["native", "python"])
def both_indexes(request, monkeypatch):
    """Runs a test once with each index a standard queue can use: the
    native one (the default) and the Python one (``WALQ_INDEX=python``, the
    fallback, and FIFO queues' index), so that neither drifts from SQS's
    rules unnoticed."""
    monkeypatch.setenv("WALQ_INDEX", request.param)
    return request.param
