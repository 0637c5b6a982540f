"""LeaseKeeper: extends the leases of the messages a worker holds.

A message handed to a handler or being delivered stays leased as long as the
work lasts: at half its visibility timeout, measured on the broker's clock,
the keeper renews the lease for a whole timeout (one change_visibility_batch
per queue).  The keeper's thread waits on the monotonic clock (at most
``POLL_S`` at a time) and reads the broker's clock each time it wakes, so a
test's fake clock moved by hand is seen within ``POLL_S``.
"""

from __future__ import annotations

import itertools
import logging
import threading

from walq.errors import WalqError

__all__ = ["LeaseKeeper", "POLL_S"]

log = logging.getLogger("walq.worker")

#: Longest the keeper sleeps (real seconds) between looks at the broker's clock.
POLL_S = 0.1


class _Held:
    __slots__ = ("queue", "receipts", "timeout", "due")

    def __init__(self, queue, receipts: list[str], timeout: float, due: float):
        self.queue, self.receipts, self.timeout, self.due = queue, receipts, timeout, due


class LeaseKeeper:
    """Holds (queue, receipts, visibility timeout) groups and renews their
    leases until released."""

    def __init__(self, clock):
        self._clock = clock
        self._cv = threading.Condition()
        self._held: dict[int, _Held] = {}
        self._ids = itertools.count()
        self._closed = False
        #: Leases renewed so far (tests wait on it).
        self.renewed = 0
        self._thread = threading.Thread(target=self._run, name="walq-worker-leases", daemon=True)
        self._thread.start()

    def hold(self, queue, messages, timeout: float) -> int | None:
        """Starts renewing the leases of ``messages`` (received from ``queue``
        with visibility ``timeout`` just now); returns a token for release().
        A timeout under 1 s (a queue that does not lease) is not renewed."""
        if timeout < 1 or not messages:
            return None
        held = _Held(queue, [m.receipt for m in messages], timeout, self._clock() + timeout / 2)
        with self._cv:
            token = next(self._ids)
            self._held[token] = held
            self._cv.notify()
        return token

    def release(self, token: int | None) -> None:
        """Stops renewing a group (its work is over)."""
        if token is None:
            return
        with self._cv:
            self._held.pop(token, None)

    def _due(self, now: float) -> list[tuple[int, _Held]]:
        with self._cv:
            return [(t, h) for t, h in self._held.items() if h.due <= now]

    def _renew(self, token: int, held: _Held, now: float) -> None:
        try:
            res = held.queue.change_visibility_batch([(r, held.timeout) for r in held.receipts])
        except WalqError as exc:  # the queue was deleted, the broker closed ...
            log.warning("could not extend leases on %s: %s", held.queue.name, exc)
            self.release(token)
            return
        lost = {i for i, _exc in res.failed}
        if lost:
            # Deleted, or its lease ran out before we renewed it: another
            # receiver may hold it now; the work in hand still finishes.
            log.warning("%d lease(s) on %s ran out before they could be extended",
                        len(lost), held.queue.name)
        with self._cv:
            if token in self._held:
                held.receipts = [r for i, r in enumerate(held.receipts) if i not in lost]
                held.due = now + held.timeout / 2
                if not held.receipts:
                    del self._held[token]
            self.renewed += len(held.receipts)
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._closed:
                    return
                self._cv.wait(POLL_S)
                if self._closed:
                    return
            now = self._clock()
            for token, held in self._due(now):
                self._renew(token, held, now)

    def wait_renewed(self, at_least: int, timeout: float) -> bool:
        """Waits until ``renewed >= at_least`` (for tests); True if it did."""
        with self._cv:
            return self._cv.wait_for(lambda: self.renewed >= at_least, timeout)

    def close(self) -> None:
        """Stops the keeper's thread (after the work it covers is over)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()
