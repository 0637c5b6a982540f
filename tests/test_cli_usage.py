"""The walq command at the edges a new user meets: bad input names the flag
and exits 2, a closed pipe ends it quietly without losing a message,
``--follow`` keeps consuming until told to stop, stdin's trailing newline,
and crash-bench keeping away from the user's store.

Processes are watched through observable events (a line on a pipe, a
queue's state), each with a generous bound, never a sleep.
"""

from __future__ import annotations

import json
import os
import queue as stdqueue
import signal
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

import walq
from walq.cli import EXIT_PIPE, main

BOUND = 120  # seconds: generous, for a loaded machine


def run(store, *args, input=None):
    r = CliRunner().invoke(main, ["--data", str(store), *map(str, args)], input=input)
    assert "Traceback" not in r.output, r.output
    return r


def walq_argv(*args) -> list:
    return [sys.executable, "-m", "walq", *args]


def store_with(tmp_path, name="orders", bodies=()):
    store = tmp_path / "store"
    with walq.open(store) as b:
        q = b.create_queue(name)
        for body in bodies:
            q.send(body)
    return store


def totals(store, name="orders") -> int:
    with walq.open(store) as b:
        return b.get_queue(name).stats().total


class Lines:
    """Reads a process's stdout lines in a thread; ``next()`` waits for one."""

    def __init__(self, stream):
        self._q: stdqueue.Queue = stdqueue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self._q.put(line)
        self._q.put(None)

    def next(self):
        return self._q.get(timeout=BOUND)


# -- bad input: exit 2, the flag named ------------------------------------------------------


def test_out_of_range_values_are_usage_errors_naming_the_flag(tmp_path):
    store = store_with(tmp_path)
    run(store, "queue", "create", "pay.fifo")
    for args, text in (
        (["receive", "orders", "--max", "0"], "--max must be an integer 1-1000; got 0"),
        (["receive", "orders", "--max", "5000"], "--max must be an integer 1-1000"),
        (["send", "orders", "x", "--delay", "5000"], "--delay must be an integer 0-900"),
        (["send", "pay.fifo", "x"], "FIFO queues need a message group (--group)"),
        (["send", "pay.fifo", "x", "--group", "g"], "each message needs --dedup-id"),
        (["queue", "create", "other", "--visibility-timeout", "-1"], "--visibility-timeout must be an integer"),
        (["queue", "create", "other", "--dead-letter", "orders", "--max-receives", "0"],
         "--max-receives must be 1-1000"),
    ):
        r = run(store, *args)
        assert r.exit_code == 2, (args, r.output)
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: ") and text in last, (args, r.stderr)
        assert "max_messages" not in r.stderr and "group=" not in r.stderr
    assert totals(store) == 0 and "other" not in walq.open(store).list_queues()


@pytest.mark.parametrize("args", [
    ["stats", "--watch", "--interval", "nan"],
    ["stats", "--watch", "--interval", "inf"],
    ["stats", "--watch", "--interval", "0"],
    ["receive", "orders", "--wait", "nan"],
    ["receive", "orders", "--visibility-timeout", "inf"],
    ["bench", "--seconds", "nan"],
    ["bench", "--seconds", "inf"],
    ["crash-bench", "--run-time", "nan"],
])
def test_non_finite_and_out_of_range_seconds_are_refused(tmp_path, args):
    store = store_with(tmp_path)
    before = sorted(os.listdir(tmp_path))
    r = run(store, *args)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{args[-2]}'" in r.stderr
    assert sorted(os.listdir(tmp_path)) == before  # nothing made beside the store


def test_non_utf8_arguments_are_a_usage_error(tmp_path):
    store = store_with(tmp_path)
    for argv in ([b"send", b"orders", b"caf\xe9"], [b"queue", b"create", b"\xff"],
                 [b"send", b"orders", b"x", b"--attr", b"k=\xff"]):
        p = subprocess.run(walq_argv(b"--data", str(store).encode(), *argv), capture_output=True, timeout=BOUND)
        err = p.stderr.decode()
        assert p.returncode == 2, err
        assert "is not valid UTF-8" in err and "Traceback" not in err, err
    assert totals(store) == 0


def test_refused_receipts_are_a_usage_error(tmp_path):
    store = store_with(tmp_path)
    r = run(store, "ack", "orders", input=b"\xff\xfe\n")
    assert r.exit_code == 2 and "not UTF-8" in r.stderr
    r = run(store, "ack", "orders", "bad-1", "bad-2")
    assert r.exit_code == 2 and "2 of 2 receipts were refused" in r.stderr


