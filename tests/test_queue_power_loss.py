"""Power loss at the queue level (tests/crashsim.py): a call that returned
under ``"always"`` rests only on durable records, its own or another
writer's, and a checkpoint never covers what is not durable.

Each test records one log of a store through ``RecordingIO`` (the
``Broker._log_io`` seam), marks the moment a call returned with a note,
then rebuilds every state a power cut after that moment could leave and
checks what the call confirmed.  The other writer runs with
``durability="os"``: its records are appended but never synced, as a
process that has written its record and not yet reached its fdatasync.
"""

from __future__ import annotations

import os
import shutil
import warnings

import pytest

import crashsim
import walq
from walq.queue import checkpoint

ALWAYS, OS = "always", "os"


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """``record(root, predicate)``: every log of the store ``root`` whose
    directory satisfies ``predicate`` is written through one RecordingIO
    per directory; returns the dict of them."""
    recs: dict[str, crashsim.RecordingIO] = {}

    def record(root, predicate):
        root = os.path.abspath(root) + os.sep

        def log_io(self, directory):
            d = os.path.abspath(directory)
            if d.startswith(root) and predicate(d):
                return recs.setdefault(d, crashsim.RecordingIO(d))
            return None

        monkeypatch.setattr(walq.Broker, "_log_io", log_io)
        return recs

    yield record
    for r in recs.values():
        r.close()


def _is_queue_dir(d: str) -> bool:
    return os.path.basename(os.path.dirname(d)) == "queues"


def _is_catalog(d: str) -> bool:
    return os.path.basename(d) == "catalog"


def states_after_note(rec: crashsim.RecordingIO):
    """The crash states from the (only) note on (a note changes nothing on
    disk: the state just before it is the state at it)."""
    ops = rec.finish()
    at = next(i for i, op in enumerate(ops) if op.kind == crashsim.NOTE)
    return list(crashsim.crash_states(ops, rec.ctl_snapshots, seed=1, points=set(range(at, len(ops) + 1))))


