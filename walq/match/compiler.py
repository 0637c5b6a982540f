"""Parse and validate SNS filter policies and EventBridge patterns into branches.

Both languages share one shape: an object whose keys name fields (nested
objects name nested fields, joined with ``.`` as EventBridge and SNS flatten
them) and whose leaves are non-empty arrays of match values, OR-ed; keys are
AND-ed; ``"$or": [obj, obj...]`` ORs whole sub-patterns. Compiling expands
``$or`` into *branches* (disjunctive normal form): a policy matches when every
field test of some branch does. The two dialects differ only in which
operators they accept, their limits and the wording of their errors:

- SNS: errors read ``Invalid parameter: FilterPolicy: <reason>``; at most 5
  top-level keys per branch (nested fields count as their parent), at most 150 value combinations, numbers within
  -1,000,000,000..1,000,000,000; no ``wildcard``, no ``equals-ignore-case``
  inside ``prefix``/``suffix``; ``anything-but`` takes values, ``prefix`` or
  ``suffix``; attribute scope refuses nesting.
- EventBridge: errors read ``Event pattern is not valid. Reason: <reason>``.
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass

from walq.errors import InvalidPattern
from walq.match import conditions as c

SNS_MAX_KEYS = 5
SNS_MAX_COMBINATIONS = 150
SNS_NUMBER_LIMIT = 1_000_000_000
MAX_WILDCARDS = 5  # EventBridge refuses patterns with more (its "too complex")
MAX_BRANCHES = 10_000  # $or expansions beyond this are refused rather than built

_NUMERIC_OPS = ("<", "<=", "=", ">", ">=")
_SNS_ANYTHING_BUT = ("prefix", "suffix")
_EB_ANYTHING_BUT = ("prefix", "suffix", "equals-ignore-case", "wildcard")


@dataclass(frozen=True)
class Dialect:
    """Which language a policy is written in, and where it looks."""

    name: str  # "attributes", "body" (SNS scopes) or "pattern" (EventBridge)
    error_prefix: str

    @property
    def sns(self) -> bool:
        return self.name != "pattern"


SNS_ATTRIBUTES = Dialect("attributes", "Invalid parameter: FilterPolicy: ")
SNS_BODY = Dialect("body", "Invalid parameter: FilterPolicy: ")
EVENTBRIDGE = Dialect("pattern", "Event pattern is not valid. Reason: ")
DIALECTS = {d.name: d for d in (SNS_ATTRIBUTES, SNS_BODY, EVENTBRIDGE)}


class FieldTest:
    """One field of a branch: some leaf at ``path`` meets some condition, or
    (``absent_ok``, from ``{"exists": false}``) the field has no leaf at all."""

    __slots__ = ("path", "conditions", "absent_ok", "_strings", "_keys", "_others")

    def __init__(self, path: str, conditions: tuple, absent_ok: bool):
        self.path, self.conditions, self.absent_ok = path, conditions, absent_ok
        # Exact values are tested by one set lookup; the rest one by one.
        exact = [cond.key for cond in conditions if type(cond) is c.Exact]
        self._strings = frozenset(k for k in exact if type(k) is str)
        self._keys = frozenset(k for k in exact if type(k) is not str)
        self._others = tuple(cond for cond in conditions if type(cond) is not c.Exact)

    def satisfied(self, leaves) -> bool:
        """True if the leaves found at ``path`` (None when absent) pass."""
        if not leaves:
            return self.absent_ok
        strings, keys = self._strings, self._keys
        for leaf in leaves:
            if type(leaf) is str:
                if leaf in strings:
                    return True
            elif keys and c.leaf_key(leaf) in keys:
                return True
        for condition in self._others:
            for leaf in leaves:
                if condition.test(leaf):
                    return True
        return False

    def matching(self, leaves) -> list:
        """Indexes of the leaves that meet some condition."""
        strings, keys, others = self._strings, self._keys, self._others
        found = []
        for i, leaf in enumerate(leaves):
            if type(leaf) is str and leaf in strings:
                found.append(i)
            elif keys and type(leaf) is not str and c.leaf_key(leaf) in keys:
                found.append(i)
            elif any(condition.test(leaf) for condition in others):
                found.append(i)
        return found

    def __repr__(self) -> str:
        return f"FieldTest({self.path!r}, {self.conditions!r}, absent_ok={self.absent_ok})"


def load(policy, dialect: Dialect) -> dict:
    """A policy given as dict or JSON text, as a dict; InvalidPattern otherwise."""
    if isinstance(policy, (bytes, bytearray)):
        policy = bytes(policy).decode("utf-8", "replace")
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError as exc:
            raise InvalidPattern(f"{dialect.error_prefix}Filter is not valid JSON: {exc}") from None
    if not isinstance(policy, dict):
        raise InvalidPattern(f"{dialect.error_prefix}Filter is not an object")
    return policy


def compile_branches(policy: dict, dialect: Dialect) -> list[tuple[FieldTest, ...]]:
    """Validates ``policy`` (already a dict) and returns its branches."""
    branches = _walk(policy, "", 1, dialect)
    if dialect.sns:
        if _combinations(policy, 1, 1) > SNS_MAX_COMBINATIONS:
            raise InvalidPattern(f"{dialect.error_prefix}Filter policy is too complex")
        for branch in branches:
            # "For a nested policy, only parent keys are counted" (SNS's docs).
            if len({top for _, _, _, top in branch}) > SNS_MAX_KEYS:
                raise InvalidPattern(
                    f"{dialect.error_prefix}Filter policy can not have more than {SNS_MAX_KEYS} keys"
                )
    return [tuple(FieldTest(path, tuple(conds), absent_ok) for path, conds, absent_ok, _ in b)
            for b in branches]


def _walk(obj: dict, prefix: str, depth: int, dialect: Dialect, top: str | None = None) -> list[list]:
    """DNF of one object: a list of branches, each a list of
    (path, [conditions], absent_ok, top-level key it sits under).

    A field may appear twice in a branch (named directly and inside ``$or``):
    both tests must then hold, so they stay separate."""
    branches: list[list] = [[]]
    for key, value in obj.items():
        if key == "$or":
            if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
                raise InvalidPattern(f'{dialect.error_prefix}"$or" must be an array of objects')
            alternatives = [b for sub in value for b in _walk(sub, prefix, depth, dialect, top)]
            branches = [b + alt for b in branches for alt in alternatives]
            _check_branches(branches, dialect)
            continue
        if not isinstance(key, str):
            raise InvalidPattern(f"{dialect.error_prefix}field names must be strings; got {key!r}")
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            if dialect.name == "attributes":
                # SNS words this one without the "FilterPolicy:" part.
                raise InvalidPattern(
                    "Invalid parameter: Filter policy scope MessageAttributes does not support nested filter policy"
                )
            nested = _walk(value, path, depth + 1, dialect, key if top is None else top)
            branches = [b + n for b in branches for n in nested]
            _check_branches(branches, dialect)
        elif isinstance(value, list):
            if not value:
                raise InvalidPattern(f"{dialect.error_prefix}Empty arrays are not allowed")
            conds, absent_ok = _field(value, dialect)
            entry = (path, conds, absent_ok, key if top is None else top)
            branches = [b + [entry] for b in branches]
        else:
            raise InvalidPattern(f'{dialect.error_prefix}"{key}" must be an object or an array')
    return branches


def _check_branches(branches: list, dialect: Dialect) -> None:
    if len(branches) > MAX_BRANCHES:
        raise InvalidPattern(f"{dialect.error_prefix}Rule is too complex: more than {MAX_BRANCHES} $or combinations")


def _combinations(obj: dict, depth: int, acc: int) -> int:
    """SNS's complexity count: values per array multiplied together (each
    weighted by its nesting depth, as SNS's nested example counts), and
    ``$or`` branches added."""
    for key, value in obj.items():
        if key == "$or" and isinstance(value, list):
            acc = sum(_combinations(sub, depth, acc) for sub in value if isinstance(sub, dict))
        elif isinstance(value, dict):
            acc = _combinations(value, depth + 1, acc)
        elif isinstance(value, list):
            acc = acc * len(value) * depth
    return acc


def _field(values: list, dialect: Dialect) -> tuple[list, bool]:
    conds, absent_ok = [], False
    for value in values:
        if isinstance(value, dict):
            cond = _operator(value, dialect)
            if cond is None:
                absent_ok = True
            else:
                conds.append(cond)
        else:
            conds.append(_literal(value, dialect))
    return conds, absent_ok


def _literal(value, dialect: Dialect) -> c.Condition:
    if value is None or isinstance(value, (str, bool)):
        return c.Exact(value)
    if isinstance(value, (int, float)):
        _check_number(value, dialect)
        return c.Exact(value)
    raise InvalidPattern(f"{dialect.error_prefix}Match value must be String, number, true, false, or null")


def _check_number(value, dialect: Dialect) -> None:
    if not math.isfinite(value):
        raise InvalidPattern(f"{dialect.error_prefix}Numbers must be finite; got {value}")
    if dialect.sns and abs(value) > SNS_NUMBER_LIMIT:
        raise InvalidPattern(
            f"{dialect.error_prefix}Numeric value {value} is out of range: SNS accepts "
            f"-{SNS_NUMBER_LIMIT} to {SNS_NUMBER_LIMIT}"
        )


def _operator(expr: dict, dialect: Dialect):
    """One ``{"op": arg}`` match expression; None stands for ``exists: false``."""
    p = dialect.error_prefix
    if len(expr) != 1:
        raise InvalidPattern(f"{p}Only one key allowed in match expression")
    ((op, arg),) = expr.items()
    if op in ("prefix", "suffix"):
        kind = c.Prefix if op == "prefix" else c.Suffix
        if isinstance(arg, dict) and not dialect.sns:
            if list(arg) != ["equals-ignore-case"]:
                raise InvalidPattern(f"{p}Unsupported {op} pattern: {next(iter(arg), '')}")
            text = arg["equals-ignore-case"]
            if not isinstance(text, str):
                raise InvalidPattern(f"{p}equals-ignore-case match pattern must be a string")
            return kind(text, ignore_case=True)
        if not isinstance(arg, str):
            raise InvalidPattern(f"{p}{op} match pattern must be a string")
        return kind(arg)
    if op == "equals-ignore-case":
        if not isinstance(arg, str):
            raise InvalidPattern(f"{p}equals-ignore-case match pattern must be a string")
        return c.IgnoreCase(arg)
    if op == "anything-but":
        return c.AnythingBut(_anything_but(arg, dialect))
    if op == "numeric":
        return _numeric(arg, dialect)
    if op == "exists":
        if not isinstance(arg, bool):
            raise InvalidPattern(f"{p}exists match pattern must be either true or false.")
        return c.Exists() if arg else None
    if op == "cidr":
        return c.Cidr(_cidr(arg, dialect))
    if op == "wildcard" and not dialect.sns:
        return c.Wildcard(_wildcard(arg, dialect))
    raise InvalidPattern(f"{p}Unrecognized match type {op}")


def _anything_but(arg, dialect: Dialect) -> list:
    p = dialect.error_prefix
    if isinstance(arg, bool) or arg is None:
        raise InvalidPattern(f"{p}Value of anything-but must be an array or single string/number value.")
    if isinstance(arg, (str, int, float)):
        return [_literal(arg, dialect)]
    if isinstance(arg, list):
        if not arg:
            raise InvalidPattern(f"{p}Empty arrays are not allowed")
        for v in arg:
            if v is None or isinstance(v, (bool, dict, list)):
                raise InvalidPattern(f"{p}Inside anything but list, start|null|boolean is not supported.")
        return [_literal(v, dialect) for v in arg]
    # A nested operator: {"anything-but": {"prefix": "x"}} and friends.
    allowed = _SNS_ANYTHING_BUT if dialect.sns else _EB_ANYTHING_BUT
    if len(arg) != 1:
        raise InvalidPattern(f"{p}Only one key allowed in match expression")
    ((op, inner),) = arg.items()
    if op not in allowed:
        raise InvalidPattern(f"{p}Unsupported anything-but pattern: {op}")
    texts = inner if isinstance(inner, list) and not dialect.sns else [inner]
    if isinstance(inner, list) and not inner:
        raise InvalidPattern(f"{p}Empty arrays are not allowed")
    out = []
    for text in texts:
        if op in ("prefix", "suffix"):
            if not isinstance(text, str):
                raise InvalidPattern(f"{p}prefix/suffix match pattern must be a string")
            if not text:
                raise InvalidPattern(f"{p}Null prefix/suffix not allowed")
            out.append(c.Prefix(text) if op == "prefix" else c.Suffix(text))
        elif op == "equals-ignore-case":
            if not isinstance(text, str):
                raise InvalidPattern(
                    f"{p}Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported."
                )
            out.append(c.IgnoreCase(text))
        else:
            out.append(c.Wildcard(_wildcard(text, dialect)))
    return out


def _numeric(arg, dialect: Dialect) -> c.Numeric:
    p = dialect.error_prefix
    if not isinstance(arg, list):
        raise InvalidPattern(f"{p}Value of numeric must be an array.")
    if not arg:
        raise InvalidPattern(f"{p}Invalid member in numeric match: ]")
    terms = list(arg)
    bounds = {}
    first = True
    while terms:
        op = terms.pop(0)
        if not isinstance(op, str):
            word = "Invalid member in numeric match" if first else "Bad value in numeric range"
            raise InvalidPattern(f"{p}{word}: {json.dumps(op)}")
        if first and op not in _NUMERIC_OPS:
            raise InvalidPattern(f"{p}Unrecognized numeric range operator: {op}")
        if not first and op not in ("<", "<="):
            raise InvalidPattern(f"{p}Bad numeric range operator: {op}")
        value = terms.pop(0) if terms else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InvalidPattern(f"{p}Value of {'equals' if op == '=' else op} must be numeric")
        _check_number(value, dialect)
        if first and terms and op not in (">", ">="):
            raise InvalidPattern(f"{p}Too many elements in numeric expression")
        if not first:
            if value <= bounds["low"][0]:
                raise InvalidPattern(f"{p}Bottom must be less than top")
            if terms:
                raise InvalidPattern(f"{p}Too many terms in numeric range expression")
        if op in (">", ">="):
            bounds["low"] = (value, op == ">=")
        elif op in ("<", "<="):
            bounds["high"] = (value, op == "<=")
        else:
            bounds["low"] = bounds["high"] = (value, True)
        first = False
    low, low_closed = bounds.get("low", (None, False))
    high, high_closed = bounds.get("high", (None, False))
    return c.Numeric(low, low_closed, high, high_closed)


def _cidr(arg, dialect: Dialect):
    p = dialect.error_prefix
    if not isinstance(arg, str):
        raise InvalidPattern(f"{p}prefix match pattern must be a string")  # SNS words it so
    parts = arg.split("/")
    if len(parts) != 2:
        raise InvalidPattern(f"{p}Malformed CIDR, one '/' required")
    address, bits = parts
    if not bits.isdigit():
        raise InvalidPattern(f"{p}Malformed CIDR, mask bits must be an integer")
    try:
        return ipaddress.ip_network(arg, strict=False)
    except ValueError:
        raise InvalidPattern(f"{p}Nonstandard IP address: {address}") from None


def _wildcard(arg, dialect: Dialect) -> str:
    p = dialect.error_prefix
    if not isinstance(arg, str):
        raise InvalidPattern(f"{p}wildcard match pattern must be a string")
    escaped = False
    stars = 0
    previous_star = False
    for pos, ch in enumerate(arg):
        if escaped:
            escaped, previous_star = False, False
            continue
        if ch == "\\":
            escaped = True
            continue
        if ch == "*":
            if previous_star:
                raise InvalidPattern(f"{p}Consecutive wildcard characters at pos {pos}")
            stars += 1
            previous_star = True
        else:
            previous_star = False
    if stars > MAX_WILDCARDS:
        raise InvalidPattern(
            f"{p}Rule is too complex - try using fewer wildcard characters or fewer repeating "
            "character sequences after a wildcard character"
        )
    return arg
