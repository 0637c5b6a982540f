"""Worker: runs queue handlers and delivers HTTP and handler subscriptions.

One poller thread per source - each queue given to ``consume()``, and each
``DeliveryTarget`` the broker lists - and a pool of ``concurrency`` threads
that run the work.  A poller receives only when a pool thread is free (a
message is never leased while it waits for a thread), hands the batch over,
and otherwise sleeps on the queue log's change word (woken within a
millisecond by any append, from any process) for at most ``IDLE_WAIT_S``.
While the work runs, the ``LeaseKeeper`` extends its messages' leases.

Several workers, in one process or many, share sources: the queue's leases
decide who holds which message.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from walq.errors import BrokerClosed, InvalidParameter, QueueDoesNotExist, WalqError
from walq.worker import counters
from walq.worker.delivery import Deliverer
from walq.worker.handlers import BadBatchResponse, failed_ids, resolve
from walq.worker.leases import LeaseKeeper
from walq.worker.webhook import HTTP_TIMEOUT_S, new_client

__all__ = ["Worker", "IDLE_WAIT_S", "TARGETS_EVERY_S", "MAX_BATCH"]

log = logging.getLogger("walq.worker")

#: Longest a poller sleeps before it receives again (it also wakes on any
#: append to its queue): bounds how late it sees a lease run out or a delay
#: end, and how long a stop takes to be noticed.
IDLE_WAIT_S = 0.25
#: How often the worker asks the broker for its delivery targets.
TARGETS_EVERY_S = 1.0
#: Largest batch_size (a receive's limit).
MAX_BATCH = 1_000
MAX_CONCURRENCY = 1_000


def _wait_for_change(q, token, timeout: float) -> None:
    try:
        q._log.wait_for_change(token, timeout)
    except (AttributeError, WalqError, OSError):
        pass  # the queue was closed under us: the next receive says why


def _change_token(q):
    try:
        return q._log.change_token()
    except (AttributeError, WalqError, OSError):
        return None


class _Source:
    """One thing a poller receives from: a consumed queue or a delivery target."""

    def __init__(self, name: str, queue, batch_size: int, work):
        self.name, self.queue, self.batch_size, self.work = name, queue, batch_size, work
        self.target = None  # the DeliveryTarget, for a target's poller
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None


class Worker:
    """Runs queue handlers and delivers subscriptions until stopped.

    ``concurrency``: how many batches are handled at once (threads, 1-1000).
    ``http_timeout``: seconds an HTTP delivery may take per phase (see
    walq/worker/webhook.py; default 15).
    """

    def __init__(self, broker, concurrency: int = 4, *, http_timeout: float = HTTP_TIMEOUT_S):
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
                or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidParameter(f"concurrency must be an integer 1-{MAX_CONCURRENCY}; got {concurrency!r}")
        if isinstance(http_timeout, bool) or not isinstance(http_timeout, (int, float)) \
                or not 0 < http_timeout <= 300:
            raise InvalidParameter(f"http_timeout must be 0-300 seconds (not 0); got {http_timeout!r}")
        broker._check()
        self._broker = broker
        self._concurrency = concurrency
        self._http_timeout = float(http_timeout)
        self._consumers: list[tuple] = []
        self._running = False
        self._mu = threading.Lock()
        #: The lease keeper of the current run (tests watch its ``renewed``).
        self.leases: LeaseKeeper | None = None

    def consume(self, queue, handler, batch_size: int = 10) -> None:
        """Runs ``handler(messages)`` on batches of up to ``batch_size``
        messages of ``queue`` (a Queue or its name) once run() starts.

        Returning normally acks the whole batch; returning a list of failed
        message ids, or ``{"batchItemFailures": [{"itemIdentifier": id}]}``,
        leaves those; raising leaves the whole batch.  What is left comes back
        when its visibility timeout ends.  ``handler`` may be a callable or
        ``"package.module:function"``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
            raise InvalidParameter(f"batch_size must be an integer 1-{MAX_BATCH}; got {batch_size!r}")
        if isinstance(queue, str):
            queue = self._broker.get_queue(queue)
        elif not hasattr(queue, "receive") or getattr(queue, "_broker", None) is not self._broker:
            raise InvalidParameter("queue must be a queue name or a walq.Queue of this worker's broker")
        func = resolve(handler)
        with self._mu:
            if self._running:
                raise InvalidParameter("consume() must be called before run()")
            self._consumers.append((queue, func, batch_size))

    # -- running ------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Works until ``stop`` is set (or, in the main thread, SIGTERM or
        SIGINT arrives); then finishes the batches in hand and returns."""
        with self._mu:
            if self._running:
                raise InvalidParameter("this worker is already running")
            self._running = True
        halt = threading.Event()
        restore = self._install_signals(halt)
        try:
            run = _Run(self, halt)
            try:
                run.start()
                while not halt.is_set():
                    if stop is not None and stop.is_set():
                        break
                    run.tick()
                    halt.wait(IDLE_WAIT_S)
            finally:
                if halt.is_set():
                    log.warning("stopping on a signal: finishing the batches in hand")
                halt.set()
                run.finish()
        finally:
            for sig, old in restore:
                # None: a handler installed outside Python, which cannot be put back.
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
            with self._mu:
                self._running = False

    @staticmethod
    def _install_signals(halt: threading.Event) -> list:
        if threading.current_thread() is not threading.main_thread():
            return []
        restore = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            restore.append((sig, signal.signal(sig, lambda *_: halt.set())))
        return restore


class _Run:
    """One run() of a Worker: its threads, and how they stop."""

    def __init__(self, worker: Worker, halt: threading.Event):
        self.w = worker
        self.broker = worker._broker
        self.halt = halt
        self.slots = threading.Semaphore(worker._concurrency)
        self.pool = ThreadPoolExecutor(worker._concurrency, thread_name_prefix="walq-worker")
        self.keeper = worker.leases = LeaseKeeper(self.broker._clock)
        self.tally = counters.Tally(self.broker)
        self.deliverer = Deliverer(self.broker._clock, self.tally,
                                   lambda: new_client(worker._http_timeout))
        self.sources: list[_Source] = []
        self.targets: dict[str, _Source] = {}
        self._last_targets = 0.0

    def start(self) -> None:
        for queue, func, batch_size in self.w._consumers:
            self._start(_Source(queue.name, queue, batch_size, self._handler_work(queue, func)))
        self._refresh_targets()

    def tick(self) -> None:
        """The run loop's periodic chores."""
        if time.monotonic() - self._last_targets >= TARGETS_EVERY_S:
            self._refresh_targets()
            try:
                self.broker._fire_schedules()  # the event bus's schedule rules, once per tick
            except (OSError, WalqError) as exc:
                log.warning("could not fire schedules: %s", exc)
        try:
            self.tally.maybe_flush()
        except (OSError, WalqError) as exc:
            log.warning("could not write delivery counters: %s", exc)

    # -- delivery targets -----------------------------------------------------------

    def _refresh_targets(self) -> None:
        self._last_targets = time.monotonic()
        try:
            targets = self.broker._delivery_targets()
        except (OSError, WalqError) as exc:
            log.warning("could not list delivery targets: %s", exc)
            return
        seen = set()
        for target in targets:
            seen.add(target.key)
            src = self.targets.get(target.key)
            if src is not None and src.target == target:
                continue
            if src is not None and src.queue is target.queue:
                src.target = target  # changed settings (raw, retry, dead letter): used from the next batch
                continue
            if src is not None:
                src.stopped.set()
            src = _Source(target.key, target.queue, 10, None)
            src.target = target
            src.work = self._delivery_work(src)
            self.targets[target.key] = src
            self._start(src)
        for key in list(self.targets):
            if key not in seen:
                self.targets.pop(key).stopped.set()  # unsubscribed: its poller ends

    def _delivery_work(self, src: _Source):
        def work(messages):
            self.deliverer.deliver(src.target, messages)
        return work

    # -- queue handlers ---------------------------------------------------------------

    def _handler_work(self, queue, func):
        def work(messages):
            ids = {m.message_id for m in messages}
            try:
                failed = failed_ids(func(messages), ids)
            except BadBatchResponse as exc:
                log.error("handler of %s: %s; the whole batch will come back", queue.name, exc)
                failed = ids
            except Exception:
                log.exception("handler of %s raised; its batch of %d will come back", queue.name, len(messages))
                failed = ids
            ack = [m.receipt for m in messages if m.message_id not in failed]
            if ack:
                queue.delete_batch(ack)
        return work

    # -- polling ----------------------------------------------------------------------

    def _start(self, src: _Source) -> None:
        src.thread = threading.Thread(target=self._poll, args=(src,), name=f"walq-poll-{src.name}",
                                      daemon=True)
        self.sources.append(src)
        src.thread.start()

    def _poll(self, src: _Source) -> None:
        q = src.queue
        while not (self.halt.is_set() or src.stopped.is_set()):
            if not self.slots.acquire(timeout=IDLE_WAIT_S):
                continue
            handed = False
            token = None
            try:
                token = _change_token(q)
                vt = q.attributes.visibility_timeout
                msgs = q.receive(src.batch_size, wait=0, visibility_timeout=vt)
                if msgs:
                    held = self.keeper.hold(q, msgs, vt)
                    self.pool.submit(self._run_work, src, msgs, held)
                    handed = True
            except BrokerClosed:
                return
            except QueueDoesNotExist as exc:
                if src.stopped.is_set():
                    return
                log.warning("%s: %s", src.name, exc)
                self.halt.wait(1.0)
                continue
            except Exception:
                log.exception("%s: receive failed", src.name)
                self.halt.wait(1.0)
                continue
            finally:
                if not handed:
                    self.slots.release()
            if not handed and token is not None:
                _wait_for_change(q, token, IDLE_WAIT_S)

    def _run_work(self, src: _Source, msgs: list, held) -> None:
        try:
            src.work(msgs)
        except Exception:
            log.exception("%s: batch of %d failed; it will come back", src.name, len(msgs))
        finally:
            self.keeper.release(held)
            self.slots.release()
        try:
            self.tally.maybe_flush()
        except (OSError, WalqError) as exc:
            log.warning("could not write delivery counters: %s", exc)

    def finish(self) -> None:
        """Stops the pollers, waits for the batches in hand, flushes the counts."""
        for src in self.sources:
            src.stopped.set()
        for src in self.sources:
            if src.thread is not None:
                src.thread.join()
        self.pool.shutdown(wait=True)
        self.keeper.close()
        self.deliverer.close()
        try:
            self.tally.flush()
        except (OSError, WalqError) as exc:
            log.warning("could not write delivery counters: %s", exc)
