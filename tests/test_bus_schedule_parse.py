"""EventBridge schedule expressions: rate() and six-field cron() with ? L W #."""

from __future__ import annotations

import datetime as dt

import pytest

import walq
from walq.bus.schedule import parse


def ts(*a) -> float:
    return dt.datetime(*a, tzinfo=dt.timezone.utc).timestamp()


def latest(expr, start, now):
    t = parse(expr).latest(ts(*start), ts(*now))
    return None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M %a")


def test_rate_ticks_one_period_after_the_start():
    r = parse("rate(5 minutes)")
    assert r.latest(1000, 1299) is None and r.latest(1000, 1300) == 1300 and r.latest(1000, 1999) == 1900
    assert parse("rate(1 hour)").period == 3600 and parse("rate(2 days)").period == 172800


@pytest.mark.parametrize("expr, now, want", [
    ("cron(0 12 * * ? *)", (2026, 3, 10, 11, 0), "2026-03-09 12:00 Mon"),
    ("cron(15 10 ? * 6L 2026)", (2026, 6, 1, 0, 0), "2026-05-29 10:15 Fri"),  # last Friday of May
    ("cron(0 8 ? * 2#1 *)", (2026, 3, 10, 0, 0), "2026-03-02 08:00 Mon"),  # first Monday
    ("cron(0 0 L * ? *)", (2026, 3, 10, 0, 0), "2026-02-28 00:00 Sat"),
    ("cron(0 9 15W * ? *)", (2026, 3, 20, 0, 0), "2026-03-16 09:00 Mon"),  # the 15th is a Sunday
    ("cron(0 9 1W * ? *)", (2026, 8, 5, 0, 0), "2026-08-03 09:00 Mon"),  # the 1st is a Saturday
    ("cron(0 9 LW * ? *)", (2026, 6, 5, 0, 0), "2026-05-29 09:00 Fri"),  # May 31 is a Sunday
    ("cron(0/15 * * * ? *)", (2026, 3, 10, 11, 44), "2026-03-10 11:30 Tue"),
    ("cron(0 18 ? * MON-FRI *)", (2026, 3, 8, 12, 0), "2026-03-06 18:00 Fri"),
    ("cron(0 0 1 JAN,JUL ? *)", (2026, 6, 30, 0, 0), "2026-01-01 00:00 Thu"),
])
def test_cron_latest_tick(expr, now, want):
    assert latest(expr, (2025, 1, 1), now) == want


def test_cron_ticks_before_the_start_do_not_count():
    assert latest("cron(0 12 * * ? *)", (2026, 3, 10, 12, 0), (2026, 3, 10, 12, 30)) is None


@pytest.mark.parametrize("expr", [
    "rate(0 minutes)", "rate(1 minutes)", "rate(5 minute)", "rate(5 weeks)", "cron(0 12 * * *)",
    "cron(0 12 * * * *)", "cron(0 12 ? * ? *)", "cron(60 12 * * ? *)", "cron(0 12 * 13 ? *)",
    "cron(0 12 ? * 8 *)", "cron(0 12 ? * 2#6 *)", "every hour", "cron(0 12 32W * ? *)",
])
def test_refused_expressions(expr):
    with pytest.raises(walq.InvalidParameter):
        parse(expr)
