"""Guarantee 8: a wall-clock step (NTP, a resumed VM) never holds a message
past its own timeout, never delivers one early, and never expires one early.

Each scenario runs twice: through the default clock (``walq.open(path)``,
with ``time.time``, the boot clock and the boot id replaced in-process - the
same steps break a default clock that reads ``time.time``), and through
``walq.StoreClock``'s own seams (``wall=``, ``boot=``, ``boot_id=``).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import walq
from walq.queue.attributes import DEDUP_WINDOW_S

try:
    import walq.clock as wclock
except ImportError:  # a walq whose default clock is time.time
    wclock = None

SANE_WALL = 1_800_000_000.0  # 2027-01-15 UTC
HOUR = 3600


class Host:
    """A host's clocks, moved by hand: the wall clock (it steps), the boot
    clock (it only advances, and restarts near 0 on a reboot) and the boot id."""

    def __init__(self, wall: float = SANE_WALL):
        self.wall, self.boot, self.boots = float(wall), 1_000.0, 1

    @property
    def boot_id(self) -> str:
        return f"00000000-0000-0000-0000-{self.boots:012d}"

    def sleep(self, seconds: float) -> None:
        """Time passes: both clocks advance."""
        self.wall += seconds
        self.boot += seconds

    def step(self, seconds: float) -> None:
        """The wall clock is set: only it moves."""
        self.wall += seconds

    def reboot(self, down: float, *, wall: float | None = None) -> None:
        """Down for ``down`` seconds, then up with a new boot id; ``wall``
        sets where the wall clock reads on the way up (default: right)."""
        self.boots += 1
        self.boot = 3.0
        self.wall = self.wall + down if wall is None else float(wall)


class Store:
    """A store on a Host's clocks, opened the default way or through the seams."""

    def __init__(self, path, host: Host, mode: str, monkeypatch):
        self.path, self.host, self.mode = str(path), host, mode
        self.broker = self.clock = None
        if mode == "default":
            monkeypatch.setattr(time, "time", lambda: host.wall)
            if wclock is not None:
                monkeypatch.setattr(wclock, "_boottime", lambda: host.boot)
                monkeypatch.setattr(wclock, "_read_boot_id", lambda: host.boot_id)

    def open(self) -> walq.Broker:
        if self.mode == "default":
            self.broker = walq.open(self.path, durability="os")
        else:
            os.makedirs(self.path, exist_ok=True)
            h = self.host
            self.clock = walq.StoreClock(self.path, wall=lambda: h.wall, boot=lambda: h.boot,
                                         boot_id=h.boot_id)
            self.broker = walq.open(self.path, durability="os", clock=self.clock)
        return self.broker

    def shutdown(self) -> None:
        """A clean shutdown: the broker (and a given clock) closed."""
        if self.broker is not None:
            self.broker.close()
            self.broker = None
        if self.clock is not None:
            self.clock.close()
            self.clock = None

    def reboot(self, down: float, *, wall: float | None = None) -> walq.Broker:
        self.shutdown()
        self.host.reboot(down, wall=wall)
        return self.open()


def make_store(tmp_path, monkeypatch, mode, wall=SANE_WALL):
    return Store(tmp_path / "data", Host(wall), mode, monkeypatch)


@pytest.fixture(params=["default", "seam"])
def timed(request, tmp_path, monkeypatch):
    s = make_store(tmp_path, monkeypatch, request.param)
    yield s
    s.shutdown()


@pytest.fixture(params=["default", "seam"])
def mode(request):
    return request.param


def bodies(msgs) -> list[bytes]:
    return sorted(m.body for m in msgs)


# -- steps within a boot ---------------------------------------------------------


def test_a_lease_comes_back_after_its_timeout_when_the_wall_clock_steps_back(timed):
    q = timed.open().create_queue("q")
    q.send("m")
    assert bodies(q.receive(visibility_timeout=2)) == [b"m"]
    timed.host.step(-HOUR)
    timed.host.sleep(1)
    assert q.receive() == []  # not early
    timed.host.sleep(1)
    assert bodies(q.receive()) == [b"m"]  # 2 s of real time: the lease ran out


def test_a_delay_ends_after_its_length_when_the_wall_clock_steps_back(timed):
    q = timed.open().create_queue("q")
    q.send("m", delay=1)
    timed.host.step(-HOUR)
    assert q.receive() == []
    timed.host.sleep(1)
    assert bodies(q.receive()) == [b"m"]


