"""Matcher: many compiled policies behind one index, matched in one pass.

Evaluating every policy per message costs O(policies). Instead, each branch of
each policy files one *anchor* - a condition that any message satisfying the
branch must meet - in a per-field index:

- exact values: a dict ``value -> branches`` (one hash lookup per leaf);
- ``equals-ignore-case``: a dict on the lowercased value;
- ``prefix`` / ``suffix`` (and a wildcard's literal head, as a prefix): a dict
  ``text -> branches`` probed once per distinct prefix length, so the cost is
  the number of distinct lengths, not of prefixes;
- numeric ranges: the sorted distinct bounds cut the number line into
  elementary segments (points and the open gaps between them), each holding the
  branches whose interval covers it; a leaf costs one bisect;
- anything else (``anything-but``, ``cidr``, a wildcard starting with ``*``,
  ``exists: true``): the field's presence, a list fired once per present field.

The anchor chosen is the branch's most selective test (exact first, presence
last), so a branch is looked at only when its rarest condition already holds.
When two of a branch's fields take exact values only (EventBridge's usual
``source`` with ``detail-type``) and the pair is rarer than any one test, the
branch is filed under both values together: a dict ``value -> {other field:
{value -> branches}}``, probed with the other field's leaves. Either way,
the fired branches are then checked against the flattened message (all but
the anchor's test, when meeting the anchor already decides that test; and
array consistency, walq/match/arrays.py, when the message has arrays). A
branch that can match with every field absent (only ``exists: false``) is
checked on every message. Like event-ruler's single state machine for all
rules, the cost follows the message (its fields and the branches they fire),
not the number of policies; unlike it, at most two fields per branch are indexed.
"""

from __future__ import annotations

from bisect import bisect_left

from walq.errors import InvalidParameter
from walq.match.arrays import consistent
from walq.match.conditions import EXACT, IGNORE_CASE, NUMERIC, PREFIX, PRESENT, SUFFIX, Wildcard, leaf_key
from walq.match.policy import SCOPES, Policy, compile_for_scope
from walq.match.values import flatten_attributes, flatten_document

_RANK = {EXACT: 0, IGNORE_CASE: 1, PREFIX: 2, SUFFIX: 3, NUMERIC: 4, PRESENT: 5}


def test_anchors(test):
    """The anchors of one field test: one per condition, or presence alone when
    some condition cannot be indexed; None for a test its field's absence can pass."""
    if test.absent_ok:
        return None
    anchors = []
    for condition in test.conditions:
        anchor = condition.anchor
        if anchor is None or anchor[0] == PRESENT:
            return [(PRESENT, None)]
        anchors.append(anchor)
    return anchors


class _Stats:
    """What all filed policies name at one field: the basis of the selectivity
    estimate (a value out of many distinct ones is rare; a field that only
    ever takes a handful of values, like a tier, is a weak anchor)."""

    __slots__ = ("keys", "low", "high")

    def __init__(self):
        self.keys = {EXACT: set(), IGNORE_CASE: set(), PREFIX: set(), SUFFIX: set(), NUMERIC: set()}
        self.low = self.high = None

    def note(self, kind, key) -> None:
        if kind == PRESENT:
            return
        self.keys[kind].add(key)
        if kind == NUMERIC:
            for bound in (key[0], key[2]):
                if bound is not None:
                    self.low = bound if self.low is None else min(self.low, bound)
                    self.high = bound if self.high is None else max(self.high, bound)

    def estimate(self, kind, key) -> float:
        """Guessed fraction of messages that meet this anchor."""
        if kind == PRESENT:
            return 1.0
        if kind != NUMERIC:
            return 1.0 / len(self.keys[kind])
        low, _, high, _ = key
        if low is not None and low == high:
            return 1.0 / len(self.keys[NUMERIC])
        if low is None or high is None or self.high == self.low:
            return 0.5
        return (high - low) / (self.high - self.low)


