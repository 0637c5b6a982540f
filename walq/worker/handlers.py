"""Handlers: resolving ``"package.module:function"``, and reading what a
queue handler returns (Lambda's partial batch response)."""

from __future__ import annotations

import importlib
import re
from typing import Callable

from walq.errors import InvalidParameter

__all__ = ["resolve", "failed_ids", "BadBatchResponse"]

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


class BadBatchResponse(ValueError):
    """A handler's return value that names messages not in its batch, or
    names them badly (Lambda then fails the whole batch)."""


def resolve(handler) -> Callable:
    """The callable for ``handler``: a callable as is, or the function named
    by ``"package.module:function"`` (imported now).  InvalidParameter if the
    text is malformed, the module does not import, or the name is missing
    or not callable."""
    if callable(handler):
        return handler
    if not isinstance(handler, str) or not _PATH.match(handler):
        raise InvalidParameter(f"handler must be a callable or 'package.module:function'; got {handler!r}")
    module_name, func_name = handler.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidParameter(f"handler {handler!r}: cannot import {module_name}: {exc}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise InvalidParameter(f"handler {handler!r}: module {module_name} has no {func_name!r}")
    if not callable(func):
        raise InvalidParameter(f"handler {handler!r}: {func_name!r} is not callable")
    return func


def _ids(items, where: str) -> list[str]:
    if not isinstance(items, (list, tuple)):
        raise BadBatchResponse(f"{where} is not a list")
    out = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("itemIdentifier")
        if not isinstance(item, str) or not item:
            raise BadBatchResponse(f"{where} holds {item!r}, not a message id")
        out.append(item)
    return out


def failed_ids(result, batch_ids: set[str]) -> set[str]:
    """The message ids a handler's return value reports as failed.

    As Lambda reads an SQS batch response: ``None`` (or anything without a
    ``batchItemFailures`` list) means every message succeeded; a list of
    message ids, or ``{"batchItemFailures": [{"itemIdentifier": id}, ...]}``,
    names the failures.  An id not in the batch, or an entry that is not an
    id, raises BadBatchResponse: the whole batch counts as failed.
    """
    if isinstance(result, dict):
        items = result.get("batchItemFailures")
        if items is None:
            return set()
        ids = _ids(items, "batchItemFailures")
    elif isinstance(result, (list, tuple)):
        ids = _ids(result, "the returned list")
    else:
        return set()
    unknown = [i for i in ids if i not in batch_ids]
    if unknown:
        raise BadBatchResponse(f"failed message id {unknown[0]!r} is not in the batch")
    return set(ids)
