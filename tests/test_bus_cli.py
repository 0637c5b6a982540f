"""``walq events ...``: the commands, their output, and the exit codes (2
usage, 3 does not exist, 4 other), with errors that name the flags."""

from __future__ import annotations

import json

from click.testing import CliRunner

import walq
from walq.cli import main


def run(store, *argv, input=None):
    return CliRunner().invoke(main, ["--data", str(store), *argv], input=input)


def test_rule_target_put_and_list(tmp_path):
    store = tmp_path / "s"
    assert run(store, "queue", "create", "q").exit_code == 0
    r = run(store, "events", "put-rule", "r", "--pattern", '{"source": ["app"]}')
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["arn"] == "arn:aws:events:us-east-1:000000000000:rule/r"
    r = run(store, "events", "add-target", "r", "t1", "--queue", "q", "--input-path", "$.detail")
    assert r.exit_code == 0, r.output
    r = run(store, "events", "put", "--source", "app", "--detail-type", "x", "--detail", '{"n": 1}')
    assert r.exit_code == 0, r.output and "event_id" in json.loads(r.output)
    assert run(store, "events", "put", "--source", "other", "--detail-type", "x").exit_code == 0
    with walq.open(store, durability="os") as b:
        assert [json.loads(m.body) for m in b.get_queue("q").receive(10)] == [{"n": 1}]
    rules = [json.loads(line) for line in run(store, "events", "rules").output.splitlines()]
    assert [(x["name"], x["state"], x["targets"]) for x in rules] == [("r", "ENABLED", 1)]
    assert run(store, "events", "disable-rule", "r").exit_code == 0
    assert json.loads(run(store, "events", "rules").output)["state"] == "DISABLED"
    (t,) = [json.loads(line) for line in run(store, "events", "targets", "r").output.splitlines()]
    assert t["id"] == "t1" and t["queue"] == "q"
    assert run(store, "events", "remove-target", "r", "t1").exit_code == 0
    assert run(store, "events", "delete-rule", "r").exit_code == 0
    assert run(store, "events", "rules").output == ""
    assert run(store, "events", "create-bus", "orders").exit_code == 0
    assert run(store, "events", "buses").output.split() == ["default", "orders"]
    assert run(store, "events", "delete-bus", "orders").exit_code == 0


def test_test_pattern(tmp_path):
    r = run(tmp_path, "events", "test-pattern", "--pattern", '{"source": [{"prefix": "ap"}]}',
            "--event", '{"source": "app"}')
    assert r.exit_code == 0 and r.output.strip() == "true"
    r = run(tmp_path, "events", "test-pattern", "--pattern", '{"source": "app"}', "--event", '{"source": "app"}')
    assert r.exit_code == 4 and "--pattern" in r.output


def test_errors_name_the_flags_and_use_the_exit_codes(tmp_path):
    store = tmp_path / "s"
    r = run(store, "events", "put-rule", "r", "--pattern", "{nope")
    assert r.exit_code == 2 and "--pattern" in r.output
    assert run(store, "events", "put-rule", "r", "--pattern", '{"source": ["a"]}').exit_code == 0
    r = run(store, "events", "add-target", "r", "t", "--queue", "missing")
    assert r.exit_code == 3 and "missing" in r.output
    r = run(store, "events", "add-target", "r", "t")
    assert r.exit_code == 2 and "--queue" in r.output
    assert run(store, "queue", "create", "q").exit_code == 0
    r = run(store, "events", "add-target", "r", "t", "--queue", "q", "--max-retries", "999")
    assert r.exit_code == 2 and "--max-retries" in r.output
    r = run(store, "events", "add-target", "nope", "t", "--queue", "q")
    assert r.exit_code == 3 and "nope" in r.output
    r = run(store, "events", "rules", "--bus", "ghost")
    assert r.exit_code == 3 and "ghost" in r.output
    r = run(store, "events", "add-target", "r", "t", "--url", "ftp://x")
    assert r.exit_code == 4 and "--url" in r.output
