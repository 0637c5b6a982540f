"""``walq topic ...``: the commands, their output, and the exit codes the
README lists (2 usage, 3 does not exist, 4 other), with errors that name the
command's own flags."""

from __future__ import annotations

import json

from click.testing import CliRunner

import walq
from walq.cli import main


def run(store, *argv, input=None):
    return CliRunner().invoke(main, ["--data", str(store), *argv], input=input)


def test_create_subscribe_publish_and_list(tmp_path):
    store = tmp_path / "s"
    r = run(store, "topic", "create", "t")
    assert r.exit_code == 0 and json.loads(r.output)["arn"] == "arn:aws:sns:us-east-1:000000000000:t"
    assert run(store, "queue", "create", "q").exit_code == 0
    r = run(store, "topic", "subscribe", "t", "--queue", "q", "--raw", "--filter-policy", '{"k": ["v"]}')
    assert r.exit_code == 0, r.output
    sub = json.loads(r.output)
    assert sub["protocol"] == "sqs" and sub["filter_policy"] == {"k": ["v"]}
    assert run(store, "topic", "publish", "t", "hello", "--attr", "k=v").exit_code == 0
    assert run(store, "topic", "publish", "t", "other", "--attr", "k=w").exit_code == 0
    r = run(store, "topic", "publish", "t", input="from stdin\n")
    assert r.exit_code == 0
    with walq.open(store, durability="os") as b:
        got = [m.text for m in b.get_queue("q").receive(10)]
    assert got == ["hello"]
    r = run(store, "topic", "subscriptions", "t")
    assert [json.loads(line)["subscription_arn"] for line in r.output.splitlines()] == [sub["subscription_arn"]]
    assert run(store, "topic", "list").output.split() == ["t"]
    assert run(store, "topic", "unsubscribe", sub["subscription_arn"]).exit_code == 0
    assert run(store, "topic", "subscriptions", "t").output == ""
    assert run(store, "topic", "delete", "t").exit_code == 0
    assert run(store, "topic", "list").output == ""


def test_fifo_publish_prints_the_sequence(tmp_path):
    store = tmp_path / "s"
    assert run(store, "topic", "create", "t.fifo", "--fifo", "--content-based-dedup").exit_code == 0
    r = run(store, "topic", "publish", "t.fifo", "m", "--group", "g")
    assert r.exit_code == 0 and "sequence" in json.loads(r.output)
    r = run(store, "topic", "publish", "t.fifo", "m")
    assert r.exit_code == 2 and "--group" in r.output


def test_exit_codes_and_errors_name_the_flags(tmp_path):
    store = tmp_path / "s"
    run(store, "topic", "create", "t")
    r = run(store, "topic", "publish", "missing", "x")
    assert r.exit_code == 3 and "missing" in r.output
    r = run(store, "topic", "subscribe", "t")
    assert r.exit_code == 2 and "--queue" in r.output and "--url" in r.output and "--handler" in r.output
    r = run(store, "topic", "subscribe", "t", "--url", "http://x", "--filter-policy", "{nope")
    assert r.exit_code == 2 and "--filter-policy" in r.output
    r = run(store, "topic", "subscribe", "t", "--url", "http://x", "--filter-policy", '{"a": 1}')
    assert r.exit_code == 4 and "--filter-policy" in r.output
    r = run(store, "topic", "subscribe", "t", "--url", "gopher://x")
    assert r.exit_code == 4 and "--url" in r.output
    r = run(store, "topic", "subscribe", "t", "--queue", "nope")
    assert r.exit_code == 3
    r = run(store, "topic", "create", "plain", "--fifo")
    assert r.exit_code == 2 and "--fifo" in r.output
    r = run(store, "topic", "create", "bad name")
    assert r.exit_code == 4
    r = run(store, "topic", "unsubscribe", "not-an-arn")
    assert r.exit_code == 2 and "SUBSCRIPTION_ARN" in r.output
    r = run(store, "topic", "publish", "t", "x", "--dedup-id", "d")
    assert r.exit_code == 2 and "--dedup-id" in r.output
    r = run(tmp_path / "nowhere", "topic", "list")
    assert r.exit_code == 4 and "no walq store" in r.output