def choose_anchor(branch, stats: dict):
    """``(test, [(kind, key), ...], partner)`` for the test of ``branch`` that
    the fewest messages are expected to meet (by ``stats``, path -> _Stats),
    or None when every test can pass with its field absent.  ``partner`` is
    None, or ``(test, [key, ...])``: a second test of exact values only, on
    another field, when the pair of them is rarer than any one test (a
    source and a detail-type, say) - the branch is then filed under both
    values together."""
    best = None
    exact_only = []  # (guess, test, keys) of the tests met by exact values alone
    for test in branch:
        anchors = test_anchors(test)
        if anchors is None:
            continue
        field = stats[test.path]
        guess = min(1.0, sum(field.estimate(kind, key) for kind, key in anchors))
        rank = (guess, max(_RANK[kind] for kind, _ in anchors), len(anchors))
        if best is None or rank < best[0]:
            best = (rank, test, anchors, None)
        if all(kind == EXACT for kind, _ in anchors):
            exact_only.append((guess, test, [key for _, key in anchors]))
    if len(exact_only) >= 2:
        exact_only.sort(key=lambda e: (e[0], len(e[2])))
        (g1, t1, k1), second = exact_only[0], None
        for g2, t2, k2 in exact_only[1:]:
            if t2.path != t1.path:
                second = (g2, t2, k2)
                break
        if second is not None:
            g2, t2, k2 = second
            rank = (g1 * g2, _RANK[EXACT], len(k1) * len(k2))
            if rank < best[0]:
                best = (rank, t1, [(EXACT, k) for k in k1], (t2, k2))
    return None if best is None else best[1:]


def anchor_decides(test, anchors) -> bool:
    """True when meeting one of ``anchors`` already means ``test`` holds, so the
    full check can skip it: not for presence, nor for a wildcard's literal head."""
    return all(kind != PRESENT for kind, _ in anchors) and not any(
        type(cond) is Wildcard for cond in test.conditions)


