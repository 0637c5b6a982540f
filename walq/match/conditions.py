"""Compiled match conditions: one class per operator, each testing one leaf value.

A *leaf* is a scalar taken from a message: ``str``, ``int`` or ``float`` (never
``bool``), ``True``/``False`` or ``None``. Each condition answers ``test(leaf)``;
the caller asks it of every leaf found at a field, so an array matches when any
element does. Conditions also expose the *anchor* the index files them under
(see ``walq/match/index.py``): a hashable key that a matching leaf must produce,
or ``None`` when the condition can only be scanned.
"""

from __future__ import annotations

import ipaddress
import re

# Anchor kinds, cheapest to look up first: the index prefers a branch's most
# selective condition as the one that triggers a full check.
EXACT, IGNORE_CASE, PREFIX, SUFFIX, NUMERIC, PRESENT = range(6)
_NUMBER_TYPES = (int, float)


class _Null:
    """Index key of a JSON ``null`` (None cannot tell itself apart from absent)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "null"


NULL = _Null()
# True == 1 and hash(True) == hash(1): booleans get keys of their own so that
# an exact ``1`` never matches ``true``.
TRUE, FALSE = ("\0bool", True), ("\0bool", False)


def leaf_key(value):
    """The typed key of a leaf: numbers as float, booleans and null tagged."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return TRUE if value else FALSE
    if value is None:
        return NULL
    return float(value)


def is_number(value) -> bool:
    """True for int/float leaves; booleans are not numbers here."""
    return type(value) in _NUMBER_TYPES


class Condition:
    """Base: ``test(leaf) -> bool``; ``anchor`` is ``(kind, key)`` or None."""

    __slots__ = ()
    anchor = None

    def test(self, value) -> bool:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class Exact(Condition):
    """Equal value of the same JSON type (numbers compare numerically)."""

    __slots__ = ("key",)

    def __init__(self, value):
        self.key = leaf_key(value)

    @property
    def anchor(self):
        return (EXACT, self.key)

    def test(self, value) -> bool:
        return leaf_key(value) == self.key

    def __repr__(self) -> str:
        return f"Exact({self.key!r})"


class IgnoreCase(Condition):
    """A string equal to ``text`` ignoring case."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text.lower()

    @property
    def anchor(self):
        return (IGNORE_CASE, self.text)

    def test(self, value) -> bool:
        return type(value) is str and value.lower() == self.text


class Prefix(Condition):
    """A string starting with ``text`` (optionally ignoring case)."""

    __slots__ = ("text", "ignore_case")

    def __init__(self, text: str, ignore_case: bool = False):
        self.text = text.lower() if ignore_case else text
        self.ignore_case = ignore_case

    @property
    def anchor(self):
        return (PREFIX, (self.ignore_case, self.text))

    def test(self, value) -> bool:
        if type(value) is not str:
            return False
        return (value.lower() if self.ignore_case else value).startswith(self.text)


class Suffix(Condition):
    """A string ending with ``text`` (optionally ignoring case)."""

    __slots__ = ("text", "ignore_case")

    def __init__(self, text: str, ignore_case: bool = False):
        self.text = text.lower() if ignore_case else text
        self.ignore_case = ignore_case

    @property
    def anchor(self):
        return (SUFFIX, (self.ignore_case, self.text))

    def test(self, value) -> bool:
        if type(value) is not str:
            return False
        return (value.lower() if self.ignore_case else value).endswith(self.text)


class Numeric(Condition):
    """A number inside an interval; each end open, closed or unbounded (None)."""

    __slots__ = ("low", "low_closed", "high", "high_closed")

    def __init__(self, low=None, low_closed=False, high=None, high_closed=False):
        self.low, self.low_closed = low, low_closed
        self.high, self.high_closed = high, high_closed

    @property
    def anchor(self):
        return (NUMERIC, (self.low, self.low_closed, self.high, self.high_closed))

    def test(self, value) -> bool:
        if type(value) not in _NUMBER_TYPES:
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and not self.low_closed):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and not self.high_closed):
                return False
        return True


class Exists(Condition):
    """``{"exists": true}``: any leaf at all (``false`` is handled by the field test)."""

    __slots__ = ()
    anchor = (PRESENT, None)

    def test(self, value) -> bool:
        return True


class Cidr(Condition):
    """A string holding an IPv4 or IPv6 address inside ``network``."""

    __slots__ = ("network",)

    def __init__(self, network):
        self.network = network

    def test(self, value) -> bool:
        if type(value) is not str:
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return address.version == self.network.version and address in self.network


class Wildcard(Condition):
    """A string matching a pattern where ``*`` stands for any run of characters.

    ``\\*`` is a literal star and ``\\\\`` a literal backslash, as in EventBridge.
    The literal text before the first star anchors the condition as a prefix.
    """

    __slots__ = ("regex", "literal_prefix")

    def __init__(self, pattern: str):
        parts, literal, first = [], [], None
        i = 0
        while i < len(pattern):
            ch = pattern[i]
            if ch == "\\" and i + 1 < len(pattern):
                literal.append(pattern[i + 1])
                i += 2
                continue
            if ch == "*":
                parts.append(re.escape("".join(literal)))
                if first is None:
                    first = "".join(literal)
                literal = []
                parts.append(".*")
            else:
                literal.append(ch)
            i += 1
        parts.append(re.escape("".join(literal)))
        if first is None:
            first = "".join(literal)
        self.regex = re.compile("".join(parts), re.DOTALL)
        self.literal_prefix = first

    @property
    def anchor(self):
        # A necessary condition only: the branch is checked in full afterwards.
        return (PREFIX, (False, self.literal_prefix)) if self.literal_prefix else None

    def test(self, value) -> bool:
        return type(value) is str and self.regex.fullmatch(value) is not None


class AnythingBut(Condition):
    """A leaf that none of ``inner`` matches (values, prefix, suffix, wildcard...).

    Only leaves that exist are asked, so a missing field never matches.
    """

    __slots__ = ("keys", "inner")

    def __init__(self, inner: list):
        self.keys = frozenset(c.key for c in inner if type(c) is Exact)
        self.inner = [c for c in inner if type(c) is not Exact]

    def test(self, value) -> bool:
        if leaf_key(value) in self.keys:
            return False
        for condition in self.inner:
            if condition.test(value):
                return False
        return True