def rebuilt(root: str, recorded_dir: str, state, scratch: str) -> str:
    """A copy of the store ``root`` with ``recorded_dir`` as ``state`` left it."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(root, scratch)
    target = os.path.join(scratch, os.path.relpath(recorded_dir, root))
    shutil.rmtree(target)
    crashsim.materialize(state, target)
    return scratch


def drain(broker, name: str, clock) -> list[bytes]:
    clock.advance(3600)  # every lease has run out
    q = broker.get_queue(name)
    out = []
    while True:
        got = q.receive(max_messages=10)
        if not got:
            return out
        out += [m.body for m in got]
        q.delete_batch([m.receipt for m in got])


def test_a_delete_of_a_message_another_writer_deleted_waits_for_that_record(tmp_path, recorded, clock, both_indexes):
    root = str(tmp_path / "live")
    recs = recorded(root, _is_queue_dir)
    with walq.open(root, durability=ALWAYS, clock=clock) as setup:
        setup.create_queue("q").send(b"m")
    a = walq.open(root, durability=OS, clock=clock)
    b = walq.open(root, durability=ALWAYS, clock=clock)
    qa, qb = a.get_queue("q"), b.get_queue("q")
    [m] = qa.receive()
    qa.delete(m.receipt)  # appended, not synced
    qb.stats()  # b's index has seen the delete
    qb.delete(m.receipt)  # decided by a's record: must not return before it is durable
    [rec] = recs.values()
    rec.note(("b's delete returned",))
    states = states_after_note(rec)
    a.close()
    b.close()
    assert states
    for n, state in enumerate(states):
        d = rebuilt(root, rec.directory, state, str(tmp_path / "scratch"))
        with walq.open(d, durability=OS, clock=clock) as after:
            assert drain(after, "q", clock) == [], f"a confirmed delete was undone ({state.label})"


def test_a_fifo_duplicate_waits_for_the_original_to_be_durable(tmp_path, recorded, clock):
    root = str(tmp_path / "live")
    recs = recorded(root, _is_queue_dir)
    with walq.open(root, durability=ALWAYS, clock=clock) as setup:
        setup.create_queue("q.fifo")
    a = walq.open(root, durability=OS, clock=clock)
    b = walq.open(root, durability=ALWAYS, clock=clock)
    first = a.get_queue("q.fifo").send(b"pay 5", group="g", dedup_id="d1")  # not synced
    dup = b.get_queue("q.fifo").send(b"pay 5", group="g", dedup_id="d1")
    assert dup.duplicate and dup.message_id == first.message_id
    [rec] = recs.values()
    rec.note(("duplicate returned",))
    states = states_after_note(rec)
    a.close()
    b.close()
    assert states
    for state in states:
        d = rebuilt(root, rec.directory, state, str(tmp_path / "scratch"))
        with walq.open(d, durability=OS, clock=clock) as after:
            assert drain(after, "q.fifo", clock) == [b"pay 5"], f"the duplicate's original is gone ({state.label})"


def test_create_queue_of_a_name_another_writer_created_waits_for_that_record(tmp_path, recorded, clock):
    root = str(tmp_path / "live")
    recs = recorded(root, _is_catalog)
    a = walq.open(root, durability=OS, clock=clock)
    b = walq.open(root, durability=ALWAYS, clock=clock)
    a.create_queue("x")  # the catalog record is appended, not synced
    qb = b.create_queue("x")  # exists already: must not return before a's record is durable
    qb.send(b"into x")
    rec = recs[os.path.abspath(os.path.join(root, "catalog"))]
    rec.note(("create and send returned",))
    states = states_after_note(rec)
    a.close()
    b.close()
    assert states
    for state in states:
        d = rebuilt(root, rec.directory, state, str(tmp_path / "scratch"))
        with walq.open(d, durability=OS, clock=clock) as after:
            assert after.list_queues() == ["x"], f"the created queue is gone ({state.label})"
            assert drain(after, "x", clock) == [b"into x"]


def test_a_checkpoint_never_covers_an_unsynced_tail(tmp_path, recorded, clock):
    root = str(tmp_path / "live")
    recs = recorded(root, _is_queue_dir)
    b = walq.open(root, durability=ALWAYS, clock=clock)
    q = b.create_queue("q")
    q.send_batch([b"m%d" % i for i in range(6)])
    q.receive(max_messages=3)  # leases: written, not synced
    q.checkpoint()
    [rec] = recs.values()
    rec.note(("checkpointed",))
    states = states_after_note(rec)
    b.close()
    assert states
    for state in states:
        d = rebuilt(root, rec.directory, state, str(tmp_path / "scratch"))
        with walq.open(d, durability=ALWAYS, clock=clock) as after:
            after.get_queue("q").send(b"after the power cut")
        # Reopened: the send that returned must be delivered, not skipped
        # by an index that starts from a checkpoint beyond the log's end.
        with walq.open(d, durability=ALWAYS, clock=clock) as again:
            got = drain(again, "q", clock)
        assert sorted(got) == sorted([b"m%d" % i for i in range(6)] + [b"after the power cut"]), state.label


def test_a_checkpoint_ahead_of_the_log_is_set_aside_on_recovery(tmp_path, clock):
    root = str(tmp_path / "s")
    with walq.open(root, clock=clock) as b:
        q = b.create_queue("q")
        q.send_batch([b"a", b"b", b"c"])
        qdir = q._dir
    short = str(tmp_path / "short")
    shutil.copytree(root, short)  # the log as a power cut could leave it
    with walq.open(root, clock=clock) as b:
        q = b.get_queue("q")
        q.send_batch([b"d", b"e"])
        pos = q.checkpoint()
    rel = os.path.relpath(qdir, root)
    shutil.copy(os.path.join(qdir, checkpoint.checkpoint_name(pos)), os.path.join(short, rel))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with walq.open(short, clock=clock) as b:
            b.get_queue("q").send(b"new")
    assert any("beyond the log's end" in str(w.message) for w in caught)
    assert os.path.exists(os.path.join(short, rel, checkpoint.checkpoint_name(pos) + ".ahead-of-log"))
    with walq.open(short, clock=clock) as b:
        assert sorted(drain(b, "q", clock)) == [b"a", b"b", b"c", b"new"]
