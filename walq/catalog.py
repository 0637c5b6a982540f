"""The catalog: which queues exist, with which attributes, in a small log.

Records are JSON objects (type 1 in the catalog log):

    {"op": "create", "name": N, "uid": U, "attrs": {...}}
    {"op": "set",    "name": N, "uid": U, "attrs": {...}}
    {"op": "delete", "name": N, "uid": U}

Every process replays the catalog log, so a queue created or deleted in one
process is seen by the others on their next call.  Each queue lives in
``queues/<uid>``: a fresh uid per creation keeps a deleted queue's files from
ever mixing with a new queue of the same name.

The catalog is not the only copy of a queue's definition: ``queue.json`` in
the queue's directory holds the same record, written atomically before the
catalog record of a create or an attribute change is appended (and so before
either is acknowledged).  A catalog that lost records - a flipped byte, a
truncation, a deleted file - is found on open (a queue directory whose uid
the catalog never mentioned) and rebuilt by ``walq repair`` from those files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from typing import NamedTuple

from walq.errors import CorruptionError
from walq.log import Log, LogOptions
from walq.log.fileio import OsIO
from walq.queue.attributes import QueueAttributes

_CATALOG = 1
#: I/O for files in the queue directories (the catalog log's own I/O object
#: serves its directory only: a test's recording shim, for one).
_QUEUE_FILES = OsIO()
DEFINITION = "queue.json"
#: A queue directory's name: its uid in 16 hex digits.  Anything else under
#: ``queues/`` (``<uid>.deleted``, ``.trash``, a tmp file) is not a queue.
_QUEUE_DIR = re.compile(r"^[0-9a-f]{16}$")


class Entry(NamedTuple):
    """One existing queue."""

    uid: int
    attrs: QueueAttributes


def queue_uid(dirname: str) -> int | None:
    """The uid a ``queues/`` entry names, or None if it is not a queue directory."""
    return int(dirname, 16) if _QUEUE_DIR.match(dirname) else None


def definition_json(name: str, uid: int, attrs: QueueAttributes) -> bytes:
    """The bytes of a queue's ``queue.json``."""
    return json.dumps({"name": name, "uid": uid, "attrs": attrs.to_json()}, sort_keys=True, indent=1).encode()


def write_definition(queue_dir: str, name: str, uid: int, attrs: QueueAttributes, io) -> None:
    """Writes ``queue.json`` durably: tmp, fsync, rename, fsync directory."""
    io.write_file_atomic(os.path.join(queue_dir, DEFINITION), definition_json(name, uid, attrs))


def read_definition(queue_dir: str) -> dict | None:
    """``{"name", "uid", "attrs": QueueAttributes}`` from ``queue.json``, or
    None if the file is absent or does not parse."""
    try:
        with open(os.path.join(queue_dir, DEFINITION), "rb") as f:
            d = json.loads(f.read())
        return {"name": d["name"], "uid": int(d["uid"]), "attrs": QueueAttributes.from_json(d["attrs"])}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None


def queue_label(queue_dir: str) -> str:
    """``queue 'NAME'`` (from ``queue.json``) or ``queue directory <uid>``."""
    d = read_definition(queue_dir)
    if d is not None:
        return f"queue {d['name']!r}"
    return f"queue directory {os.path.basename(os.path.normpath(queue_dir))}"


def find_store(path: str) -> str | None:
    """The store directory ``path`` lies in (a directory with ``catalog/``
    and ``queues/``), or None."""
    p = os.path.abspath(path)
    for _ in range(4):
        if os.path.isdir(os.path.join(p, "catalog")) and os.path.isdir(os.path.join(p, "queues")):
            return p
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return None


def repair_hint(path: str | None) -> str:
    """The way forward after damage under ``path``: the repair command."""
    store = find_store(path) if path else None
    return f"run `walq repair --data {store}`" if store else "run `walq repair --data DIR` on the store"


