"""The queues that walq is benchmarked against, behind one small interface.

Every queue here offers the same five operations, so that bench_queue.py and
test_bench_queue.py drive walq and its peers with the same loops:

    q = make(kind, durability, directory)
    q.send(body)                  # one message, its own transaction / write
    q.send_batch(bodies)          # many messages in one transaction / write
                                  #   (None when the library has no way to batch)
    q.receive_delete(n, wait=0)   # lease up to n visible messages, then delete
                                  #   them; returns the bodies (a list)
    q.prefill(count, body)        # fill fast, untimed (may cheat on durability)
    q.close()

Kinds and their durability settings (see ``DURABILITIES``):

* ``walq``: ``"always"``, ``"batch"``, ``"os"`` - walq.open(durability=...).
* ``sqlite``: a plain SQLite table queue written here, WAL mode,
  ``synchronous=FULL`` (each commit fsyncs the WAL) or ``NORMAL`` (the WAL is
  synced only at checkpoints).  ``FULL-LAZY-LEASE`` is FULL except that the
  lease transaction of a receive commits under ``synchronous=NORMAL`` (not
  synced; the delete that follows syncs the WAL, lease included) - what walq's
  ``"always"`` does since it stopped waiting for leases to be durable.  Leases work like SQS: a receive moves each
  chosen row's ``visible_at`` forward and bumps its receive count, in one
  ``BEGIN IMMEDIATE`` transaction; a delete names ``(id, receives)``, so a stale
  receipt deletes nothing.
* ``persist-queue``: ``persistqueue.SQLiteAckQueue`` (WAL, pickle serializer,
  ``auto_commit=True`` - forced on by the ack queue anyway -,
  ``multithreading=False``).  It has no knob for ``synchronous``; SQLite's
  default in WAL mode is FULL here (checked at open), and NORMAL is set with a
  PRAGMA on its connection.  No batch put.  ``get`` = SELECT, then an UPDATE in
  its own transaction; ``ack`` = an UPDATE in its own transaction (acked rows
  stay in the table until ``clear_acked_data``).
* ``litequeue``: ``litequeue.LiteQueue`` (WAL; it sets ``synchronous=NORMAL``
  itself, FULL is set with a PRAGMA after it opens).  ``put`` is one
  autocommit INSERT; a batch is N puts inside its public ``transaction()``;
  ``pop`` is an ``UPDATE ... RETURNING`` in a ``BEGIN IMMEDIATE`` transaction;
  the acks of one receive go into one ``transaction()``.
"""

from __future__ import annotations

import os
import sqlite3
import time

KINDS = ("walq", "sqlite", "persist-queue", "litequeue")
DURABILITIES = {
    "walq": ("always", "batch", "os"),
    "sqlite": ("FULL", "NORMAL", "FULL-LAZY-LEASE"),
    "persist-queue": ("FULL", "NORMAL"),
    "litequeue": ("FULL", "NORMAL"),
}
#: The visibility timeout used by every queue (seconds): far longer than any run.
VISIBILITY = 300.0
#: How often the SQLite-based peers poll when asked to wait (they cannot block).
POLL_S = 0.001


def make(kind: str, durability: str, directory: str) -> "BenchQueue":
    """Opens (creating) a queue of ``kind`` in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    if kind == "walq":
        return WalqQueue(directory, durability)
    if kind == "sqlite":
        return SqliteQueue(directory, durability)
    if kind == "persist-queue":
        return PersistQueue(directory, durability)
    if kind == "litequeue":
        return LiteQueue(directory, durability)
    raise ValueError(f"unknown queue kind {kind!r}")


def library_version(kind: str) -> str:
    """The installed version of the library behind ``kind``."""
    if kind == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    if kind == "walq":
        import walq

        return f"walq {walq.__version__}"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{kind} {version(kind)}"
    except PackageNotFoundError:
        return f"{kind} (not installed)"


def available(kind: str) -> bool:
    """Whether the library behind ``kind`` can be imported."""
    try:
        if kind == "persist-queue":
            import persistqueue  # noqa: F401
        elif kind == "litequeue":
            import litequeue  # noqa: F401
        elif kind == "walq":
            import walq  # noqa: F401
    except ImportError:
        return False
    return True


class BenchQueue:
    kind = "?"
    supports_batch = True

    def send(self, body: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def send_batch(self, bodies: list[bytes]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def receive_delete(self, n: int, wait: float = 0.0) -> list[bytes]:  # pragma: no cover
        raise NotImplementedError

    def prefill(self, count: int, body: bytes) -> None:
        chunk = [body] * 1000
        left = count
        while left > 0:
            self.send_batch(chunk if left >= 1000 else chunk[:left])
            left -= 1000

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def wrap(self, body: bytes):
        """The body as this library's send() takes it (str for litequeue)."""
        return body


