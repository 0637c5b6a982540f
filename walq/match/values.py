"""Messages as the matcher sees them: a flat dict ``path -> [leaf, ...]``.

Attributes (SNS ``filter_scope="attributes"``) are ``name -> value``; each value
is one of:

- ``str`` (SNS ``String``), ``int`` / ``float`` (``Number``), ``bytes`` (``Binary``),
  ``list`` (``String.Array``, already parsed) - exactly what walq's queue
  message attributes hold, so they need no conversion;
- ``(type, value)`` with SNS's type name: ``("String", "x")``,
  ``("Number", "3.015e2")``, ``("String.Array", '["a", 1]')``, ``("Binary", b"..")``
  (a ``String.Custom``-style suffix after the type is ignored, as SNS does);
- SNS's wire form ``{"Type": ..., "Value": ...}`` or SQS's
  ``{"DataType": ..., "StringValue": ...}``.

SNS compares policies with String, String.Array and Number attributes only, so a
Binary attribute contributes no leaf (and counts as absent). A String.Array
matches when any element does. A JSON body or an EventBridge event is flattened
the way event-ruler flattens: nested keys joined with ``.``, every element of an
array (at any depth) a leaf of the same path. Each leaf also records which array
elements it sits in (event-ruler's "array consistency", see walq/match/arrays.py).
"""

from __future__ import annotations

import json

from walq.errors import InvalidParameter

_SCALARS = (str, int, float, bool, type(None))


def _number(text):
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    try:
        return int(text)
    except (TypeError, ValueError):
        pass
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _array_leaves(value) -> list:
    if isinstance(value, (str, bytes, bytearray)):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if not isinstance(value, list):
        value = [value]
    return [v for v in value if type(v) in _SCALARS]


def _typed(name, kind, value) -> list:
    base = kind.split(".", 1)[0] if kind != "String.Array" else kind
    if base == "String":
        return [value] if isinstance(value, str) else []
    if base == "Number":
        number = _number(value)
        return [] if number is None else [number]
    if base == "String.Array":
        return _array_leaves(value)
    if base == "Binary":
        return []
    raise InvalidParameter(f"message attribute {name!r} has unknown SNS type {kind!r}")


def flatten_attributes(attributes) -> dict:
    """``name -> [leaf, ...]`` for a message's attributes (see the module doc)."""
    if not attributes:
        return {}
    if not isinstance(attributes, dict):
        raise InvalidParameter("attributes must be a dict of name -> value")
    flat = {}
    for name, value in attributes.items():
        kind = type(value)
        if kind is str or kind is int or kind is float:
            flat[name] = [value]
        elif kind is list:
            leaves = [v for v in value if type(v) in _SCALARS]
            if leaves:
                flat[name] = leaves
        elif kind is tuple and len(value) == 2 and isinstance(value[0], str):
            leaves = _typed(name, value[0], value[1])
            if leaves:
                flat[name] = leaves
        elif kind is dict:
            typ = value.get("Type", value.get("DataType"))
            if not isinstance(typ, str):
                raise InvalidParameter(f"message attribute {name!r} has no Type/DataType")
            raw = value.get("Value", value.get("StringValue", value.get("BinaryValue")))
            leaves = _typed(name, typ, raw)
            if leaves:
                flat[name] = leaves
        elif kind in (bytes, bytearray, memoryview):
            continue
        else:
            raise InvalidParameter(
                f"message attribute {name!r} has type {kind.__name__}; use str, int, float, bytes, "
                "list or (type, value)"
            )
    return flat


class Flat(dict):
    """``path -> [leaf, ...]`` of a JSON document; ``members`` holds, per path, each
    leaf's array membership - a tuple of ``(array id, index)``, outermost first -
    or is None when no leaf sits in an array, so that matching can insist
    that fields met inside an array of objects come from the same element.
    ``arrayed``: the paths with some leaf inside an array."""

    __slots__ = ("members", "arrayed")


def flatten_document(document) -> Flat | None:
    """``path -> [leaf, ...]`` for a JSON object (dict, or JSON text); None when
    it is not a JSON object, which no non-empty policy matches."""
    if isinstance(document, (str, bytes, bytearray)):
        try:
            document = json.loads(document)
        except ValueError:
            return None
    if not isinstance(document, dict):
        return None
    flat = Flat()
    members: dict = {}
    arrays = [0]
    arrayed: set = set()
    for key, value in document.items():
        _add(value, key, flat, members, (), arrays, arrayed)
    # A leaf outside every array is compatible with any other, so with no
    # leaf inside one (an EventBridge event's empty "resources") there is
    # nothing for array consistency to check.
    flat.members = members if arrayed else None
    flat.arrayed = arrayed
    return flat


def _add(value, path: str, flat: dict, members: dict, member: tuple, arrays: list, arrayed: set) -> None:
    kind = type(value)
    if kind is dict:
        for key, child in value.items():
            _add(child, f"{path}.{key}", flat, members, member, arrays, arrayed)
    elif kind is list:
        arrays[0] += 1
        array = arrays[0]
        for index, element in enumerate(value):
            _add(element, path, flat, members, member + ((array, index),), arrays, arrayed)
    elif kind in _SCALARS:
        if member:
            arrayed.add(path)
        leaves = flat.get(path)
        if leaves is None:
            flat[path] = [value]
            members[path] = [member]
        else:
            leaves.append(value)
            members[path].append(member)