# -- a closed pipe ----------------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly_and_acks_only_what_was_written(tmp_path):
    # Each line is bigger than a pipe's buffer, so the second line cannot be
    # written once the reader has gone: it must not be acknowledged.
    big = "x" * 200_000
    store = store_with(tmp_path, bodies=[big + "1", big + "2", big + "3"])
    p = subprocess.Popen(walq_argv("--data", str(store), "receive", "orders", "--max", "3", "--ack"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = json.loads(p.stdout.readline())
    p.stdout.close()  # | head -1
    assert p.wait(timeout=BOUND) == EXIT_PIPE
    assert p.stderr.read() == b""  # no "Broken pipe", no traceback
    assert first["body"] == big + "1"
    with walq.open(store) as b:
        s = b.get_queue("orders").stats()
    assert s.total == 2  # the one written was acked; the others come back


# -- receive --follow ---------------------------------------------------------------------------


def test_follow_prints_messages_as_they_come_and_stops_on_sigterm(tmp_path):
    store = store_with(tmp_path, bodies=["a", "b"])
    p = subprocess.Popen(walq_argv("--data", str(store), "receive", "orders", "--follow", "--ack", "--max", "10"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(p.stdout)
        got = [json.loads(lines.next())["body"] for _ in range(2)]
        with walq.open(store) as b:
            b.get_queue("orders").send("c")  # arrives while it follows
        got.append(json.loads(lines.next())["body"])
        assert sorted(got) == ["a", "b", "c"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=BOUND) == 0
        assert "Traceback" not in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert totals(store) == 0  # every printed message was acked


def test_follow_ends_on_sigint_too(tmp_path):
    store = store_with(tmp_path, bodies=["a"])
    p = subprocess.Popen(walq_argv("--data", str(store), "receive", "orders", "--follow"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(Lines(p.stdout).next())["body"] == "a"
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=BOUND) == 0
        assert "Aborted" not in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert totals(store) == 1  # no --ack: still there, leased


def test_follow_with_its_reader_gone_exits_141_and_acks_nothing(tmp_path):
    store = store_with(tmp_path, bodies=["a"])
    r, w = os.pipe()
    os.close(r)  # the reader is gone before walq starts
    try:
        p = subprocess.Popen(walq_argv("--data", str(store), "receive", "orders", "--follow", "--ack"),
                             stdout=w, stderr=subprocess.PIPE)
    finally:
        os.close(w)
    assert p.wait(timeout=BOUND) == EXIT_PIPE
    assert p.stderr.read() == b""
    assert totals(store) == 1


def test_follow_refuses_wait(tmp_path):
    store = store_with(tmp_path)
    r = run(store, "receive", "orders", "--follow", "--wait", "5")
    assert r.exit_code == 2 and "leave out --wait" in r.stderr


# -- send from standard input ----------------------------------------------------------------


def test_send_from_stdin_drops_one_trailing_newline_unless_raw(tmp_path):
    store = store_with(tmp_path)
    assert run(store, "send", "orders", input="x\n").exit_code == 0
    assert run(store, "send", "orders", input="two\n\n").exit_code == 0
    assert run(store, "send", "orders", input="crlf\r\n").exit_code == 0
    assert run(store, "send", "orders", "--raw", input="x\n").exit_code == 0
    assert run(store, "send", "orders", "arg\n").exit_code == 0  # an argument is sent as given
    with walq.open(store) as b:
        bodies = [m.body for m in b.get_queue("orders").receive(10)]
    assert sorted(bodies) == sorted([b"x", b"two\n", b"crlf", b"x\n", b"arg\n"])
    r = run(store, "send", "orders", input="\n")
    assert r.exit_code == 2 and "must not be empty" in r.stderr


def test_send_help_says_what_happens_to_the_newline(tmp_path):
    r = CliRunner().invoke(main, ["send", "--help"])
    assert "trailing newline" in r.output and "--raw" in r.output


# -- crash-bench keeps away from --data ----------------------------------------------------


def crash_bench(tmp_path, *args):
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp))
    p = subprocess.run(walq_argv("--data", str(tmp_path / "store"), "crash-bench", "--cycles", "1", "--producers",
                                 "1", "--consumers", "0", "--run-time", "0.05", "--report",
                                 str(tmp_path / "r.json"), *args),
                       capture_output=True, text=True, timeout=300, env=env)
    return p, tmp


def test_crash_bench_uses_a_temporary_store_and_never_touches_data(tmp_path):
    p, tmp = crash_bench(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not (tmp_path / "store").exists()
    assert os.listdir(tmp) == []  # its temporary store is gone too
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True


def test_crash_bench_dir_must_not_hold_other_data(tmp_path):
    mine = tmp_path / "mine"
    with walq.open(mine) as b:
        b.create_queue("precious").send("keep me")
    p, _ = crash_bench(tmp_path, "--dir", str(mine))
    assert p.returncode == 2 and "holds other data" in p.stderr
    assert totals(mine, "precious") == 1
    target = tmp_path / "crash"
    p, _ = crash_bench(tmp_path, "--dir", str(target))
    assert p.returncode == 0, p.stdout + p.stderr
    with walq.open(target) as b:
        assert b.list_queues() == ["crashbench"]  # kept, for a look
    p, _ = crash_bench(tmp_path, "--dir", str(target))  # its own store again: fine
    assert p.returncode == 0, p.stdout + p.stderr