# -- walq ---------------------------------------------------------------------------


class WalqQueue(BenchQueue):
    kind = "walq"

    def __init__(self, directory: str, durability: str):
        import walq

        self.broker = walq.open(directory, durability=durability)
        self.q = self.broker.create_queue("bench", visibility_timeout=int(VISIBILITY))
        self.send = self.q.send  # direct bound methods: no wrapper on the hot path
        self._send_batch = self.q.send_batch
        self._receive = self.q.receive
        self._delete_batch = self.q.delete_batch

    def send_batch(self, bodies):
        self._send_batch(bodies)

    def receive_delete(self, n, wait=0.0):
        msgs = self._receive(n, wait=wait)
        if msgs:
            self._delete_batch([m.receipt for m in msgs])
        return [m.body for m in msgs]

    def prefill(self, count, body):
        super().prefill(count, body)
        self.q.stats()  # catch the index up with the sends (untimed)

    def close(self):
        self.broker.close()


# -- a plain SQLite table queue ----------------------------------------------------------


class SqliteQueue(BenchQueue):
    """A queue in one SQLite table, with SQS-style leases.

    ``messages(id, body, visible_at, receives)``; an index on ``visible_at``
    finds the visible rows in order.  Every write is its own transaction.
    """

    kind = "sqlite"

    def __init__(self, directory: str, synchronous: str):
        path = os.path.join(directory, "queue.db")
        self.db = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.lazy_lease = synchronous == "FULL-LAZY-LEASE"
        if self.lazy_lease:
            synchronous = "FULL"
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS messages ("
            " id INTEGER PRIMARY KEY, body BLOB NOT NULL,"
            " visible_at REAL NOT NULL, receives INTEGER NOT NULL DEFAULT 0)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS messages_visible ON messages (visible_at)")
        self._ins = "INSERT INTO messages (body, visible_at) VALUES (?, ?)"

    def send(self, body):
        self.db.execute(self._ins, (body, time.time()))

    def send_batch(self, bodies):
        now = time.time()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(self._ins, [(b, now) for b in bodies])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def receive(self, n: int) -> list[tuple[int, int, bytes]]:
        """Leases up to ``n`` visible rows: ``[(id, receives, body)]``."""
        db = self.db
        now = time.time()
        if self.lazy_lease:
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                "SELECT id, receives, body FROM messages WHERE visible_at <= ? ORDER BY visible_at LIMIT ?",
                (now, n),
            ).fetchall()
            if rows:
                until = now + VISIBILITY
                db.executemany(
                    "UPDATE messages SET visible_at = ?, receives = receives + 1 WHERE id = ?",
                    [(until, r[0]) for r in rows],
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if self.lazy_lease:
            db.execute("PRAGMA synchronous=FULL")
        return [(i, c + 1, b) for i, c, b in rows]

    def delete(self, receipts: list[tuple[int, int]]) -> None:
        """Deletes ``(id, receives)`` pairs; a stale pair deletes nothing."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM messages WHERE id = ? AND receives = ?", receipts)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def receive_delete(self, n, wait=0.0):
        rows = self.receive(n)
        if not rows and wait > 0:
            deadline = time.monotonic() + wait
            while not rows and time.monotonic() < deadline:
                time.sleep(POLL_S)
                rows = self.receive(n)
        if rows:
            self.delete([(i, c) for i, c, _b in rows])
        return [b for _i, _c, b in rows]

    def close(self):
        self.db.close()


# -- persist-queue ---------------------------------------------------------------------------


class PersistQueue(BenchQueue):
    kind = "persist-queue"
    supports_batch = False

    def __init__(self, directory: str, synchronous: str):
        from persistqueue import SQLiteAckQueue
        from persistqueue.exceptions import Empty

        self._Empty = Empty
        # multithreading=False: one connection (put and get share it);
        # auto_commit=True: every put/get/ack commits (the ack queue forces it).
        self.q = SQLiteAckQueue(directory, multithreading=False, auto_commit=True, timeout=60)
        self.synchronous = synchronous
        self._set_sync(synchronous)
        self.send = self.q.put

    def _set_sync(self, level: str) -> None:
        for conn in {id(c): c for c in (self.q._putter, self.q._getter)}.values():
            conn.execute(f"PRAGMA synchronous={level}")
            # persist-queue leaves SQLite's default, which is FULL (2) in WAL mode
            # unless SQLite was compiled otherwise; make sure it is what we say.
            got = conn.execute("PRAGMA synchronous").fetchone()[0]
            want = {"OFF": 0, "NORMAL": 1, "FULL": 2}[level]
            if got != want:
                raise RuntimeError(f"persist-queue: synchronous is {got}, wanted {want}")

    def send_batch(self, bodies):
        raise NotImplementedError("persist-queue has no batch put")

    def receive_delete(self, n, wait=0.0):
        get, Empty = self.q.get, self._Empty
        items = []
        deadline = None
        while len(items) < n:
            try:
                items.append(get(block=False, raw=True))
            except Empty:
                if items or wait <= 0:
                    break
                if deadline is None:
                    deadline = time.monotonic() + wait
                elif time.monotonic() >= deadline:
                    break
                time.sleep(POLL_S)
        ack = self.q.ack
        for it in items:
            ack(id=it["pqid"])
        return [it["data"] for it in items]

    def prefill(self, count, body):
        # Untimed: one put per transaction as always, but unsynced.
        self._set_sync("OFF")
        put = self.q.put
        for _ in range(count):
            put(body)
        self._set_sync(self.synchronous)

    def close(self):
        self.q.close()


# -- litequeue ---------------------------------------------------------------------------------


class LiteQueue(BenchQueue):
    kind = "litequeue"

    def __init__(self, directory: str, synchronous: str):
        from litequeue import LiteQueue as LQ

        self.q = LQ(os.path.join(directory, "litequeue.db"), queue_name="bench", timeout=60)
        self.q.conn.execute(f"PRAGMA synchronous={synchronous}")  # litequeue sets NORMAL itself
        got = self.q.conn.execute("PRAGMA synchronous").fetchone()[0]
        if got != {"NORMAL": 1, "FULL": 2}[synchronous]:
            raise RuntimeError(f"litequeue: synchronous is {got}, wanted {synchronous}")
        self._put = self.q.put

    def wrap(self, body):
        return body.decode("ascii")  # litequeue stores TEXT

    def send(self, body):
        self._put(body)

    def send_batch(self, bodies):
        put = self._put
        with self.q.transaction():
            for b in bodies:
                put(b)

    def receive_delete(self, n, wait=0.0):
        pop = self.q.pop
        msgs = []
        deadline = None
        while len(msgs) < n:
            m = pop()
            if m is None:
                if msgs or wait <= 0:
                    break
                if deadline is None:
                    deadline = time.monotonic() + wait
                elif time.monotonic() >= deadline:
                    break
                time.sleep(POLL_S)
                continue
            msgs.append(m)
        if msgs:
            done = self.q.done
            with self.q.transaction():
                for m in msgs:
                    done(m.message_id)
        return [m.data for m in msgs]

    def prefill(self, count, body):
        text = self.wrap(body)
        put = self._put
        left = count
        while left > 0:
            with self.q.transaction():
                for _ in range(min(10_000, left)):
                    put(text)
            left -= 10_000

    def close(self):
        self.q.close()
