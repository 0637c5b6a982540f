"""The one place walq.topic meets the filter-policy matcher.

Everything in walq/topic calls ``compile_policy``, ``new_matcher`` and
``attribute_view`` from here.  When the ``walq.match`` package is present
they are its ``compile_filter_policy`` and ``Matcher(scope)``; until then a small
FALLBACK below stands in for them (exact strings and numbers, ``prefix``,
``numeric``, ``exists``, ``anything-but`` values; OR within a list, AND
across keys; nested keys in body scope).  The fallback is to be replaced by
walq.match, which owns SNS's complete language, limits and reason texts.
"""

from __future__ import annotations

import json
import operator

from walq.errors import InvalidParameter, InvalidPattern

SCOPES = ("attributes", "body")

try:  # pragma: no cover - taken once walq.match exists
    from walq.match import Matcher, compile_filter_policy as _compile  # type: ignore
    FALLBACK = False
except ImportError:
    FALLBACK = True


def parse_policy(policy) -> dict:
    """A filter policy given as a dict or JSON text, as a dict;
    InvalidPattern if it is neither."""
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError as exc:
            raise InvalidPattern(f"Invalid parameter: FilterPolicy: failed to parse JSON ({exc})") from None
    if not isinstance(policy, dict):
        raise InvalidPattern("Invalid parameter: FilterPolicy: the policy must be a JSON object")
    return policy


def compile_policy(policy, scope: str):
    """The compiled form of ``policy`` (a dict or JSON text) for ``scope``
    ("attributes" or "body"); InvalidPattern with SNS's reason if SNS would
    refuse it."""
    if scope not in SCOPES:
        raise InvalidParameter(f"filter_scope must be 'attributes' or 'body'; got {scope!r}")
    policy = parse_policy(policy)
    if not FALLBACK:  # pragma: no cover
        return _compile(policy, scope)
    return _FallbackPolicy(policy, scope)


def new_matcher(scope: str):
    """An empty matcher of ``scope`` ("attributes" or "body"): ``add(key,
    compiled)``, ``remove(key)``, ``match(attributes or parsed body) -> set of keys``."""
    return Matcher(scope)


def attribute_view(attributes: dict) -> dict:
    """A publish's attributes as the matcher takes them in attribute scope:
    name -> value (str, int/float for Number, bytes for Binary)."""
    return attributes


# -- FALLBACK: replaced by walq.match --------------------------------------------------

_MAX_KEYS = 5
_MAX_COMBINATIONS = 150


def _check_rules(key: str, rules) -> int:
    """Validates one key's list of rules; returns how many values it has."""
    if not isinstance(rules, list) or not rules:
        raise InvalidPattern(f"Invalid parameter: FilterPolicy: \"{key}\" must be a non-empty array")
    for rule in rules:
        if isinstance(rule, (str, int, float)) and not isinstance(rule, bool):
            continue
        if not isinstance(rule, dict) or len(rule) != 1:
            raise InvalidPattern(f"Invalid parameter: FilterPolicy: Unrecognized match type for \"{key}\"")
        (op, arg), = rule.items()
        if op == "prefix" and isinstance(arg, str) and arg:
            continue
        if op == "exists" and isinstance(arg, bool):
            continue
        if op == "anything-but" and (isinstance(arg, (str, int, float)) or
                                     (isinstance(arg, list) and arg and all(isinstance(a, (str, int, float)) for a in arg))):
            continue
        if op == "numeric" and isinstance(arg, list) and _numeric_ok(arg):
            continue
        raise InvalidPattern(f"Invalid parameter: FilterPolicy: Unrecognized match type {op}")
    return len(rules)


def _numeric_ok(arg: list) -> bool:
    if len(arg) not in (2, 4):
        return False
    for i in range(0, len(arg), 2):
        if arg[i] not in ("=", "<", "<=", ">", ">=") or isinstance(arg[i + 1], bool) \
                or not isinstance(arg[i + 1], (int, float)):
            return False
    return True


def _leaves(policy: dict, path=()) -> list:
    out = []
    for key, value in policy.items():
        if isinstance(value, dict):
            out += _leaves(value, path + (key,))
        else:
            out.append((path + (key,), value))
    return out


class _FallbackPolicy:
    """A filter policy, checked and ready to match (FALLBACK)."""

    def __init__(self, policy: dict, scope: str):
        leaves = _leaves(policy) if scope == "body" else list(((k,), v) for k, v in policy.items())
        if scope == "attributes":
            for (key,), value in leaves:
                if isinstance(value, dict):
                    raise InvalidPattern("Invalid parameter: FilterPolicy: nested keys need filter_scope='body'")
        if len(leaves) > _MAX_KEYS:
            raise InvalidPattern("Invalid parameter: FilterPolicy: Filter policy can not have more than 5 keys")
        combinations = 1
        for path, rules in leaves:
            combinations *= _check_rules(".".join(path), rules)
        if combinations > _MAX_COMBINATIONS:
            raise InvalidPattern("Invalid parameter: FilterPolicy: Filter policy is too complex")
        self.scope = scope
        self.leaves = leaves

    def matches(self, doc) -> bool:
        """True if ``doc`` (attributes, or a parsed JSON body) passes every key."""
        for path, rules in self.leaves:
            present, value = _lookup(doc, path)
            if not any(_rule_matches(r, present, value, self.scope) for r in rules):
                return False
        return True


def _lookup(doc, path):
    cur = doc
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return False, None
        cur = cur[key]
    return True, cur


def _values(value) -> list:
    return value if isinstance(value, list) else [value]


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rule_matches(rule, present: bool, value, scope: str) -> bool:
    if isinstance(rule, dict):
        (op, arg), = rule.items()
        if op == "exists":
            return present == arg
        if not present:
            return False
        vals = _values(value)
        if op == "prefix":
            return any(isinstance(v, str) and v.startswith(arg) for v in vals)
        if op == "numeric":
            return any(_is_num(v) and _numeric(arg, v) for v in vals)
        if op == "anything-but":
            banned = _values(arg)
            return any(not any(v == b and type(v) is not bool for b in banned) for v in vals)
        return False
    if not present:
        return False
    for v in _values(value):
        if isinstance(rule, str) and isinstance(v, str) and v == rule:
            return True
        # A Number attribute matches only through "numeric"; in the body,
        # numbers match numbers exactly.
        if scope == "body" and _is_num(rule) and _is_num(v) and v == rule:
            return True
    return False


_OPS = {"=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _numeric(arg: list, v) -> bool:
    return all(_OPS[arg[i]](v, arg[i + 1]) for i in range(0, len(arg), 2))


class _FallbackMatcher:
    """Keys -> compiled policies; ``match(doc)`` is the set of keys whose
    policy matches (FALLBACK: one policy at a time)."""

    def __init__(self, scope: str = "attributes"):
        self.scope = scope
        self._policies: dict = {}

    def add(self, key, compiled) -> None:
        """Adds (or replaces) ``key``'s policy (compiled, or a dict)."""
        if not isinstance(compiled, _FallbackPolicy):
            compiled = _FallbackPolicy(parse_policy(compiled), self.scope)
        self._policies[key] = compiled

    def remove(self, key) -> None:
        """Forgets ``key``."""
        self._policies.pop(key, None)

    def match(self, doc) -> set:
        """Keys whose policy matches ``doc`` (attributes or a parsed body)."""
        return {k for k, p in self._policies.items() if p.matches(doc)}


if FALLBACK:
    Matcher = _FallbackMatcher
