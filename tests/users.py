"""Running test code as another user: a forked child that drops root."""

from __future__ import annotations

import json
import os
import traceback

NOBODY = 65534


def as_nobody(fn, groups=()):
    """Runs ``fn()`` in a forked child as uid/gid 65534 with supplementary
    ``groups`` only; returns its JSON-able result (the child's exception as an
    AssertionError).  Forked, not exec'd: the interpreter and its packages
    live under /root, which that user may not read, so everything the child
    needs is imported here first."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(rd)
            os.setgroups(list(groups))
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = {"ok": fn()}
            code = 0
        except BaseException:
            out = {"error": traceback.format_exc()}
        finally:
            try:
                os.write(wr, json.dumps(out).encode())
            finally:
                os._exit(code)
    os.close(wr)
    with os.fdopen(rd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(data or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0 and "ok" in result, result.get("error", status)
    return result["ok"]


def can_switch_user() -> bool:
    """True if this process can run code as uid 65534 (it is root)."""
    if os.geteuid() != 0:
        return False
    return as_nobody(os.geteuid) == NOBODY
