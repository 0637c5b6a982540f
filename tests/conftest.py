"""Test tiers: the default run is fast; ``--crash`` and ``--stress`` add the
long crash-recovery and multi-process tiers (markers ``crash``, ``stress``)."""

from __future__ import annotations

import pytest


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