class Catalog:
    """The catalog log and its replayed state."""

    def __init__(self, root: str, options: LogOptions, io=None):
        self.root = root
        self.log = Log.open(os.path.join(root, "catalog"), options, io)
        self.queues: dict[str, Entry] = {}
        #: Every uid a record ever named (created, changed or deleted).
        self.known: set[int] = set()
        self.deleted: set[int] = set()  # uids of deleted queues
        self._applied = self.log.first
        self.mu = threading.RLock()
        try:
            self.refresh()
            self._check_queue_dirs()
        except BaseException:
            self.log.close()
            raise

    def refresh(self) -> None:
        """Replays records other processes appended (one shared-memory load
        when nothing changed).

        Returns once what it applied is durable (as the store's durability
        mode says): a queue another process has just created, but not yet
        synced, must not be used - a power cut would take the queue away
        from under messages sent into it.
        """
        if self._applied < self.log.end:
            self.log.settle(self.replay())

    def replay(self) -> int:
        """Applies the records appended since the last look, without waiting
        for them to be durable (under the catalog's lock, whose release
        waits); returns the position applied up to."""
        with self.mu:
            for rec in self.log.iter_from(self._applied):
                self._apply(json.loads(rec.payload))
                self._applied = rec.seq + 1
            return self._applied

    def _apply(self, r: dict) -> None:
        op, name = r["op"], r["name"]
        self.known.add(r["uid"])
        if op in ("create", "set"):
            self.queues[name] = Entry(r["uid"], QueueAttributes.from_json(r["attrs"]))
        elif op == "delete":
            self.deleted.add(r["uid"])
            cur = self.queues.get(name)
            if cur is not None and cur.uid == r["uid"]:
                del self.queues[name]

    def _check_queue_dirs(self) -> None:
        """Refuses a catalog that lost queues: a queue directory holding a
        ``queue.json`` whose uid no catalog record names.  Writes the
        ``queue.json`` of listed queues that lack one (stores made before it
        existed).

        Runs under the catalog's append lock: a create holds it from making
        the directory to appending its record, so no creation is half done
        here; a delete appends its record before removing the directory.
        """
        root = os.path.join(self.root, "queues")
        try:
            names = os.listdir(root)
        except FileNotFoundError:
            return
        by_uid = {e.uid: n for n, e in self.queues.items()}
        if all(queue_uid(n) in by_uid and os.path.exists(os.path.join(root, n, DEFINITION)) for n in names
               if queue_uid(n) is not None):
            return  # the usual case, without the lock
        with self.log.locked(wait_durable=False):
            self.replay()
            by_uid = {e.uid: n for n, e in self.queues.items()}
            for n in sorted(os.listdir(root)):
                uid = queue_uid(n)
                if uid is None:
                    continue
                qdir = os.path.join(root, n)
                if uid in by_uid:
                    if not os.path.exists(os.path.join(qdir, DEFINITION)):
                        name = by_uid[uid]
                        write_definition(qdir, name, uid, self.queues[name].attrs, _QUEUE_FILES)
                    continue
                d = read_definition(qdir)
                if d is not None and uid not in self.known:
                    path = os.path.join(self.root, "catalog")
                    raise CorruptionError(
                        f"the catalog {path} does not list queue {d['name']!r} (queues/{n} holds its "
                        f"definition and data): catalog records were lost", path, None)

    def locked(self):
        """The catalog's append lock (decide-then-write for create/set/delete)."""
        return self.log.locked()

    def write(self, tx, op: str, name: str, uid: int, attrs: QueueAttributes | None = None) -> None:
        """Appends one catalog record under ``tx`` and applies it.

        A create or set first writes the queue's ``queue.json`` (durably),
        so that the catalog can be rebuilt from the queue directories.
        """
        rec = {"op": op, "name": name, "uid": uid}
        if attrs is not None:
            rec["attrs"] = attrs.to_json()
            qdir = os.path.join(self.root, "queues", f"{uid:016x}")
            os.makedirs(qdir, exist_ok=True)
            write_definition(qdir, name, uid, attrs, _QUEUE_FILES)
        tx.append(json.dumps(rec, sort_keys=True).encode())
        self.replay()  # the lock's release waits for durability, not this

    @staticmethod
    def new_uid() -> int:
        """A random 63-bit id for a new queue."""
        return secrets.randbits(63)

    def close(self) -> None:
        """Closes the catalog log."""
        self.log.close()