def test_a_lease_is_not_redelivered_early_when_the_wall_clock_steps_forward(timed):
    q = timed.open().create_queue("q")
    q.send("m")
    assert bodies(q.receive(visibility_timeout=600)) == [b"m"]
    timed.host.step(700)
    timed.host.sleep(1)
    assert q.receive() == []
    timed.host.sleep(599)
    assert bodies(q.receive()) == [b"m"]


def test_retention_does_not_expire_messages_when_the_wall_clock_steps_forward(timed):
    q = timed.open().create_queue("q", retention=HOUR)
    q.send("m")
    timed.host.step(2 * HOUR)
    timed.host.sleep(1)
    q.checkpoint()  # what it drops is gone for good
    assert q.stats().total == 1
    timed.shutdown()
    q = timed.open().get_queue("q")
    assert q.stats().total == 1
    timed.host.sleep(HOUR)  # retention itself still works
    assert q.stats().total == 0


def test_fifo_dedup_catches_a_duplicate_after_the_wall_clock_steps_forward(timed):
    q = timed.open().create_queue("q.fifo")
    first = q.send("a", group="g", dedup_id="d")
    timed.host.step(DEDUP_WINDOW_S + 60)
    timed.host.sleep(1)
    again = q.send("a", group="g", dedup_id="d")
    assert again.duplicate and again.message_id == first.message_id
    timed.host.sleep(DEDUP_WINDOW_S)
    assert not q.send("a", group="g", dedup_id="d").duplicate  # the window still ends


def test_a_host_that_booted_in_1970_keeps_its_messages_when_ntp_sets_its_clock(tmp_path, monkeypatch, mode):
    s = make_store(tmp_path, monkeypatch, mode, wall=86_400.0)  # 1970-01-02
    try:
        q = s.open().create_queue("q")
        q.send_batch(["a", "b"])
        s.host.step(SANE_WALL - s.host.wall)  # NTP runs
        s.host.sleep(1)
        assert q.stats().total == 2
        q = s.reboot(60).get_queue("q")
        assert q.stats().total == 2
        assert bodies(q.receive(10)) == [b"a", b"b"]
    finally:
        s.shutdown()


# -- reboots -------------------------------------------------------------------------


def test_a_reboot_with_the_wall_clock_behind_does_not_move_time_back(timed):
    q = timed.open().create_queue("q")
    q.send("a")
    [a] = q.receive(visibility_timeout=600)
    timed.host.sleep(10)
    q = timed.reboot(30, wall=timed.host.wall + 30 - HOUR).get_queue("q")
    q.send("b")
    [b] = q.receive(10, visibility_timeout=900)
    assert b.body == b"b" and b.sent_at >= a.sent_at + 10
    timed.host.sleep(600)  # a's lease ends within its own 600 s, not an hour later
    assert bodies(q.receive(10)) == [b"a"]


def test_a_reboot_counts_the_downtime_by_the_wall_clock_not_the_steps_of_the_last_boot(timed):
    b = timed.open()
    q = b.create_queue("q", retention=5400)
    q.send("old")
    leased = b.create_queue("leased")
    leased.send("m")
    assert bodies(leased.receive(visibility_timeout=600)) == [b"m"]
    timed.host.step(-HOUR)  # the last boot's clock was set back; its time did not go back
    timed.host.sleep(60)
    b = timed.reboot(2 * HOUR)  # really down for two hours
    assert b.get_queue("q").stats().total == 0  # 2 h > its 1.5 h retention
    assert bodies(b.get_queue("leased").receive()) == [b"m"]


def test_a_reboot_before_ntp_set_the_clock_expires_nothing_at_once(tmp_path, monkeypatch, mode):
    s = make_store(tmp_path, monkeypatch, mode, wall=86_400.0)
    try:
        q = s.open().create_queue("q", retention=HOUR)
        q.send("m")
        s.host.sleep(100)
        q = s.reboot(60, wall=SANE_WALL).get_queue("q")  # this time the clock is right
        assert q.stats().total == 1
        s.host.sleep(HOUR)
        assert q.stats().total == 0  # from here on, time passes as it should
    finally:
        s.shutdown()


def test_store_time_survives_a_crash_through_the_clock_s_own_marks(tmp_path):
    # No close: only the marks the clock writes as it is called remain.
    host = Host()
    path = str(tmp_path)
    first = walq.StoreClock(path, wall=lambda: host.wall, boot=lambda: host.boot, boot_id=host.boot_id)
    for _ in range(130):
        host.sleep(1)
        last = first()
    host.reboot(5, wall=host.wall + 5 - HOUR)
    second = walq.StoreClock(path, wall=lambda: host.wall, boot=lambda: host.boot, boot_id=host.boot_id)
    assert second() >= last - wclock.MARK_EVERY_S


