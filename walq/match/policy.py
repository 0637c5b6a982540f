"""A compiled policy: validated once, then matched against many messages."""

from __future__ import annotations

from walq.errors import InvalidParameter
from walq.match import compiler
from walq.match.arrays import consistent
from walq.match.values import flatten_attributes, flatten_document

SCOPES = ("attributes", "body", "pattern")


class Policy:
    """An SNS filter policy (scope ``"attributes"`` or ``"body"``) or an
    EventBridge pattern (scope ``"pattern"``), compiled.

    ``branches`` is the policy in disjunctive normal form: a tuple of branches,
    each a tuple of :class:`~walq.match.compiler.FieldTest`; the policy matches
    a message when every test of some branch holds. ``source`` is the policy
    as a dict.
    """

    __slots__ = ("scope", "source", "branches", "match_all")

    def __init__(self, scope: str, source: dict, branches):
        self.scope = scope
        self.source = source
        self.branches = tuple(branches)
        self.match_all = any(not b for b in self.branches)

    def flatten(self, message):
        """The message as ``path -> [leaf, ...]`` for this scope (None: not JSON)."""
        if self.scope == "attributes":
            return flatten_attributes(message)
        return flatten_document(message)

    def matches(self, message) -> bool:
        """True if ``message`` passes: attributes (dict) for scope
        ``"attributes"``, the message body (JSON text or dict) for ``"body"``,
        the event (dict or JSON text) for ``"pattern"``."""
        return self.matches_flat(self.flatten(message))

    def matches_flat(self, flat) -> bool:
        """Like :meth:`matches`, on a message already flattened."""
        if flat is None:
            return self.match_all
        arrays = getattr(flat, "members", None)
        for branch in self.branches:
            for test in branch:
                if not test.satisfied(flat.get(test.path)):
                    break
            else:
                if arrays is None or consistent(branch, flat):
                    return True
        return False

    def __repr__(self) -> str:
        return f"Policy(scope={self.scope!r}, source={self.source!r})"


def compile_filter_policy(policy, scope: str = "attributes") -> Policy:
    """Compiles an SNS filter policy (dict or JSON text) for ``scope``
    ``"attributes"`` (message attributes) or ``"body"`` (the JSON message).

    Raises :class:`walq.InvalidPattern` with SNS's reason text when SNS would
    refuse the policy. An empty policy ``{}`` matches every message.
    """
    if scope not in ("attributes", "body"):
        raise InvalidParameter(f"filter_scope must be 'attributes' or 'body'; got {scope!r}")
    dialect = compiler.DIALECTS[scope]
    source = compiler.load(policy, dialect)
    return Policy(scope, source, compiler.compile_branches(source, dialect))


def compile_pattern(pattern) -> Policy:
    """Compiles an EventBridge event pattern (dict or JSON text); raises
    :class:`walq.InvalidPattern` with EventBridge's reason text."""
    dialect = compiler.EVENTBRIDGE
    source = compiler.load(pattern, dialect)
    return Policy("pattern", source, compiler.compile_branches(source, dialect))


def compile_for_scope(policy, scope: str) -> Policy:
    """Compiles ``policy`` in the language of ``scope`` (one of SCOPES)."""
    if scope == "pattern":
        return compile_pattern(policy)
    return compile_filter_policy(policy, scope)


def pattern_matches(pattern, event) -> bool:
    """EventBridge's TestEventPattern: does ``event`` (dict or JSON text) match
    ``pattern`` (dict or JSON text)? Raises :class:`walq.InvalidPattern` for an
    invalid pattern."""
    compiled = pattern if isinstance(pattern, Policy) and pattern.scope == "pattern" else compile_pattern(pattern)
    return compiled.matches(event)
