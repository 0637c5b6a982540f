"""Who may read a store, and which files walq will use: owner-only modes by
default, a shared group on request, and files planted in a store (symlinks,
FIFOs, other users' files) refused by name and reported by verify."""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import stat
import tempfile

import pytest

import walq
from helpers import data_end, last_segment, write_at
from users import NOBODY, as_nobody, can_switch_user
from walq.tools.inspect import verify_store
from walq.log import Log, LogOptions
from walq.log.format import segment_name

SMALL = dict(durability="os", segment_size=4096)


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def tree(root):
    """(path, lstat) of every entry below ``root``."""
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            yield path, os.lstat(path)


def busy_store(path, **kw):
    """A store with two queues, rolled segments and a checkpoint."""
    with walq.open(path, **SMALL, **kw) as b:
        q = b.create_queue("a")
        for i in range(40):
            q.send(b"password=%d " % i * 20)
        for m in q.receive(5):
            m.ack()
        q.checkpoint()
        b.create_queue("later").send(b"x")
    return path


def test_a_new_store_is_readable_by_its_owner_only_whatever_the_umask(tmp_path):
    with umask(0):  # the umask must not decide the modes
        busy_store(tmp_path / "data")
    entries = list(tree(tmp_path / "data"))
    assert any(p.endswith(".seg") for p, _ in entries) and any("checkpoint-" in p for p, _ in entries)
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
    for path, st in entries:
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        assert stat.S_IMODE(st.st_mode) == want, (path, oct(st.st_mode))


def _some_group() -> int:
    for name in ("nogroup", "nobody", "daemon"):
        with contextlib.suppress(KeyError):
            return grp.getgrnam(name).gr_gid
    return grp.getgrall()[-1].gr_gid


@pytest.mark.parametrize("by_name", [True, False])
def test_a_shared_store_gives_every_file_it_ever_creates_to_the_group(tmp_path, by_name):
    gid = _some_group()
    group = grp.getgrgid(gid).gr_name if by_name else gid
    with umask(0o077):  # would make files 0600 if modes were left to it
        busy_store(tmp_path / "data", group=group)
        # A later process, opening without group=, keeps the store shared.
        with walq.open(tmp_path / "data", **SMALL) as b:
            q = b.create_queue("third")
            for i in range(30):
                q.send(b"y" * 300)
            q.checkpoint()
        # A torn tail: recovery copies it aside into a torn-*.bin.
        seg = last_segment(_queue_dir(tmp_path / "data", "third"))
        write_at(seg, data_end(seg), b"\x99" * 40)
        with walq.open(tmp_path / "data", **SMALL) as b:
            b.get_queue("third")
    assert [n for n in os.listdir(_queue_dir(tmp_path / "data", "third")) if n.startswith("torn-")]
    for path, st in [(str(tmp_path / "data"), os.lstat(tmp_path / "data"))] + list(tree(tmp_path / "data")):
        assert st.st_gid == gid, path
        want = 0o2770 if stat.S_ISDIR(st.st_mode) else 0o660
        assert stat.S_IMODE(st.st_mode) == want, (path, oct(st.st_mode))


def test_an_unknown_group_is_refused(tmp_path):
    with pytest.raises(walq.InvalidParameter):
        walq.open(tmp_path / "data", group="no-such-group-here")
    assert not (tmp_path / "data").exists()


def _queue_dir(store, name):
    from walq.tools.inspect import queue_dir
    return queue_dir(str(store), name)


def test_a_symlinked_log_ctl_is_refused_and_its_target_untouched(tmp_path):
    store = busy_store(tmp_path / "data")
    qdir = _queue_dir(store, "a")
    target = tmp_path / "victim"
    target.write_bytes(b"keep me")
    os.unlink(os.path.join(qdir, "log.ctl"))
    os.symlink(target, os.path.join(qdir, "log.ctl"))
    with walq.open(store, durability="os") as b:
        with pytest.raises(walq.UnsafeFile) as err:
            b.get_queue("a")
    assert err.value.path == os.path.join(qdir, "log.ctl") and "symbolic link" in str(err.value)
    assert target.read_bytes() == b"keep me"
    report = verify_store(str(store))
    assert not report.ok and any(p.path.endswith("log.ctl") and "symbolic link" in p.message for p in report.damage)


def test_a_segment_linked_to_another_queues_is_refused_and_verify_fails(tmp_path):
    store = tmp_path / "data"
    with walq.open(store, durability="os") as b:
        b.create_queue("a").send(b"for a")
        b.create_queue("c").send(b"secret for c")
    a_seg = os.path.join(_queue_dir(store, "a"), segment_name(0))
    os.unlink(a_seg)
    os.symlink(os.path.join(_queue_dir(store, "c"), segment_name(0)), a_seg)
    assert not verify_store(str(store)).ok
    with walq.open(store, durability="os") as b:
        with pytest.raises(walq.UnsafeFile) as err:
            b.get_queue("a").receive(10)
        assert err.value.path == a_seg


