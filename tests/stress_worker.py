"""The worker of the stress tier (tests/test_stress.py): one process mixing
every queue operation on a shared store until it is killed.

Run as ``python tests/stress_worker.py <json args>``.  Every body names
itself (``<tag>:<k>:<size>:`` then bytes derived from that prefix), so any
process can tell a delivered body from garbage without a journal.  The
journal (tests/queue_helpers.py's Journal: one ``os.write`` a line, so a kill
-9 neither loses nor tears a written line) gets, per operation that
returned:

    S <queue> <message_id> <t_before> <t_after>     a send or a batch entry
    R <queue> <message_id> <t_before> <t_after>     a receive delivered it
    D <queue> <message_id> <t_after>                its delete returned
    P <queue> <t_before> <t_after>                  a purge
    M <queue> <n> <t_after>                         move_messages (redrive)

A line is written after the call returns, so a worker killed in between
leaves an operation unknown - never a logged one that did not happen.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import walq  # noqa: E402
from queue_helpers import Journal  # noqa: E402

#: name -> create_queue keywords; "red" moves to "red-dlq" after 3 receives.
QUEUES = {
    "std": dict(visibility_timeout=2),
    "red-dlq": dict(visibility_timeout=2),
    "red": dict(visibility_timeout=2, dead_letter=walq.RedrivePolicy("red-dlq", max_receives=3)),
    "q.fifo": dict(visibility_timeout=2, content_based_dedup=True),
}
MAX_BODY = 64 * 1024
#: The longest a lease can last (visibility timeouts and change_visibility below).
MAX_LEASE_S = 4


def make_body(tag: str, k: int, size: int) -> bytes:
    """A body of ``size`` bytes (at least its prefix) that names itself."""
    prefix = f"{tag}:{k}:{size}:".encode()
    n = max(0, size - len(prefix))
    return prefix + random.Random(prefix).randbytes(n)


def body_ok(body: bytes) -> bool:
    """True if ``body`` is exactly what make_body wrote for its prefix."""
    try:
        tag, k, size, _ = body.split(b":", 3)
        want = make_body(tag.decode(), int(k), int(size))
    except (ValueError, UnicodeDecodeError):
        return False
    return body == want


def create_queues(broker) -> None:
    """Creates the tier's queues (dead-letter queues first)."""
    for name in ("std", "red-dlq", "red", "q.fifo"):
        broker.create_queue(name, **QUEUES[name])


def _size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.5:
        return rng.randint(1, 300)
    if r < 0.8:
        return rng.randint(300, 9000)
    return rng.randint(9000, MAX_BODY)


def run(args: dict) -> None:
    """The worker's loop: random operations until killed."""
    if args.get("checkpoint_every"):
        import walq.queue.queue as queue_module

        queue_module.CHECKPOINT_EVERY = args["checkpoint_every"]
        queue_module.CHECKPOINT_LIVE_DIVISOR = 0
    rng = random.Random(args["seed"])
    tag = args["tag"]
    broker = walq.open(args["path"], durability=args["durability"], segment_size=args["segment_size"])
    queues = {name: broker.get_queue(name) for name in QUEUES}
    journal = Journal(args["journal"])
    k = 0

    def body():
        nonlocal k
        k += 1
        return make_body(tag, k, _size(rng))

    def entry(name):
        b = body()
        if name == "q.fifo":
            return {"body": b, "group": f"g{rng.randrange(4)}"}
        if rng.random() < 0.3:
            return {"body": b, "attributes": {"k": rng.randrange(100)}}
        return b

    while True:
        name = rng.choice(["std", "std", "red", "q.fifo", "red-dlq"])
        q = queues[name]
        op = rng.random()
        t0 = time.time()
        if name == "red-dlq" and op < 0.5:
            n = broker.move_messages("red-dlq")
            journal.write("M", name, n, repr(time.time()))
        elif op < 0.25 and name != "red-dlq":
            e = entry(name)
            r = q.send(e["body"], group=e.get("group"), attributes=e.get("attributes")) \
                if isinstance(e, dict) else q.send(e)
            journal.write("S", name, r.message_id, repr(t0), repr(time.time()))
        elif op < 0.4 and name != "red-dlq":
            entries = [entry(name) for _ in range(rng.randint(1, 10))]
            res = q.send_batch(entries)
            assert not res.failed, res.failed
            t1 = repr(time.time())
            journal.write_many(("S", name, r.message_id, repr(t0), t1) for _, r in res.successful)
        elif op < 0.4004 and name == "std":
            q.purge()
            journal.write("P", name, repr(t0), repr(time.time()))
        else:
            msgs = q.receive(rng.choice([1, 3, 10]), wait=rng.choice([0, 0.1]),
                             visibility_timeout=rng.randint(1, MAX_LEASE_S))
            t1 = repr(time.time())
            for m in msgs:
                assert body_ok(m.body), f"garbage delivered from {name}: {m.body[:80]!r}"
            journal.write_many(("R", name, m.message_id, repr(t0), t1) for m in msgs)
            batch = []
            for m in msgs:
                fate = rng.random()
                if fate < 0.3:
                    try:
                        q.delete(m.receipt)
                    except walq.InvalidReceipt:
                        # FIFO: its lease ran out meanwhile (a loaded
                        # machine): not deleted, it comes back.
                        assert name.endswith(".fifo")
                        continue
                    journal.write("D", name, m.message_id, repr(time.time()))
                elif fate < 0.75:
                    batch.append(m)
                elif fate < 0.85:
                    try:
                        q.change_visibility(m.receipt, rng.randint(0, MAX_LEASE_S))
                    except walq.MessageNotInflight:
                        pass  # its lease ran out meanwhile
                # else: left to time out and come back (to the DLQ, for "red")
            if batch:
                res = q.delete_batch([m.receipt for m in batch])
                t2 = repr(time.time())
                # FIFO refuses a receipt whose lease ran out (InvalidReceipt): not deleted.
                assert all(isinstance(e, walq.InvalidReceipt) for _, e in res.failed), res.failed
                journal.write_many(("D", name, batch[i].message_id, t2) for i, _ in res.successful)


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