class _Field:
    """The anchors filed under one field path."""

    __slots__ = ("exact", "pairs", "ignore_case", "prefix", "prefix_lengths", "suffix", "suffix_lengths",
                 "ranges", "present", "_points", "_segments", "_lengths_cache")

    def __init__(self):
        self.exact: dict = {}
        self.pairs: dict = {}  # key -> {partner path: {partner key: [branch]}}
        self.ignore_case: dict = {}
        self.prefix: dict = {}  # (ignore_case, text) -> [branch]
        self.suffix: dict = {}
        self.prefix_lengths: dict = {}  # (ignore_case, length) -> count
        self.suffix_lengths: dict = {}
        self.ranges: list = []  # [(low, low_closed, high, high_closed, branch)]
        self.present: list = []
        self._points = None  # built lazily after a change
        self._segments = None
        self._lengths_cache = None

    def file(self, kind, key, branch: int) -> None:
        """Files ``branch`` under anchor ``(kind, key)``."""
        if kind == PRESENT:
            self.present.append(branch)
            return
        if kind == NUMERIC:
            self.ranges.append((*key, branch))
            self._points = self._segments = None
            return
        if kind in (PREFIX, SUFFIX):
            table, lengths = ((self.prefix, self.prefix_lengths) if kind == PREFIX
                              else (self.suffix, self.suffix_lengths))
            length = (key[0], len(key[1]))
            lengths[length] = lengths.get(length, 0) + 1
            self._lengths_cache = None
        else:
            table = self.exact if kind == EXACT else self.ignore_case
        bucket = table.get(key)
        if bucket is None:
            table[key] = [branch]
        else:
            bucket.append(branch)

    def file_pair(self, key, path: str, partner_key, branch: int) -> None:
        """Files ``branch`` under an exact ``key`` here together with an exact
        ``partner_key`` at ``path``."""
        table = self.pairs.setdefault(key, {}).setdefault(path, {})
        bucket = table.get(partner_key)
        if bucket is None:
            table[partner_key] = [branch]
        else:
            bucket.append(branch)

    def _pair(self, key, flat, out: set) -> None:
        for path, table in self.pairs[key].items():
            for leaf in flat.get(path) or ():
                hit = table.get(leaf if type(leaf) is str else leaf_key(leaf))
                if hit:
                    out.update(hit)

    def _lengths(self):
        if self._lengths_cache is None:
            def split(lengths):
                return (sorted(n for ic, n in lengths if not ic), sorted(n for ic, n in lengths if ic))
            self._lengths_cache = (split(self.prefix_lengths), split(self.suffix_lengths))
        return self._lengths_cache

    def _build_segments(self) -> None:
        # Segment 2i+1 is the point points[i]; segment 2i the open gap before it.
        points = sorted({b for low, _, high, _, _ in self.ranges for b in (low, high) if b is not None})
        segments = [[] for _ in range(2 * len(points) + 1)]
        index = {p: i for i, p in enumerate(points)}
        for low, low_closed, high, high_closed, branch in self.ranges:
            first = 0 if low is None else 2 * index[low] + (1 if low_closed else 2)
            last = 2 * len(points) if high is None else 2 * index[high] + (1 if high_closed else 0)
            for s in range(first, last + 1):
                segments[s].append(branch)
        self._points, self._segments = points, segments

    def collect(self, leaves, out: set, flat) -> None:
        """Adds to ``out`` every branch whose anchor some leaf meets (with its
        partner's in ``flat``, for a branch filed under a pair)."""
        if self.present:
            out.update(self.present)
        exact, pairs = self.exact, self.pairs
        for value in leaves:
            kind = type(value)
            if kind is str:
                if exact:
                    hit = exact.get(value)
                    if hit:
                        out.update(hit)
                if pairs and value in pairs:
                    self._pair(value, flat, out)
                lowered = None
                if self.ignore_case:
                    lowered = value.lower()
                    hit = self.ignore_case.get(lowered)
                    if hit:
                        out.update(hit)
                if self.prefix or self.suffix:
                    (p_plain, p_ic), (s_plain, s_ic) = self._lengths()
                    size = len(value)
                    for n in p_plain:
                        if n > size:
                            break
                        hit = self.prefix.get((False, value[:n]))
                        if hit:
                            out.update(hit)
                    for n in s_plain:
                        if n > size:
                            break
                        hit = self.suffix.get((False, value[size - n:]))
                        if hit:
                            out.update(hit)
                    if p_ic or s_ic:
                        lowered = value.lower() if lowered is None else lowered
                        size = len(lowered)
                        for n in p_ic:
                            if n > size:
                                break
                            hit = self.prefix.get((True, lowered[:n]))
                            if hit:
                                out.update(hit)
                        for n in s_ic:
                            if n > size:
                                break
                            hit = self.suffix.get((True, lowered[size - n:]))
                            if hit:
                                out.update(hit)
            elif kind is int or kind is float:
                if exact:
                    hit = exact.get(float(value))
                    if hit:
                        out.update(hit)
                if pairs and float(value) in pairs:
                    self._pair(float(value), flat, out)
                if self.ranges:
                    if self._points is None:
                        self._build_segments()
                    points = self._points
                    i = bisect_left(points, value)
                    segment = 2 * i + 1 if i < len(points) and points[i] == value else 2 * i
                    hit = self._segments[segment]
                    if hit:
                        out.update(hit)
            else:
                key = leaf_key(value)
                if exact:
                    hit = exact.get(key)
                    if hit:
                        out.update(hit)
                if pairs and key in pairs:
                    self._pair(key, flat, out)


