"""delete_queue racing the queue's users, in threads and in other processes:
the losers get QueueDoesNotExist (never a raw OSError, a TypeError from a
closed handle, or BrokerClosed), nothing is used after close, and no
directory is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import traceback

import pytest

import walq


def _worker_loop(q, stop, errors, rounds):
    """Every operation kind on ``q`` until it fails or ``stop`` is set."""
    try:
        i = 0
        while not stop.is_set():
            q.send(b"x%d" % i)
            q.send_batch([b"a", {"body": "b", "attributes": {"k": 1}}])
            got = q.receive(max_messages=5)
            if got:
                q.delete_batch([m.receipt for m in got[1:]] or [got[0].receipt])
                q.delete(got[0].receipt)
            if i % 7 == 0:
                q.stats()
            if i % 50 == 0:
                q.checkpoint()
            i += 1
            rounds.append(i)
    except walq.QueueDoesNotExist:
        pass
    except BaseException as exc:  # noqa: BLE001 - the test reports it
        errors.append(exc)


def _queue_dirs(root) -> list[str]:
    return sorted(os.listdir(os.path.join(root, "queues")))


@pytest.mark.parametrize("kind", ["standard", "fifo"])
def test_delete_queue_racing_threads_gives_queue_does_not_exist(tmp_path, kind):
    for cycle in range(6):
        root = tmp_path / f"s{cycle}"
        with walq.open(root, durability="always" if cycle % 2 else "os") as broker:
            name = "q.fifo" if kind == "fifo" else "q"
            broker.create_queue(name, content_based_dedup=kind == "fifo")
            q = broker.get_queue(name)
            if kind == "fifo":
                # FIFO sends need a group: wrap the handle's send.
                class Fifo:
                    def __getattr__(self, a):
                        return getattr(q, a)

                    def send(self, body):
                        return q.send(body, group="g")

                    def send_batch(self, entries):
                        return q.send_batch([{"body": e if not isinstance(e, dict) else e["body"], "group": "g"}
                                             for e in entries])

                handle = Fifo()
            else:
                handle = q
            stop, errors, rounds = threading.Event(), [], []
            threads = [threading.Thread(target=_worker_loop, args=(handle, stop, errors, rounds)) for _ in range(4)]
            for t in threads:
                t.start()
            # Observable progress, not a sleep: every worker has looped.
            while len(rounds) < 8 and not errors and any(t.is_alive() for t in threads):
                threading.Event().wait(0.005)
            broker.delete_queue(name)
            for t in threads:
                t.join(timeout=120)
            stop.set()
            assert not any(t.is_alive() for t in threads), "a worker hung after the delete"
            assert not errors, f"cycle {cycle}: " + "".join(traceback.format_exception(errors[0]))
            with pytest.raises(walq.QueueDoesNotExist):
                q.send(b"after")
            assert broker.list_queues() == []
            assert _queue_dirs(root) == []


_CHILD = textwrap.dedent("""
    import sys, walq
    root, name, ready = sys.argv[1], sys.argv[2], sys.argv[3]
    b = walq.open(root, durability="os")
    q = b.get_queue(name)
    n = 0
    try:
        while True:
            q.send(b"m%d" % n)
            got = q.receive(max_messages=3)
            if got:
                q.delete_batch([m.receipt for m in got])
            n += 1
            if n == 20:
                open(ready, "w").close()
            if n % 25 == 0:
                q.checkpoint()
    except walq.QueueDoesNotExist:
        print("gone")
        sys.exit(0)
    except BaseException as exc:
        print("ERROR", repr(exc))
        sys.exit(1)
""")


def test_delete_queue_racing_other_processes(tmp_path):
    root = str(tmp_path / "s")
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    for cycle in range(3):
        name = f"q{cycle}"
        with walq.open(root) as broker:
            broker.create_queue(name)
            ready = [str(tmp_path / f"ready-{cycle}-{k}") for k in range(3)]
            kids = [subprocess.Popen([sys.executable, str(script), root, name, r], stdout=subprocess.PIPE, text=True)
                    for r in ready]
            try:
                # Wait until each child is busy with the queue (a file it writes).
                for r, kid in zip(ready, kids):
                    while not os.path.exists(r):
                        assert kid.poll() is None, kid.stdout.read()
                        threading.Event().wait(0.01)
                broker.delete_queue(name)
                outs = [kid.communicate(timeout=120)[0] for kid in kids]
            finally:
                for kid in kids:
                    if kid.poll() is None:
                        kid.kill()
            assert [o.strip() for o in outs] == ["gone"] * 3, outs
            assert [k.returncode for k in kids] == [0, 0, 0]
            assert broker.list_queues() == []
        assert _queue_dirs(root) == [], "a deleted queue's directory was left behind"


def test_a_deletion_interrupted_after_its_record_is_finished_on_open(tmp_path):
    root = tmp_path / "s"
    with walq.open(root) as broker:
        q = broker.create_queue("q")
        q.send(b"x")
        uid = q._uid
        # As if the deleting process died between the record and the rename.
        broker._remove_queue_dir = lambda uid: None
        broker.delete_queue("q")
    assert _queue_dirs(root) == [f"{uid:016x}"]
    with walq.open(root) as broker:
        assert _queue_dirs(root) == []
        assert broker.list_queues() == []


def test_get_queue_never_recreates_a_deleted_queue_directory(tmp_path):
    root = tmp_path / "s"
    with walq.open(root) as a, walq.open(root) as b:
        a.create_queue("q")
        b._catalog.refresh()  # b has seen the queue
        uid = b._catalog.queues["q"].uid
        # a deletes it between b's lookup and b's open of its log.
        real_refresh = b._catalog.refresh

        def stale_once():  # get_queue's own lookup misses the deletion
            b._catalog.refresh = real_refresh

        b._catalog.refresh = stale_once
        a.delete_queue("q")
        with pytest.raises(walq.QueueDoesNotExist):
            b.get_queue("q")
        assert f"{uid:016x}" not in _queue_dirs(root)


def test_closing_the_broker_under_a_long_poll_raises_broker_closed(tmp_path):
    # The control block stays mapped after close: a waiter in another
    # thread gets BrokerClosed, never a TypeError from a dropped handle.
    for cycle in range(5):
        broker = walq.open(tmp_path / f"s{cycle}", durability="os")
        q = broker.create_queue("q")
        out, started = [], threading.Event()

        def poll():
            started.set()
            try:
                out.append(q.receive(wait=20))
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                out.append(exc)

        t = threading.Thread(target=poll)
        t.start()
        started.wait(60)
        broker.close()
        t.join(60)
        assert not t.is_alive()
        assert out == [[]] or isinstance(out[0], walq.BrokerClosed), repr(out)