# -- the rules and the files -----------------------------------------------------------


@pytest.mark.parametrize("mark, wall_now, expected", [
    (None, SANE_WALL, SANE_WALL),                               # a new store: the wall clock
    ((SANE_WALL, SANE_WALL + 50), SANE_WALL + 150, SANE_WALL + 100),  # forward by the wall's advance
    ((SANE_WALL, SANE_WALL), SANE_WALL - HOUR, SANE_WALL),      # the wall went back: never back
    ((1e5, 1e5), SANE_WALL, 1e5),                                # marked before NTP: 0 s counted
    ((SANE_WALL, SANE_WALL), 1e5, SANE_WALL),                   # the wall is not set now
])
def test_a_new_boot_resumes_from_the_high_water_mark(mark, wall_now, expected):
    assert wclock.resume_from(mark, wall_now) == expected


def test_processes_of_one_boot_share_one_time_whatever_their_wall_clocks_read(tmp_path):
    # Four processes open a new store at once, each seeing a wall clock an
    # hour apart (a step between their starts); all must keep one time.
    data, go = str(tmp_path / "data"), str(tmp_path / "go")
    code = textwrap.dedent("""
        import os, sys, time
        step = float(sys.argv[3]) * 3600
        real = time.time
        time.time = lambda: real() + step
        import walq
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.001)
        with walq.open(sys.argv[1], durability="os") as b:
            print(repr(b._clock() - time.clock_gettime(time.CLOCK_BOOTTIME)), flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(walq.__file__)))
    procs = [subprocess.Popen([sys.executable, "-c", code, data, go, str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    open(go, "w").close()
    offsets = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        offsets.append(float(out))
    # One anchor: the offsets agree but for the microseconds between two calls.
    assert max(offsets) - min(offsets) < 60, offsets


def test_a_torn_mark_slot_leaves_the_other(tmp_path):
    good = wclock.encode_slot(SANE_WALL, SANE_WALL)
    torn = bytearray(wclock.encode_slot(SANE_WALL + 60, SANE_WALL + 60))
    torn[3] ^= 0xFF
    assert wclock.decode_slots(good + bytes(torn)) == [(SANE_WALL, SANE_WALL)]


def test_a_damaged_anchor_raises_corruption_error_naming_it(tmp_path):
    walq.StoreClock(str(tmp_path))
    path = tmp_path / wclock.ANCHOR_FILE
    data = bytearray(path.read_bytes())
    data[80] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(walq.CorruptionError) as e:
        walq.StoreClock(str(tmp_path), boot_id="another-boot")
    assert e.value.path == str(path)
    assert path.read_bytes() == bytes(data)  # left as it was, for inspection


def test_the_anchor_file_is_the_documented_layout(tmp_path):
    host = Host()
    walq.StoreClock(str(tmp_path), wall=lambda: host.wall, boot=lambda: host.boot, boot_id=host.boot_id)
    data = (tmp_path / wclock.ANCHOR_FILE).read_bytes()
    assert len(data) == 104
    magic, boot_id, epoch, boot, wall, _checksum = struct.unpack("<8s64sdddQ", data)
    assert magic == b"WALQCLK1" and boot_id.rstrip(b"\0").decode() == host.boot_id
    assert (epoch, boot, wall) == (SANE_WALL, host.boot, SANE_WALL)


@pytest.mark.parametrize("kw", [{"boot_id": ""}, {"boot_id": "x" * 65}, {"boot_id": 7},
                                {"wall": 5.0}, {"boot": "now"}])
def test_bad_store_clock_arguments_are_rejected_and_write_nothing(tmp_path, kw):
    with pytest.raises(walq.InvalidParameter):
        walq.StoreClock(str(tmp_path), **kw)
    assert os.listdir(tmp_path) == []


def test_without_a_boot_clock_the_store_clock_is_the_wall_clock(tmp_path, monkeypatch):
    monkeypatch.setattr(wclock, "_boottime", None)  # as on a platform without CLOCK_BOOTTIME
    wall = Host().wall
    clock = walq.StoreClock(str(tmp_path), wall=lambda: wall)
    assert clock() == wall and clock.boot_id is None
    clock.close()
    assert os.listdir(tmp_path) == []


def test_a_store_clock_needs_an_existing_directory(tmp_path):
    with pytest.raises(walq.InvalidParameter):
        walq.StoreClock(str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()