class Matcher:
    """Many compiled policies of one scope, indexed; ``match`` returns the keys
    of those a message passes, exactly as ``{k for k, p in ... if p.matches(m)}``
    would, at a cost that follows the message rather than the policy count.

    ``scope`` is ``"attributes"`` or ``"body"`` (SNS filter policies) or
    ``"pattern"`` (EventBridge patterns). Not thread-safe: guard it with a lock
    if threads share it.
    """

    def __init__(self, scope: str = "attributes"):
        if scope not in SCOPES:
            raise InvalidParameter(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
        self.scope = scope
        self._policies: dict = {}  # key -> (Policy, [branch ids])
        self._branches: dict = {}  # branch id -> (key, branch)
        self._fields: dict = {}  # path -> _Field, rebuilt when _dirty
        self._unanchored: set = set()
        self._checks: dict = {}
        self._match_all: set = set()
        self._dirty = False
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._policies)

    def __contains__(self, key) -> bool:
        return key in self._policies

    def policy(self, key) -> Policy:
        """The compiled policy filed under ``key`` (KeyError if none)."""
        return self._policies[key][0]

    def add(self, key, policy) -> Policy:
        """Files ``policy`` (a :class:`Policy` of this scope, or a dict / JSON
        text compiled for it) under ``key``, replacing any policy already there.
        Returns the compiled policy; raises InvalidPattern before changing
        anything if it does not compile."""
        if isinstance(policy, Policy):
            if policy.scope != self.scope:
                raise InvalidParameter(f"a {policy.scope!r} policy cannot join a {self.scope!r} matcher")
            compiled = policy
        else:
            compiled = compile_for_scope(policy, self.scope)
        if key in self._policies:
            self.remove(key)
        ids = []
        for branch in compiled.branches:
            self._branches[self._next_id] = (key, branch)
            ids.append(self._next_id)
            self._next_id += 1
        if compiled.match_all:
            self._match_all.add(key)
        self._policies[key] = (compiled, ids)
        self._dirty = True
        return compiled

    def remove(self, key) -> None:
        """Drops the policy filed under ``key`` (KeyError if there is none)."""
        _, ids = self._policies.pop(key)
        self._match_all.discard(key)
        for bid in ids:
            del self._branches[bid]
        self._dirty = True

    def _reindex(self) -> None:
        # Anchors depend on what every policy names (the statistics), so a
        # change re-chooses them all: O(conditions), paid at the first match
        # after a change, as a subscription change is rare next to publishes.
        stats: dict = {}
        for _, branch in self._branches.values():
            for test in branch:
                field = stats.get(test.path)
                if field is None:
                    field = stats[test.path] = _Stats()
                for kind, akey in test_anchors(test) or ():
                    field.note(kind, akey)
        fields: dict = {}
        unanchored = set()
        checks: dict = {}  # branch id -> (key, the tests left to check once it fires, all tests)
        for bid, (key, branch) in self._branches.items():
            anchor = choose_anchor(branch, stats)
            if anchor is None:
                unanchored.add(bid)
                checks[bid] = (key, branch, branch)
                continue
            test, anchors, partner = anchor
            field = fields.get(test.path)
            if field is None:
                field = fields[test.path] = _Field()
            if partner is None:
                for kind, akey in anchors:
                    field.file(kind, akey, bid)
                rest = tuple(t for t in branch if t is not test) if anchor_decides(test, anchors) else branch
            else:
                # Exact values decide both tests: only the others are left to check.
                other, partner_keys = partner
                for _, akey in anchors:
                    for pkey in partner_keys:
                        field.file_pair(akey, other.path, pkey, bid)
                rest = tuple(t for t in branch if t is not test and t is not other)
            checks[bid] = (key, rest, branch)
        self._fields, self._unanchored, self._checks, self._dirty = fields, unanchored, checks, False

    def flatten(self, message):
        """The message as this scope's matcher sees it (see walq.match.values)."""
        if self.scope == "attributes":
            return flatten_attributes(message)
        return flatten_document(message)

    def match(self, message) -> set:
        """Keys of the policies ``message`` passes: attributes (dict) for
        scope ``"attributes"``, the body (JSON text or dict) for ``"body"``,
        the event for ``"pattern"``."""
        return self.match_flat(self.flatten(message))

    def match_flat(self, flat) -> set:
        """Like :meth:`match`, on a message already flattened."""
        if flat is None:
            return set(self._match_all)
        if self._dirty:
            self._reindex()
        candidates = set(self._unanchored)
        fields = self._fields
        if len(flat) <= len(fields):
            for path, leaves in flat.items():
                field = fields.get(path)
                if field is not None:
                    field.collect(leaves, candidates, flat)
        else:
            for path, field in fields.items():
                leaves = flat.get(path)
                if leaves:
                    field.collect(leaves, candidates, flat)
        matched = set()
        checks = self._checks
        arrays = getattr(flat, "members", None)
        for bid in candidates:
            key, rest, branch = checks[bid]
            if key in matched:
                continue
            for test in rest:
                if not test.satisfied(flat.get(test.path)):
                    break
            else:
                if arrays is None or consistent(branch, flat):
                    matched.add(key)
        return matched