def test_planted_tmp_links_are_replaced_not_written_through(tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"keep me")
    d = tmp_path / "log"
    with Log.open(d, LogOptions(durability="os", segment_size=4096)) as log:
        log.append(b"a" * 100)
        for seq in range(log.end, log.end + 4):  # the next roll's base is among these
            os.symlink(target, d / (segment_name(seq) + ".tmp"))
        log.append(b"b" * 4000)  # does not fit: rolls
        assert len([n for n in os.listdir(d) if n.endswith(".seg")]) == 2
    assert target.read_bytes() == b"keep me"

    store = tmp_path / "data"
    with walq.open(store, durability="os") as b:
        q = b.create_queue("a")
        q.send(b"x")
        qdir = _queue_dir(store, "a")
        for pos in range(0, 10):
            os.symlink(target, os.path.join(qdir, f"checkpoint-{pos:020d}.tmp"))
        pos = q.checkpoint()
        assert os.path.isfile(os.path.join(qdir, f"checkpoint-{pos:020d}"))
    assert target.read_bytes() == b"keep me"


def test_a_fifo_or_directory_in_place_of_a_lock_file_is_refused_without_hanging(tmp_path):
    d = tmp_path / "log"
    Log.open(d, LogOptions(durability="os")).close()
    os.unlink(d / "lock.open")
    os.mkfifo(d / "lock.open")
    with pytest.raises(walq.UnsafeFile, match="FIFO"):
        Log.open(d, LogOptions(durability="os"))
    os.unlink(d / "lock.users")
    os.mkdir(d / "lock.users")
    os.unlink(d / "lock.open")
    with pytest.raises(walq.UnsafeFile, match="lock.users"):
        Log.open(d, LogOptions(durability="os"))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_file_owned_by_another_user_is_refused(tmp_path):
    store = busy_store(tmp_path / "data")
    seg = os.path.join(_queue_dir(store, "a"), sorted(n for n in os.listdir(_queue_dir(store, "a"))
                                                      if n.endswith(".seg"))[-1])
    os.chown(seg, 65534, 65534)
    with walq.open(store, durability="os") as b:
        with pytest.raises(walq.UnsafeFile, match="uid 65534"):
            b.get_queue("a").receive(10)
    assert any(p.path == seg and "uid 65534" in p.message for p in verify_store(str(store)).damage)


def test_a_store_directory_replaced_by_a_link_is_refused(tmp_path):
    store = tmp_path / "data"
    with walq.open(store, durability="os") as b:
        b.create_queue("a").send(b"a")
        b.create_queue("c").send(b"c")
    a_dir, c_dir = _queue_dir(store, "a"), _queue_dir(store, "c")
    os.rename(a_dir, a_dir + ".old")
    os.symlink(c_dir, a_dir)
    with walq.open(store, durability="os") as b:
        with pytest.raises(walq.UnsafeFile):
            b.get_queue("a")
    assert not verify_store(str(store)).ok


def test_a_store_path_with_missing_parents_is_created(tmp_path):
    with walq.open(tmp_path / "a" / "b" / "data", durability="os") as b:
        b.create_queue("q").send(b"x")
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b" / "data").st_mode) == 0o700


def test_an_existing_private_stores_modes_are_left_as_its_owner_set_them(tmp_path):
    store = busy_store(tmp_path / "data")
    for path, st in [(str(store), None)] + list(tree(store)):  # as chmod -R go+rX would
        os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
    before = {p: stat.S_IMODE(st.st_mode) for p, st in tree(store)}
    with walq.open(store, **SMALL) as b:
        b.get_queue("a").send(b"more")
        b.get_queue("later").receive(1)
    after = {p: stat.S_IMODE(st.st_mode) for p, st in tree(store)}
    assert {p: after[p] for p in before if p in after} == {p: before[p] for p in before if p in after}
    assert all(after[p] in (0o600, 0o700) for p in set(after) - set(before))  # new files: private


@pytest.mark.skipif(not can_switch_user(), reason="a second user needs root (setuid to 65534)")
def test_another_member_of_the_group_shares_the_store_without_any_option():
    gid = grp.getgrnam("daemon").gr_gid if "daemon" in {g.gr_name for g in grp.getgrall()} else 1
    top = tempfile.mkdtemp(prefix="walq-group-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        store = os.path.join(top, "data")
        with walq.open(store, **SMALL, group=gid) as b:
            b.create_queue("a").send(b"from root")

        def member():
            os.umask(0o077)
            with walq.open(store, **SMALL) as b:
                q = b.get_queue("a")
                for i in range(40):
                    q.send(b"from member %d " % i * 10)  # rolls 4 KiB segments
                q.checkpoint()
                b.create_queue("members").send(b"new queue")
            return os.geteuid()

        assert as_nobody(member, groups=[gid]) == NOBODY
        entries = list(tree(store))
        assert any(st.st_uid == NOBODY for _, st in entries)
        for path, st in entries:
            assert st.st_gid == gid, path
            assert stat.S_IMODE(st.st_mode) == (0o2770 if stat.S_ISDIR(st.st_mode) else 0o660), path
        with walq.open(store, **SMALL) as b:  # root trusts the member's files: they are the group's
            assert len(b.get_queue("a").receive(10)) == 10
            assert [m.body for m in b.get_queue("members").receive(1)] == [b"new queue"]
        assert verify_store(store).ok
    finally:
        shutil.rmtree(top, ignore_errors=True)
