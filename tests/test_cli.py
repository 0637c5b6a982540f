"""The walq command, driven through click's runner and as real subprocesses.

Exit codes are part of the interface: 0 ok, 1 damage / invariant violated,
2 usage error, 3 queue does not exist, 4 any other walq error.  Bad input
gets one line on stderr and never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import walq
from walq.cli import main


class Cli:
    """Runs ``walq --data STORE ...`` in-process."""

    def __init__(self, store):
        self.store = str(store)

    def __call__(self, *args, input=None, env=None, data=True):
        argv = (["--data", self.store] if data else []) + [str(a) for a in args]
        r = CliRunner().invoke(main, argv, input=input, env=env)
        assert "Traceback" not in r.output, r.output
        return r

    def ok(self, *args, **kw):
        r = self(*args, **kw)
        assert r.exit_code == 0, (args, r.output)
        return r

    def json_lines(self, *args, **kw) -> list[dict]:
        return [json.loads(line) for line in self.ok(*args, **kw).stdout.splitlines()]


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path / "store")


def walq_process(*args, input=None, env=None):
    """``python -m walq ARGS`` as a real process."""
    return subprocess.run([sys.executable, "-m", "walq", *map(str, args)], input=input, capture_output=True,
                          text=True, timeout=120, env=env)


def assert_one_line_error(r, code: int, text: str):
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and text in lines[-1], r.stderr


# -- help and exit codes -------------------------------------------------------------------


def test_help_lists_commands_and_exit_codes(cli):
    r = cli.ok("--help", data=False)
    for command in ("queue", "send", "receive", "ack", "purge", "stats", "compact", "dlq", "verify", "dump",
                    "demo", "crash-bench", "bench"):
        assert command in r.output
    for line in ("0    success", "1    damage found", "2    usage error", "3    the named queue does not exist",
                 "4    any other error", "141  standard output closed early"):
        assert line in r.output


def test_every_store_subcommand_has_help_and_takes_data(cli):
    for cmd in (["queue", "create"], ["queue", "list"], ["queue", "delete"], ["queue", "attributes"],
                ["queue", "set"], ["send"], ["receive"], ["ack"], ["purge"], ["stats"], ["compact"], ["dlq", "sources"],
                ["dlq", "redrive"], ["verify"], ["dump"], ["demo"], ["bench"]):
        r = cli.ok(*cmd, "--help", data=False)
        assert "--data DIR" in r.output, cmd
    r = cli.ok("crash-bench", "--help", data=False)  # crashes a store of its own, never --data's
    assert "--data DIR" not in r.output and "--dir" in r.output


# -- queues --------------------------------------------------------------------------------------


def test_queue_create_list_attributes_set_delete(cli):
    attrs = cli.json_lines("queue", "create", "orders", "--visibility-timeout", "45", "--delay", "2")[0]
    assert attrs["name"] == "orders" and attrs["visibility_timeout"] == 45 and attrs["delay"] == 2
    assert attrs["fifo"] is False
    cli.ok("queue", "create", "orders-dlq")
    fifo = cli.json_lines("queue", "create", "pay.fifo", "--content-based-dedup", "--dedup-scope", "group")[0]
    assert fifo["fifo"] is True and fifo["content_based_dedup"] is True and fifo["dedup_scope"] == "group"
    assert cli.ok("queue", "list").stdout.split() == ["orders", "orders-dlq", "pay.fifo"]
    assert cli.ok("queue", "list", "--prefix", "ord").stdout.split() == ["orders", "orders-dlq"]
    new = cli.json_lines("queue", "set", "orders", "visibility-timeout=60", "dead_letter=orders-dlq:4",
                         "receive_wait=1")[0]
    assert new["visibility_timeout"] == 60 and new["receive_wait"] == 1
    assert new["dead_letter"] == {"queue": "orders-dlq", "max_receives": 4}
    assert cli.json_lines("queue", "attributes", "orders")[0] == new
    assert cli.json_lines("queue", "set", "orders", "dead_letter=none")[0]["dead_letter"] is None
    assert "deleted queue orders" in cli.ok("queue", "delete", "orders").stdout
    assert cli.ok("queue", "list").stdout.split() == ["orders-dlq", "pay.fifo"]


def test_queue_create_is_idempotent_but_refuses_different_attributes(cli):
    cli.ok("queue", "create", "orders")
    cli.ok("queue", "create", "orders")
    r = cli("queue", "create", "orders", "--visibility-timeout", "5")
    assert_one_line_error(r, 4, "exists with different attributes: visibility_timeout is 30, not 5")


def test_queue_create_with_dead_letter(cli):
    cli.ok("queue", "create", "dlq")
    attrs = cli.json_lines("queue", "create", "work", "--dead-letter", "dlq", "--max-receives", "2")[0]
    assert attrs["dead_letter"] == {"queue": "dlq", "max_receives": 2}
    assert_one_line_error(cli("queue", "create", "other", "--dead-letter", "missing"), 3, "'missing' does not exist")
    assert cli("queue", "create", "x", "--max-receives", "2").exit_code == 2


def test_bad_queue_attributes_are_one_line_errors(cli):
    assert_one_line_error(cli("queue", "create", "bad name!"), 2, "invalid queue name")
    assert_one_line_error(cli("queue", "create", "q", "--retention", "5"), 2, "--retention must be an integer")
    cli.ok("queue", "create", "q")
    assert_one_line_error(cli("queue", "set", "q", "visibility_timeout=99999"), 2,
                          "visibility_timeout must be an integer 0-43200")
    assert_one_line_error(cli("queue", "set", "q", "colour=blue"), 2, "unknown queue attribute 'colour'")
    assert_one_line_error(cli("queue", "set", "q", "fifo=1"), 2, "cannot be changed")
    assert_one_line_error(cli("queue", "set", "q", "delay"), 2, "is not KEY=VALUE")
    assert_one_line_error(cli("queue", "set", "q", "delay=soon"), 2, "is not an integer")
    assert_one_line_error(cli("queue", "set", "q", "dead_letter=q2"), 2, "QUEUE:MAX_RECEIVES")
    assert cli.json_lines("queue", "attributes", "q")[0]["visibility_timeout"] == 30  # nothing changed


def test_unknown_queue_exits_3_for_every_command(cli):
    cli.ok("queue", "create", "orders")
    for args in (["send", "nope", "x"], ["receive", "nope"], ["purge", "nope"], ["ack", "nope", "r"],
                 ["queue", "attributes", "nope"], ["queue", "delete", "nope"], ["queue", "set", "nope", "delay=1"],
                 ["dlq", "sources", "nope"], ["dlq", "redrive", "nope"], ["dump", "nope"]):
        assert_one_line_error(cli(*args), 3, "queue 'nope' does not exist")


def test_a_missing_store_is_not_created_by_reading_commands(cli, tmp_path):
    missing = Cli(tmp_path / "typo")
    assert_one_line_error(missing("stats"), 4, "no walq store at")
    assert_one_line_error(missing("queue", "list"), 4, "no walq store at")
    assert_one_line_error(missing("send", "orders", "x"), 3, "queue 'orders' does not exist (no walq store")
    assert not (tmp_path / "typo").exists()


def test_data_comes_from_the_option_either_side_or_the_environment(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    runner = CliRunner()
    assert runner.invoke(main, ["queue", "create", "qa"], env={"WALQ_DATA": str(a)}).exit_code == 0
    assert runner.invoke(main, ["queue", "create", "qb", "--data", str(b)], env={"WALQ_DATA": str(a)}).exit_code == 0
    assert runner.invoke(main, ["queue", "list"], env={"WALQ_DATA": str(a)}).stdout.split() == ["qa"]
    assert runner.invoke(main, ["--data", str(b), "queue", "list"]).stdout.split() == ["qb"]


# -- messages -----------------------------------------------------------------------------------


def test_send_receive_ack_round_trip_with_attributes(cli):
    cli.ok("queue", "create", "orders")
    [sent] = cli.json_lines("send", "orders", "espresso", "--attr", "table:Number=4", "--attr", "size=double",
                            "--attr", "blob:Binary=AAE=", "--attr", "price:number=2.5")
    [m] = cli.json_lines("receive", "orders", "--max", "10", "--wait", "0.5")
    assert m["message_id"] == sent["message_id"] and m["body"] == "espresso"
    assert m["attributes"] == {"table": 4, "size": "double", "blob": {"Binary": "AAE="}, "price": 2.5}
    assert m["receive_count"] == 1 and m["receipt"]
    assert cli.json_lines("receive", "orders") == []  # leased
    assert "acknowledged 1 message" in cli.ok("ack", "orders", m["receipt"]).stdout
    with walq.open(cli.store) as b:
        assert b.get_queue("orders").stats().total == 0


def test_send_reads_the_body_from_stdin(cli):
    cli.ok("queue", "create", "orders")
    cli.ok("send", "orders", input="from stdin\nsecond line\n")
    cli.ok("send", "orders", "-", input=b"\xff\x00binary")
    msgs = cli.json_lines("receive", "orders", "--max", "10")
    assert msgs[0]["body"] == "from stdin\nsecond line"  # one trailing newline dropped
    assert msgs[1]["body_base64"] == "/wBiaW5hcnk="


def test_send_lines_sends_one_message_per_line(cli):
    cli.ok("queue", "create", "orders")
    sent = cli.json_lines("send", "orders", "--lines", input="a\nb\n\nc\n")
    assert len(sent) == 3
    bodies = [m["body"] for m in cli.json_lines("receive", "orders", "--max", "10", "--ack")]
    assert bodies == ["a", "b", "c"]
    assert cli.json_lines("stats", "--json")[0]["total"] == 0


def test_send_fifo_with_group_and_dedup_id(cli):
    cli.ok("queue", "create", "pay.fifo")
    [a] = cli.json_lines("send", "pay.fifo", "pay 5", "--group", "alice", "--dedup-id", "p1")
    [b] = cli.json_lines("send", "pay.fifo", "pay 5", "--group", "alice", "--dedup-id", "p1")
    assert a["sequence"] >= 0 and b["duplicate"] is True and b["message_id"] == a["message_id"]
    [m] = cli.json_lines("receive", "pay.fifo", "--max", "10")
    assert m["group"] == "alice" and m["dedup_id"] == "p1" and m["sequence"] == a["sequence"]
    assert_one_line_error(cli("send", "pay.fifo", "x"), 2, "FIFO queues need a message group (--group)")


def test_send_delay_shows_in_stats(cli):
    cli.ok("queue", "create", "orders")
    cli.ok("send", "orders", "later", "--delay", "60")
    [row] = cli.json_lines("stats", "--json")
    assert row["delayed"] == 1 and row["visible"] == 0


def test_bad_messages_are_one_line_errors_and_change_nothing(cli):
    cli.ok("queue", "create", "orders")
    assert_one_line_error(cli("send", "orders", "x", "--attr", "novalue"), 2, "is not NAME=VALUE")
    assert_one_line_error(cli("send", "orders", "x", "--attr", "n:Number=many"), 2, "is not a number")
    assert_one_line_error(cli("send", "orders", "x", "--attr", "b:Binary=!!"), 2, "is not base64")
    assert_one_line_error(cli("send", "orders", "x", "--attr", "t:Colour=red"), 2, "String, Number or Binary")
    assert_one_line_error(cli("send", "orders", "x", "--attr", "AWS.trace=1"), 2, "reserved prefix")
    assert_one_line_error(cli("send", "orders", "", ), 2, "must not be empty")
    assert_one_line_error(cli("send", "orders", "x", "--delay", "901"), 2, "--delay must be an integer 0-900")
    assert_one_line_error(cli("send", "orders", "x", "--dedup-id", "d"), 2, "--dedup-id applies to FIFO queues only")
    assert_one_line_error(cli("receive", "orders", "--max", "0"), 2, "--max must be an integer 1-1000")
    assert_one_line_error(cli("receive", "orders", "--wait", "30"), 2, "'--wait': 30.0 is not in the range")
    assert_one_line_error(cli("ack", "orders", "not-a-receipt"), 2, "malformed receipt")
    assert cli.json_lines("stats", "--json")[0]["total"] == 0


def test_ack_reads_receipts_from_stdin(cli):
    cli.ok("queue", "create", "orders")
    for i in range(3):
        cli.ok("send", "orders", f"m{i}")
    msgs = cli.json_lines("receive", "orders", "--max", "10")
    cli.ok("ack", "orders", input="".join(m["receipt"] + "\n" for m in msgs))
    assert cli.json_lines("stats", "--json")[0]["total"] == 0


def test_purge_drops_everything(cli):
    cli.ok("queue", "create", "orders")
    for i in range(3):
        cli.ok("send", "orders", f"m{i}")
    cli.ok("receive", "orders")
    assert "purged queue orders" in cli.ok("purge", "orders").stdout
    assert cli.json_lines("stats", "--json")[0]["total"] == 0


# -- stats ------------------------------------------------------------------------------------------


def test_stats_table_shows_every_queue(cli):
    cli.ok("queue", "create", "orders")
    cli.ok("queue", "create", "pay.fifo")
    for i in range(3):
        cli.ok("send", "orders", f"m{i}")
    cli.ok("receive", "orders")
    out = cli.ok("stats").stdout.splitlines()
    assert out[0].split() == ["QUEUE", "TYPE", "VISIBLE", "IN", "FLIGHT", "DELAYED", "OLDEST", "DISK"]
    orders = out[1].split()
    assert orders[:5] == ["orders", "standard", "2", "1", "0"] and orders[-1] in ("KiB", "MiB")
    assert out[2].split()[:5] == ["pay.fifo", "fifo", "0", "0", "0"]


def test_stats_watch_refreshes(cli):
    cli.ok("queue", "create", "orders")
    r = cli.ok("stats", "--watch", "--interval", "0.01", "--count", "3")
    assert r.stdout.count("walq stats") == 3 and r.stdout.count("orders") == 3
    assert cli("stats", "--interval", "0").exit_code == 2


def test_stats_of_a_store_without_queues(cli):
    cli.ok("queue", "create", "orders")
    cli.ok("queue", "delete", "orders")
    assert cli.ok("stats").stdout.strip() == "(no queues)"


def test_compact_checkpoints_every_queue_and_shows_disk_use(cli):
    cli.ok("queue", "create", "orders")
    cli.ok("queue", "create", "other")
    cli.ok("send", "orders", "--lines", input="".join(f"m{i}\n" for i in range(50)))
    out = cli.ok("compact").stdout.splitlines()
    assert out[0].split() == ["QUEUE", "DISK", "BEFORE", "DISK", "AFTER"]
    assert [ln.split()[0] for ln in out[1:]] == ["orders", "other"]
    assert len(cli.ok("compact", "orders").stdout.splitlines()) == 2
    assert_one_line_error(cli("compact", "orders", "nope"), 3, "queue 'nope' does not exist")
    assert len(cli.json_lines("receive", "orders", "--max", "100")) == 50  # nothing lost


# -- dead letters -------------------------------------------------------------------------------------


def test_dlq_sources_and_redrive(cli):
    cli.ok("queue", "create", "dlq")
    cli.ok("queue", "create", "work", "--dead-letter", "dlq", "--max-receives", "1")
    cli.ok("queue", "create", "other", "--dead-letter", "dlq")
    assert cli.ok("dlq", "sources", "dlq").stdout.split() == ["other", "work"]
    cli.ok("send", "work", "poison")
    cli.ok("receive", "work", "--visibility-timeout", "0")
    assert cli.json_lines("receive", "work", "--visibility-timeout", "0") == []  # moved
    [row] = [r for r in cli.json_lines("stats", "--json") if r["queue"] == "dlq"]
    assert row["visible"] == 1
    assert "moved 1 message" in cli.ok("dlq", "redrive", "dlq").stdout
    [m] = cli.json_lines("receive", "work")
    assert m["body"] == "poison" and m["receive_count"] == 1
    assert "moved 0 messages" in cli.ok("dlq", "redrive", "dlq", "--to", "other").stdout


# -- demo and bench -------------------------------------------------------------------------------------


def test_demo_runs_the_coffee_shop_and_ends_with_one_dead_letter(cli):
    cli.ok("queue", "create", "mine")  # the demo leaves other queues alone
    r = cli.ok("demo", "--orders", "6", "--baristas", "2", "--seed", "3")
    out = r.stdout
    assert "order-taker: order #6" in out
    assert out.count("closing time") == 2
    assert "dead-letter queue: order #3 (unicorn frappuccino" in out
    assert "5 drinks made, 1 order in the dead-letter queue" in out
    # A barista is killed with SIGKILL holding an order; another makes it.
    assert "*** kill -9 barista" in out and "*** barista 3 starts in the killed barista's place" in out
    assert "which the killed barista held, was made after its lease ran out" in out
    assert "every one of the 6 confirmed orders was made exactly once or dead-lettered" in out
    assert "nothing lost" in out
    table = out[out.index("QUEUE"):].splitlines()
    assert table[1].split()[:5] == ["coffee-orders", "standard", "0", "0", "0"]
    assert table[2].split()[:3] == ["coffee-orders-dlq", "standard", "1"]
    assert "mine" in cli.ok("queue", "list").stdout
    # Running it again starts from fresh demo queues; --no-kill spares the baristas.
    again = cli.ok("demo", "--orders", "6", "--baristas", "1", "--no-kill").stdout
    assert "5 drinks made" in again and "kill -9" not in again


def test_bench_prints_a_table_and_json(cli, tmp_path):
    r = cli.ok("bench", "--seconds", "0.05", "--mode", "os")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("walq bench: 100-byte messages")
    rows = [ln.split()[:2] for ln in lines[2:]]
    assert rows == [["disk", "pwrite+fdatasync"], ["os", "send"], ["os", "send_batch(100)"],
                    ["os", "receive(10)+delete_batch"]]
    docs = cli.json_lines("bench", "--seconds", "0.05", "--mode", "batch", "--json")
    assert [d["operation"] for d in docs] == ["pwrite+fdatasync 128 B", "send", "send_batch(100)",
                                              "receive(10)+delete_batch"]
    assert all(d["messages_per_s"] > 0 for d in docs)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".walq-bench")]  # cleaned up


# -- as real processes ----------------------------------------------------------------------------------


def test_walq_as_a_process_round_trip(tmp_path):
    data = str(tmp_path / "store")
    assert walq_process("--data", data, "queue", "create", "orders").returncode == 0
    p = walq_process("--data", data, "send", "orders", "--attr", "table:Number=7", input="hello from a pipe")
    assert p.returncode == 0, p.stderr
    sent = json.loads(p.stdout)
    p = walq_process("--data", data, "receive", "orders", "--max", "5", "--ack")
    [m] = [json.loads(line) for line in p.stdout.splitlines()]
    assert m["message_id"] == sent["message_id"] and m["attributes"] == {"table": 7}
    p = walq_process("--data", data, "stats", "--json")
    assert json.loads(p.stdout)["total"] == 0


def test_walq_process_bad_input_is_one_line_with_the_right_exit_code(tmp_path):
    data = str(tmp_path / "store")
    walq_process("--data", data, "queue", "create", "orders")
    for args, code, text in (
        (["send", "nope", "x"], 3, "Error: queue 'nope' does not exist"),
        (["send", "orders", "x", "--attr", "oops"], 2, "is not NAME=VALUE"),
        (["send", "orders", "x", "--attr", "aws.x=1"], 2, "Error: message attribute name 'aws.x' uses a reserved"),
        (["queue", "set", "orders", "retention=1"], 2, "Error: retention must be an integer 60-1209600"),
        (["queue", "create", "orders", "--delay", "3"], 4, "Error: queue 'orders' exists with different attributes"),
        (["frobnicate"], 2, "No such command"),
    ):
        p = walq_process("--data", data, *args)
        assert p.returncode == code, (args, p.stderr)
        assert text in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert p.stdout == ""


def test_walq_process_help_and_version():
    p = walq_process("--help")
    assert p.returncode == 0 and "Exit codes:" in p.stdout
    p = walq_process("--version")
    assert p.returncode == 0 and walq.__version__ in p.stdout
