"""Message attributes: SQS's naming and typing rules, and their encoding."""

from __future__ import annotations

import re
import struct

from walq.errors import InvalidParameter

MAX_ATTRIBUTES = 10
NUMBER_MIN, NUMBER_MAX = -(10**128), 10**126
_ATTR_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_STRING, _NUMBER, _BINARY = 1, 2, 3
_TYPE_NAMES = {_STRING: "String", _NUMBER: "Number", _BINARY: "Binary"}
_ENTRY = struct.Struct("<HBI")


def _check_name(name) -> None:
    if not isinstance(name, str) or not _ATTR_NAME.fullmatch(name):
        raise InvalidParameter(
            f"invalid message attribute name {name!r}: 1-256 characters of A-Z a-z 0-9 _ - ."
        )
    lowered = name.lower()
    if lowered.startswith(("aws.", "amazon.")):
        raise InvalidParameter(f"message attribute name {name!r} uses a reserved prefix (AWS. or Amazon.)")
    if name.startswith(".") or name.endswith(".") or ".." in name:
        raise InvalidParameter(
            f"message attribute name {name!r} must not start or end with '.' or contain '..'"
        )


def _typed(name: str, value) -> tuple[int, bytes]:
    if isinstance(value, bool):
        raise InvalidParameter(f"message attribute {name!r}: booleans are not an SQS type; use str or int")
    if isinstance(value, str):
        if not value:
            raise InvalidParameter(f"message attribute {name!r} has an empty value")
        try:
            return _STRING, value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 for it
            raise InvalidParameter(
                f"message attribute {name!r} is not valid Unicode text: {exc.reason} at {exc.start}"
            ) from None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise InvalidParameter(f"message attribute {name!r}: a Number must be finite")
        # SQS's range for Number; it also keeps a huge int from reaching
        # int-to-str conversion (ValueError past 4300 digits).
        if not NUMBER_MIN <= value <= NUMBER_MAX:
            raise InvalidParameter(f"message attribute {name!r}: a Number must be within -10**128 .. 10**126")
        # The base type's repr: a subclass's (an IntEnum's "<Color.RED: 1>")
        # would not read back as a number.
        text = int.__repr__(value) if isinstance(value, int) else float.__repr__(value)
        return _NUMBER, text.encode("ascii")
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if not raw:
            raise InvalidParameter(f"message attribute {name!r} has an empty value")
        return _BINARY, raw
    raise InvalidParameter(
        f"message attribute {name!r} has type {type(value).__name__}; use str, int, float or bytes"
    )


def encode(attributes) -> tuple[bytes, int]:
    """Validates and encodes; returns ``(encoded, size SQS counts)``.

    The counted size is name + type name + value bytes per attribute, which
    SQS adds to the body when checking the maximum message size.
    """
    if not attributes:
        return b"", 0
    if not isinstance(attributes, dict):
        raise InvalidParameter("attributes must be a dict of name -> str | int | float | bytes")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidParameter(f"at most {MAX_ATTRIBUTES} message attributes; got {len(attributes)}")
    out, counted = [], 0
    for name, value in attributes.items():
        _check_name(name)
        kind, raw = _typed(name, value)
        bname = name.encode("ascii")
        out.append(_ENTRY.pack(len(bname), kind, len(raw)) + bname + raw)
        counted += len(bname) + len(_TYPE_NAMES[kind]) + len(raw)
    return b"".join(out), counted


def decode(raw: bytes) -> dict:
    """Inverse of encode: Number comes back as int when integral, else float."""
    result = {}
    pos = 0
    while pos < len(raw):
        nlen, kind, vlen = _ENTRY.unpack_from(raw, pos)
        pos += _ENTRY.size
        name = raw[pos : pos + nlen].decode("ascii")
        pos += nlen
        value = raw[pos : pos + vlen]
        pos += vlen
        if kind == _STRING:
            result[name] = value.decode("utf-8")
        elif kind == _NUMBER:
            text = value.decode("ascii")
            result[name] = int(text) if text.lstrip("-").isdigit() else float(text)
        else:
            result[name] = value
    return result
