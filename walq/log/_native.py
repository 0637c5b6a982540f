"""The one place native return codes become Python exceptions."""

from __future__ import annotations

import errno
import os

from walq._native import ffi, lib  # noqa: F401  (re-exported)
from walq.errors import LogPoisoned, StoreFull


def check_os(rc: int, what: str, path: str | None = None) -> int:
    """Raise OSError for a negative errno return code (StoreFull for no
    space); pass others through."""
    if rc < 0:
        code = -rc
        if code in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFull(code, path, what)
        raise OSError(code, f"{what}: {os.strerror(code)}", path)
    return rc


def check_sync(rc: int, path: str) -> None:
    """A failed fdatasync poisons the handle; it is never retried."""
    if rc < 0:
        code = -rc
        raise LogPoisoned(
            code if code != errno.EINTR else errno.EIO,
            f"fdatasync failed ({os.strerror(code)}); the log must be reopened",
            path,
        )
