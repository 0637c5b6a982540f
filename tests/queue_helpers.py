"""Shared pieces of the queue tests: a fake clock, "nothing was written"
checks, and the worker programs the multi-process and crash tests run.

The workers run as ``python tests/queue_helpers.py <role> <json args>`` so
that each is a real, separate process that can be killed with SIGKILL.  Each
writes what it observed to its own append-only journal with one ``os.write``
per line (an ``O_APPEND`` write is in the kernel when it returns, so a kill -9
cannot lose a line that was written, nor tear one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import walq

HERE = os.path.abspath(__file__)


class FakeClock:
    """A ``time.time``-like callable the test moves by hand."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def run_until_received(producers, others, got, lock, total, done, timeout: float = 60.0) -> list:
    """Starts every thread; once the producers are done, waits (up to
    ``timeout``) for ``total`` items in ``got``, which the consumers extend
    under ``lock``; then sets ``done`` and joins the others.  Returns the
    threads still alive (a deadlock, if any)."""
    threads = producers + others
    for t in threads:
        t.start()
    for t in producers:
        t.join(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            if len(got) >= total:
                break
        time.sleep(0.01)
    done.set()
    for t in others:
        t.join(timeout=timeout)
    return [t for t in threads if t.is_alive()]


def log_ends(broker, *queues) -> tuple:
    """Where the catalog log and each queue's log end: equal before and after a
    call means the call wrote nothing."""
    return (broker._catalog.log.end,) + tuple(q._log.end for q in queues)


class Journal:
    """One line per event, appended with a single write (kill -9 safe)."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *fields) -> None:
        os.write(self.fd, (" ".join(str(f) for f in fields) + "\n").encode())

    def write_many(self, rows) -> None:
        data = "".join(" ".join(str(f) for f in row) + "\n" for row in rows)
        if data:
            os.write(self.fd, data.encode())


def read_journal(path: str) -> list[list[str]]:
    """The complete lines of a journal, split into fields."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f.read().splitlines() if line]


def spawn(role: str, **args) -> subprocess.Popen:
    """Starts a worker process running ``role`` with ``args``."""
    return subprocess.Popen([sys.executable, HERE, role, json.dumps(args)])


# -- workers -------------------------------------------------------------------------


def _open(args):
    if args.get("checkpoint_every"):
        import walq.queue.queue as queue_module

        queue_module.CHECKPOINT_EVERY = args["checkpoint_every"]
        queue_module.CHECKPOINT_LIVE_DIVISOR = 0  # keep them frequent however big the backlog
    broker = walq.open(args["path"], durability=args.get("durability", "os"),
                       segment_size=args.get("segment_size", 64 * 1024 * 1024))
    return broker, broker.get_queue(args["queue"])


def producer(args) -> None:
    """Sends ``count`` messages named ``<tag>:<k>`` (batches of ``batch``,
    ``pause`` seconds apart); journals ``S <body> <message_id>`` for each
    send that returned."""
    broker, q = _open(args)
    journal = Journal(args["journal"])
    tag, batch, start = args["tag"], args.get("batch", 1), args.get("start", 0)
    group = args.get("group")  # FIFO queues (with content-based dedup)
    k, end = start, start + args["count"]
    while k < end:
        bodies = [f"{tag}:{i}" for i in range(k, min(end, k + batch))]
        if len(bodies) == 1:
            r = q.send(bodies[0], group=group)
            journal.write("S", bodies[0], r.message_id)
        else:
            res = q.send_batch([{"body": b, "group": group} if group else b for b in bodies])
            assert not res.failed, res.failed
            journal.write_many(("S", bodies[i], r.message_id) for i, r in res.successful)
        k += len(bodies)
        if args.get("pause"):
            time.sleep(args["pause"])  # pace the producer so consumers keep up
    broker.close()


def consumer(args) -> None:
    """Receives and deletes until told to stop (the ``done`` file exists and
    the queue is empty), or forever (until killed).

    Journals ``R <body> <message_id> <t_before> <t_after> <vt>`` for every
    message a receive returned (before deleting it) and ``D <body>
    <t_after_delete>`` once delete_batch returned.  ``skip_every``: leave
    every n-th first delivery undeleted, so its lease runs out and it is
    delivered again.
    """
    broker, q = _open(args)
    journal = Journal(args["journal"])
    vt, n, skip = args.get("vt", 30), args.get("max_messages", 10), args.get("skip_every", 0)
    done = args.get("done")
    while True:
        t0 = time.time()
        msgs = q.receive(n, wait=args.get("wait", 0.2), visibility_timeout=vt)
        t1 = time.time()
        if not msgs:
            if done and os.path.exists(done) and q.stats().total == 0:
                break
            continue
        journal.write_many(("R", m.text, m.message_id, repr(t0), repr(t1), vt) for m in msgs)
        keep = [m for m in msgs
                if not (skip and m.receive_count == 1 and int(m.message_id[-4:], 16) % skip == 0)]
        if keep:
            res = q.delete_batch([m.receipt for m in keep])
            t2 = time.time()
            # FIFO refuses a receipt whose lease ran out (InvalidReceipt): not deleted.
            assert all(isinstance(e, walq.InvalidReceipt) for _, e in res.failed), res.failed
            journal.write_many(("D", keep[i].text, repr(t2)) for i, _ in res.successful)
    broker.close()


def lease_holder(args) -> None:
    """Receives one message with a fixed fake time and a visibility timeout,
    prints its id, then waits to be killed (or exits if ``exit``)."""
    broker = walq.open(args["path"], durability="os", clock=lambda: args["now"])
    q = broker.get_queue(args["queue"])
    [m] = q.receive(1, visibility_timeout=args["vt"])
    print(m.message_id, flush=True)
    if args.get("exit"):
        broker.close()
        return
    time.sleep(3600)


def timed_sender(args) -> None:
    """Sends ``count`` messages whose body is ``time.monotonic()`` just
    before the send, ``gap`` seconds apart (a long-polling receiver in the
    parent measures how soon it wakes)."""
    broker, q = _open(args)
    time.sleep(args.get("first_gap", 0.3))
    for _ in range(args["count"]):
        q.send(repr(time.monotonic()))
        time.sleep(args["gap"])
    broker.close()


ROLES = {f.__name__: f for f in (producer, consumer, lease_holder, timed_sender)}

if __name__ == "__main__":
    ROLES[sys.argv[1]](json.loads(sys.argv[2]))
