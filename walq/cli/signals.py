"""Ending long-running commands cleanly: a stop request from SIGINT or
SIGTERM, and noticing that the reader of standard output has gone.

A signal only sets a flag, which the command's loop checks between
batches: raising from the handler could land between a receive's lease
and its return, leaving messages leased to a process about to exit (they
would come back, but only after their visibility timeout).
"""

from __future__ import annotations

import select
import signal
import sys
import threading

__all__ = ["StopSignals", "stdout_closed"]


class StopSignals:
    """``with StopSignals() as stop: while not stop.requested: ...``

    Inside the block, SIGINT and SIGTERM set ``requested`` instead of
    ending the process; the previous handlers come back on exit.  Outside the
    main thread (where Python allows no handlers) it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def stdout_closed() -> bool:
    """True if standard output is a pipe or socket whose reader has gone
    (poll reports POLLERR or POLLHUP on the write end): known before
    anything is taken from a queue, not only at the next failed write."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # not a real file (click's test runner)
    p = select.poll()
    p.register(fd, 0)  # no events asked: only POLLERR, POLLHUP and POLLNVAL come back
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in p.poll(0))
