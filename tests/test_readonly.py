"""walq.open(path, readonly=True): monitoring by a user who may read a store
but not write it.  Queues, attributes and stats work; every write raises
ReadOnlyStore; nothing on disk changes (no file created, locked, recovered or
written), even when the store holds a tail no process has recovered.

The tests run the reader as an unprivileged user (uid/gid 65534) in a forked
child: root reads everything, so a test as root would not show it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from click.testing import CliRunner

import walq
from helpers import data_end
from walq.cli import main as cli_main
from walq.tools.inspect import queue_dir
from users import NOBODY, as_nobody, can_switch_user

needs_root = pytest.mark.skipif(not can_switch_user(),
                                reason="running a reader as another user needs root (setuid to 65534)")


@pytest.fixture
def public_dir():
    """A directory any user may enter (pytest's tmp_path is root's alone)."""
    d = tempfile.mkdtemp(prefix="walq-ro-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def snapshot(root: str) -> dict:
    """Every entry with its size, mtime, mode and owner: "nothing changed"."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            with open(path, "rb") if os.path.isfile(path) else open(os.devnull, "rb") as f:
                digest = hash(f.read())
            out[path] = (st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid, digest)
    return out


def make_readable(root: str) -> None:
    """What a store created before owner-only modes, or chmod -R go+rX, looks like."""
    for directory, dirs, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


def read_as_nobody(store: str) -> dict:
    """What a user who may only read the store sees, and which writes it is refused."""
    def reader():
        out = {"uid": os.geteuid()}
        with walq.open(store, readonly=True) as b:
            out["queues"] = b.list_queues()
            q = b.get_queue("orders")
            s = q.stats()
            out["visible"], out["in_flight"] = s.visible, s.in_flight
            out["visibility_timeout"] = q.attributes.visibility_timeout
            refusals = []
            for name, call in [("send", lambda: q.send(b"x")),
                               ("receive", lambda: q.receive(1)),
                               ("purge", q.purge),
                               ("checkpoint", q.checkpoint),
                               ("set_attributes", lambda: q.set_attributes(delay=5)),
                               ("create_queue", lambda: b.create_queue("new")),
                               ("delete_queue", lambda: b.delete_queue("orders"))]:
                try:
                    call()
                    refusals.append([name, "accepted"])
                except walq.ReadOnlyStore:
                    refusals.append([name, "ReadOnlyStore"])
                except Exception as exc:
                    refusals.append([name, f"{type(exc).__name__}: {exc}"])
            out["refusals"] = refusals
        # Without readonly=True the same user is refused outright.
        try:
            walq.open(store).close()
            out["plain_open"] = "opened"
        except PermissionError as exc:
            out["plain_open"] = type(exc).__name__
        return out

    got = as_nobody(reader)
    assert got["uid"] == NOBODY
    return got


def busy_store(store: str) -> None:
    with walq.open(store, durability="os") as b:
        q = b.create_queue("orders", visibility_timeout=45)
        for i in range(5):
            q.send(b"order %d" % i)
        q.receive(2)
        b.create_queue("other").send(b"x")


@needs_root
def test_a_reader_without_write_access_sees_stats_and_every_write_is_refused(public_dir):
    store = os.path.join(public_dir, "data")
    busy_store(store)
    make_readable(store)
    before = snapshot(store)
    got = read_as_nobody(store)
    assert got["plain_open"] == "PermissionError"
    assert got["queues"] == ["orders", "other"]
    assert (got["visible"], got["in_flight"], got["visibility_timeout"]) == (3, 2, 45)
    assert all(verdict == "ReadOnlyStore" for _, verdict in got["refusals"]), got["refusals"]
    assert snapshot(store) == before


@needs_root
def test_a_reader_reads_a_tail_nobody_recovered_without_recovering_it(public_dir):
    store = os.path.join(public_dir, "data")
    busy_store(store)
    qdir = queue_dir(store, "orders")
    # As after a crash nobody recovered: no valid control block, a .seg.tmp
    # of a roll cut short, and a torn half-record after the last one.
    with open(os.path.join(qdir, "log.ctl"), "r+b") as f:
        f.write(bytes(16))
    with open(os.path.join(qdir, "00000000000000000099.seg.tmp"), "wb") as f:
        f.write(b"partial")
    seg = os.path.join(qdir, "00000000000000000000.seg")
    with open(seg, "r+b") as f:
        f.seek(data_end(seg))
        f.write(b"\x99" * 20)
    make_readable(store)
    before = snapshot(store)
    got = read_as_nobody(store)
    assert (got["visible"], got["in_flight"]) == (3, 2)
    assert snapshot(store) == before
    # The next writer recovers as usual.
    with walq.open(store, durability="os") as b:
        assert b.get_queue("orders").stats().visible == 3


@needs_root
def test_the_cli_falls_back_to_read_only_for_stats_and_queue_list(public_dir):
    store = os.path.join(public_dir, "data")
    busy_store(store)
    make_readable(store)
    before = snapshot(store)

    def cli():
        runner = CliRunner()
        out = {}
        for name, args in (("stats", ["stats"]), ("list", ["queue", "list"]), ("send", ["send", "orders", "x"])):
            r = runner.invoke(cli_main, ["--data", store, *args])
            out[name] = [r.exit_code, r.output]
        return out

    got = as_nobody(cli)
    for name in ("stats", "list"):
        code, output = got[name]
        assert code == 0 and "orders" in output and "other" in output, got[name]
    code, output = got["send"]
    assert code != 0 and "read-only" in output, got["send"]
    assert snapshot(store) == before


def test_read_only_refuses_to_create_a_store(tmp_path):
    with pytest.raises(walq.ReadOnlyStore):
        walq.open(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()


def test_a_read_only_handle_follows_a_live_writer(tmp_path):
    with walq.open(tmp_path / "d", durability="os") as w:
        q = w.create_queue("q")
        q.send(b"1")
        with walq.open(tmp_path / "d", readonly=True) as r:
            rq = r.get_queue("q")
            assert rq.stats().visible == 1
            q.send(b"2")
            assert rq.stats().visible == 2
            w.create_queue("later")
            assert r.list_queues() == ["later", "q"]
            with pytest.raises(walq.ReadOnlyStore):
                rq.send(b"no")
            with pytest.raises(walq.ReadOnlyStore):
                rq.receive(1)
        assert q.stats().visible == 2


@needs_root
def test_a_reader_opens_a_store_whose_topic_fan_out_needs_completing_and_changes_nothing(public_dir):
    store = os.path.join(public_dir, "data")
    busy_store(store)
    with walq.open(store, durability="os") as b:
        t = b.create_topic("news")
        t.subscribe(b.get_queue("orders"))
        t.publish("hello")
    # As after a reboot: the fan-out mark is not this boot's, so a writer's
    # open would complete the topic's fan-out.
    mark = os.path.join(store, "topics", f"{_topic_uid(store, 'news'):016x}", "fanout.ctl")
    with open(mark, "r+b") as f:
        f.write(bytes(64))
    make_readable(store)
    before = snapshot(store)

    def reader():
        with walq.open(store, readonly=True) as b:
            return {"queues": b.list_queues(), "visible": b.get_queue("orders").stats().visible}

    got = as_nobody(reader)
    assert got == {"queues": ["orders", "other"], "visible": 4}
    assert snapshot(store) == before


def _topic_uid(store: str, name: str) -> int:
    from walq.topic.inspect import describe

    return int(next(t["uid"] for t in describe(store) if t["topic"] == name), 16)
