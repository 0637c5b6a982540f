"""A full file system, for real: each test mounts a small tmpfs (8 MiB).

A full disk raises StoreFull (an OSError saying what to do), leaves no
half-made file behind and the store consistent; a new queue needs little
space (preallocation starts at 64 KiB and grows with traffic); and log.ctl
gets its blocks before it is mapped, so a full disk is an error, not a
SIGBUS.  Mounting needs root (or a user namespace): the tests skip, saying
so, only where the mount is refused.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

import walq
from walq.tools.inspect import queue_dir, verify_store
from walq.log import Log, LogOptions


@pytest.fixture
def small_fs(tmp_path):
    """An 8 MiB tmpfs at tmp_path/fs, unmounted afterwards."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def used(path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def fill(path, leave: int = 0) -> str:
    """A file taking all but ``leave`` bytes of the file system."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        chunk = b"\xff" * 65536
        while True:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize - leave
            if free <= 0:
                break
            try:
                os.write(fd, chunk[:free])
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return filler


def leftovers(root) -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if n.endswith(".tmp")]


def test_a_new_store_and_queue_fit_in_a_small_file_system(small_fs):
    with walq.open(small_fs / "data", durability="always") as b:
        q = b.create_queue("orders")
        q.send(b"one")
        # The catalog's and the queue's first chunks, 64 KiB each, and the
        # small files: far from the 2 x 4 MiB it cost before.
        assert used(small_fs) < 1 << 20
        assert [m.body for m in q.receive(1)] == [b"one"]


def test_filling_the_disk_raises_store_full_and_leaves_the_store_consistent(small_fs):
    store = small_fs / "data"
    sent = []
    with walq.open(store, durability="always", segment_size=512 * 1024) as b:
        q = b.create_queue("big")
        filler = fill(small_fs, leave=1 << 20)
        body = os.urandom(60_000)
        with pytest.raises(walq.StoreFull) as err:
            for i in range(1000):
                q.send(b"%06d" % i + body)
                sent.append(i)
        assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
        assert "free space" in str(err.value) and "nothing was written" in str(err.value)
        assert 5 < len(sent) < 1000
        assert leftovers(store) == []
        # Free space and carry on: the same handle writes again.
        os.unlink(filler)
        q.send(b"after")
    with walq.open(store, durability="always") as b:
        q = b.get_queue("big")
        got = []
        while True:
            ms = q.receive(10)
            if not ms:
                break
            got += [m.body[:6] if m.body != b"after" else m.body for m in ms]
        assert got == [b"%06d" % i for i in sent] + [b"after"]
    assert verify_store(str(store)).ok


def test_a_checkpoint_on_a_full_disk_raises_store_full_and_leaves_no_tmp(small_fs):
    store = small_fs / "data"
    with walq.open(store, durability="os") as b:
        q = b.create_queue("q")
        q.send_batch([os.urandom(200) for _ in range(10)] * 1)
        fill(small_fs)
        with pytest.raises(walq.StoreFull):
            for _ in range(50):  # a checkpoint of a few KiB: the last free bytes may hold one
                q.send(os.urandom(200))
                q.checkpoint()
        assert leftovers(store) == []
        assert not [n for d, _, ns in os.walk(store) for n in ns if n.startswith("checkpoint-") and
                    os.path.getsize(os.path.join(d, n)) == 0]


def test_opening_a_log_on_a_full_disk_is_store_full_not_sigbus(small_fs):
    fill(small_fs)
    # In a child: on the old code the first store into log.ctl's map killed
    # the process with SIGBUS.
    code = textwrap.dedent(f"""
        import walq
        from walq.log import Log, LogOptions
        try:
            Log.open({str(small_fs / "log")!r}, LogOptions(durability="os"))
        except walq.StoreFull as exc:
            print("StoreFull", exc.errno)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.split() == ["StoreFull", str(errno.ENOSPC)]


def test_preallocation_grows_with_traffic_up_to_the_configured_chunk(tmp_path):
    opts = LogOptions(durability="os")
    assert [opts.chunk_at(a) for a in (64, 64 << 10, 100 << 10, 1 << 20, 3 << 20, 64 << 20)] == [
        64 << 10, 64 << 10, 100 << 10, 1 << 20, 3 << 20, 4 << 20]
    with Log.open(tmp_path / "log", opts) as log:
        seg = os.path.join(log.path, "00000000000000000000.seg")
        assert os.stat(seg).st_blocks * 512 <= 128 << 10
        for _ in range(200):
            log.append_batch([b"x" * 1000] * 50)
        # 10 MB written: blocks follow the data, at most one 4 MiB chunk ahead.
        blocks = os.stat(seg).st_blocks * 512
        assert log._load("end_off") < blocks <= log._load("end_off") + (4 << 20) + (1 << 20)


def test_a_checkpoint_removes_tmp_files_a_dead_writer_left(tmp_path):
    with walq.open(tmp_path / "data", durability="os") as b:
        q = b.create_queue("q")
        q.send(b"x")
        qdir = queue_dir(str(tmp_path / "data"), "q")
        for pos in (0, 1, 7):  # as a process killed (or out of space) mid-checkpoint leaves them
            open(os.path.join(qdir, f"checkpoint-{pos:020d}.tmp"), "wb").close()
        q.checkpoint()
        assert leftovers(tmp_path) == []
