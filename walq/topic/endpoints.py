"""Subscription endpoints: a queue of the same store, an HTTP(S) URL, or a
handler (a module-level function, or its import path "package.module:function")."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import types
from typing import NamedTuple
from urllib.parse import urlsplit

from walq.errors import InvalidParameter

_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_MAX_URL = 2048


class Endpoint(NamedTuple):
    """What ``subscribe`` was given, classified: ``protocol`` ("sqs",
    "http", "https" or "handler") and ``endpoint`` as stored (the queue's
    name, the URL, or "package.module:function")."""

    protocol: str
    endpoint: str


def classify(broker, endpoint) -> Endpoint:
    """Classifies and validates ``endpoint``; InvalidParameter (changing
    nothing) for anything a subscription cannot be made to."""
    from walq.queue.queue import Queue  # walq.queue imports nothing of ours; kept local for clarity

    if isinstance(endpoint, Queue):
        mine = os.path.realpath(broker.path)
        theirs = os.path.realpath(endpoint._broker.path)
        if mine != theirs:
            raise InvalidParameter(
                f"queue {endpoint.name!r} belongs to the store at {theirs}, not this topic's store at {mine}")
        return Endpoint("sqs", endpoint.name)
    if isinstance(endpoint, str):
        if endpoint.startswith(("http://", "https://")):
            return Endpoint(_check_url(endpoint), endpoint)
        if _IMPORT_PATH.match(endpoint):
            _resolve(endpoint)
            return Endpoint("handler", endpoint)
        raise InvalidParameter(
            f"unknown endpoint {endpoint!r}: give a walq.Queue, an http:// or https:// URL, "
            "a module-level function, or its import path 'package.module:function'")
    if isinstance(endpoint, types.FunctionType):
        return Endpoint("handler", _import_path_of(endpoint))
    raise InvalidParameter(
        f"unknown endpoint kind {type(endpoint).__name__}: give a walq.Queue, an http:// or https:// URL, "
        "a module-level function, or its import path 'package.module:function'")


def _check_url(url: str) -> str:
    if len(url) > _MAX_URL:
        raise InvalidParameter(f"endpoint URL longer than {_MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidParameter(f"endpoint URL {url!r} contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError if out of range or not a number
    except ValueError as exc:
        raise InvalidParameter(f"invalid endpoint URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameter(f"invalid endpoint URL {url!r}: needs http:// or https:// and a host")
    if port == 0:
        raise InvalidParameter(f"invalid endpoint URL {url!r}: port 0")
    return parts.scheme


def _import_path_of(fn: types.FunctionType) -> str:
    """``"module:function"`` for a module-level function; InvalidParameter
    for a lambda, a closure or a nested function: a subscription outlives
    the process that made it, and another process must import the handler."""
    name, qual, module = fn.__name__, fn.__qualname__, fn.__module__
    if name == "<lambda>":
        raise InvalidParameter("a lambda cannot be a handler: a subscription outlives the process that "
                               "made it; give a module-level function or 'package.module:function'")
    if "<locals>" in qual or qual != name or fn.__closure__:
        raise InvalidParameter(f"handler {qual!r} is a closure or nested function: a subscription outlives "
                               "the process that made it; give a module-level function")
    if not module or module == "__main__":
        raise InvalidParameter(f"handler {qual!r} is defined in __main__, which another process cannot "
                               "import; move it to a module and pass it or 'package.module:function'")
    path = f"{module}:{name}"
    if _resolve(path) is not fn:
        raise InvalidParameter(f"handler {qual!r} is not what {path!r} imports; give a module-level function")
    return path


def _resolve(path: str):
    """Imports ``"package.module:function"``; InvalidParameter unless it
    names a module-level function."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure means: not importable
        raise InvalidParameter(f"handler {path!r} is not importable: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise InvalidParameter(f"handler {path!r} is not importable: module {module_name!r} has no {attr!r}")
    if not inspect.isfunction(fn) and not inspect.isbuiltin(fn):
        raise InvalidParameter(f"handler {path!r} is a {type(fn).__name__}, not a function")
    return fn
