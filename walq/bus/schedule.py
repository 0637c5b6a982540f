"""EventBridge schedule expressions: ``rate(N unit)`` and six-field
``cron(minutes hours day-of-month month day-of-week year)``, in UTC.

cron fields (EventBridge's): minutes 0-59, hours 0-23, day-of-month 1-31
(also ``?``, ``L`` the last day, ``NW`` the weekday nearest day N, ``LW``),
month 1-12 or JAN-DEC, day-of-week 1-7 (1 = Sunday) or SUN-SAT (also ``?``,
``NL`` the last such weekday of the month, ``N#k`` its k-th), year
1970-2199; ``*``, ``,``, ``-`` and ``/`` where EventBridge takes them.  One
of day-of-month and day-of-week must be ``?``.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re

from walq.errors import InvalidParameter

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT",
                                       "NOV", "DEC"), 1)}
_DAYS = {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)}
_UTC = _dt.timezone.utc


def _bad(expr: str, why: str) -> InvalidParameter:
    return InvalidParameter(f"invalid schedule expression {expr!r}: {why}")


class Rate:
    """``rate(N unit)``: a tick every period, the first one period after ``start``."""

    def __init__(self, expr: str, period: int):
        self.expr, self.period = expr, period

    def latest(self, start: float, now: float) -> float | None:
        """The last tick at or before ``now`` (None before the first)."""
        if now < start + self.period:
            return None
        return start + ((now - start) // self.period) * self.period


class _Field:
    def __init__(self, values: set, lo: int, hi: int):
        self.values, self.lo, self.hi = values, lo, hi


def _parse_list(expr: str, text: str, lo: int, hi: int, names: dict | None, what: str) -> set:
    out: set = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, s = part.split("/", 1)
            if not s.isdigit() or int(s) == 0:
                raise _bad(expr, f"{what}: bad increment {s!r}")
            step = int(s)
        if part == "*":
            a, b = lo, hi
        else:
            bounds = part.split("-")
            if len(bounds) > 2:
                raise _bad(expr, f"{what}: bad range {part!r}")
            nums = []
            for v in bounds:
                u = v.upper()
                if names is not None and u in names:
                    nums.append(names[u])
                elif v.isdigit():
                    nums.append(int(v))
                else:
                    raise _bad(expr, f"{what}: {v!r} is not a value")
            a = nums[0]
            b = nums[1] if len(nums) == 2 else (hi if "/" in text and step > 1 and len(nums) == 1 else a)
            if not (lo <= a <= hi and lo <= b <= hi) or a > b:
                raise _bad(expr, f"{what}: {part!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return out


class Cron:
    """``cron(minutes hours day-of-month month day-of-week year)``."""

    def __init__(self, expr: str, fields: list[str]):
        self.expr = expr
        mi, hr, dom, mon, dow, yr = fields
        self.minutes = _parse_list(expr, mi, 0, 59, None, "minutes")
        self.hours = _parse_list(expr, hr, 0, 23, None, "hours")
        self.months = _parse_list(expr, mon, 1, 12, _MONTHS, "month")
        self.years = _parse_list(expr, yr, 1970, 2199, None, "year")
        if (dom == "?") == (dow == "?"):
            raise _bad(expr, "one of day-of-month and day-of-week must be ?, and only one")
        self.dom = self.dow = None
        if dom != "?":
            if dom in ("L", "LW") or re.fullmatch(r"\d+W", dom):
                if dom.endswith("W") and dom != "LW" and not 1 <= int(dom[:-1]) <= 31:
                    raise _bad(expr, "day-of-month: W needs a day 1-31")
                self.dom = dom
            else:
                self.dom = _parse_list(expr, dom, 1, 31, None, "day-of-month")
        else:
            m = re.fullmatch(r"(\w+)#([1-5])", dow)
            m_last = re.fullmatch(r"(\w*)L", dow)
            if m:
                self.dow = ("#", self._day(m.group(1)), int(m.group(2)))
            elif m_last:
                self.dow = ("L", self._day(m_last.group(1)) if m_last.group(1) else 7)
            else:
                self.dow = _parse_list(expr, dow, 1, 7, _DAYS, "day-of-week")

    def _day(self, v: str) -> int:
        u = v.upper()
        if u in _DAYS:
            return _DAYS[u]
        if v.isdigit() and 1 <= int(v) <= 7:
            return int(v)
        raise _bad(self.expr, f"day-of-week: {v!r} is not a day")

    def _day_matches(self, d: _dt.date) -> bool:
        last = calendar.monthrange(d.year, d.month)[1]
        wd = (d.weekday() + 1) % 7 + 1  # EventBridge: 1 = Sunday
        if self.dom is not None:
            if isinstance(self.dom, set):
                return d.day in self.dom
            if self.dom == "L":
                return d.day == last
            target = last if self.dom == "LW" else min(int(self.dom[:-1]), last)
            return d.day == _nearest_weekday(d.year, d.month, target, last)
        if isinstance(self.dow, set):
            return wd in self.dow
        if self.dow[0] == "#":
            return wd == self.dow[1] and (d.day - 1) // 7 + 1 == self.dow[2]
        return wd == self.dow[1] and d.day + 7 > last

    def latest(self, start: float, now: float) -> float | None:
        """The last tick after ``start`` and at or before ``now`` (None if none)."""
        t = _dt.datetime.fromtimestamp(now, _UTC).replace(second=0, microsecond=0)
        day = t.date()
        floor = _dt.datetime.fromtimestamp(start, _UTC).date()
        hours, minutes = sorted(self.hours, reverse=True), sorted(self.minutes, reverse=True)
        while day >= floor:
            if day.year in self.years and day.month in self.months and self._day_matches(day):
                for h in hours:
                    for m in minutes:
                        tick = _dt.datetime(day.year, day.month, day.day, h, m, tzinfo=_UTC)
                        if tick <= t:
                            ts = tick.timestamp()
                            return ts if ts > start else None
            day -= _dt.timedelta(days=1)
        return None


def _nearest_weekday(year: int, month: int, day: int, last: int) -> int:
    """The weekday (Mon-Fri) nearest ``day`` within its month (EventBridge's W)."""
    wd = _dt.date(year, month, day).weekday()
    if wd == 5:  # Saturday: the Friday before, or Monday after when the 1st
        return day - 1 if day > 1 else day + 2
    if wd == 6:  # Sunday: the Monday after, or Friday before when the month's last day
        return day + 1 if day < last else day - 2
    return day


def parse(expr) -> Rate | Cron:
    """A parsed schedule; InvalidParameter (EventBridge's refusals) otherwise."""
    if not isinstance(expr, str):
        raise InvalidParameter(f"schedule must be text such as 'rate(5 minutes)'; got {type(expr).__name__}")
    m = _RATE.match(expr)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        if n <= 0:
            raise _bad(expr, "the value must be a positive integer")
        if (n == 1) != (not unit.endswith("s")):
            raise _bad(expr, "use the singular unit for 1 (rate(1 minute)) and the plural otherwise")
        return Rate(expr, n * _UNIT_S[unit.rstrip("s")])
    if expr.startswith("rate("):
        raise _bad(expr, "use rate(N minute|minutes|hour|hours|day|days)")
    m = re.fullmatch(r"cron\((.*)\)", expr)
    if not m:
        raise _bad(expr, "use rate(...) or cron(...)")
    fields = m.group(1).split()
    if len(fields) != 6:
        raise _bad(expr, "cron needs six fields: minutes hours day-of-month month day-of-week year")
    return Cron(expr, fields)
