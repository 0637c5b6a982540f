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


def lines(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_put_rule_with_a_schedule_shows_it_in_rules(tmp_path):
    store = tmp_path / "s"
    (r,) = lines(run(store, "events", "put-rule", "tick", "--schedule", "rate(5 minutes)"))
    assert (r["name"], r["schedule"], r["pattern"]) == ("tick", "rate(5 minutes)", None)
    lines(run(store, "events", "put-rule", "both", "--schedule", "cron(0 12 * * ? *)",
              "--pattern", '{"source": ["a"]}'))
    got = {x["name"]: (x["schedule"], x["pattern"]) for x in lines(run(store, "events", "rules"))}
    assert got == {"both": ("cron(0 12 * * ? *)", {"source": ["a"]}), "tick": ("rate(5 minutes)", None)}
    with walq.open(store, durability="os") as b:
        assert b.get_bus("default").describe_rule("tick").schedule == "rate(5 minutes)"


def test_put_rule_refusals_name_the_flag_and_write_nothing(tmp_path):
    fresh = tmp_path / "fresh"
    r = run(fresh, "events", "put-rule", "r")
    assert r.exit_code == 2 and "--pattern" in r.output and "--schedule" in r.output
    r = run(fresh, "events", "put-rule", "r", "--schedule", "rate(1 minutes)")
    assert r.exit_code == 4 and "--schedule" in r.output and "singular" in r.output
    r = run(fresh, "events", "put-rule", "r", "--schedule", "every day")
    assert r.exit_code == 4 and "--schedule" in r.output
    r = run(fresh, "events", "put-rule", "r", "--pattern", '{"source": "a"}')
    assert r.exit_code == 4 and "--pattern" in r.output
    assert not fresh.exists()  # refused before the store was made
    store = tmp_path / "s"
    assert run(store, "events", "create-bus", "orders").exit_code == 0
    r = run(store, "events", "put-rule", "r", "--schedule", "rate(1 minute)", "--bus", "orders")
    assert r.exit_code == 4 and "--schedule" in r.output and "default bus" in r.output
    r = run(store, "events", "put-rule", "r", "--schedule", "rate(1 minute)", "--bus", "ghost")
    assert r.exit_code == 3 and "ghost" in r.output
    assert run(store, "events", "rules", "--bus", "orders").output == ""
    assert run(store, "events", "rules").output == ""


def test_create_archive_and_list_archives(tmp_path):
    store = tmp_path / "s"
    (a,) = lines(run(store, "events", "create-archive", "keep", "--pattern", '{"source": ["shop"]}',
                     "--retention-days", "7"))
    assert a == {"name": "keep", "arn": "arn:aws:events:us-east-1:000000000000:archive/keep", "bus": "default",
                 "pattern": {"source": ["shop"]}, "retention_days": 7}
    lines(run(store, "events", "create-archive", "all"))
    assert [(x["name"], x["pattern"], x["retention_days"]) for x in lines(run(store, "events", "archives"))] == [
        ("all", None, 0), ("keep", {"source": ["shop"]}, 7)]
    assert run(store, "events", "create-bus", "orders").exit_code == 0
    (o,) = lines(run(store, "events", "create-archive", "o", "--bus", "orders"))
    assert o["bus"] == "orders"
    assert [x["name"] for x in lines(run(store, "events", "archives", "--bus", "orders"))] == ["o"]


def test_create_archive_refusals_use_the_exit_codes_and_write_nothing(tmp_path):
    fresh = tmp_path / "fresh"
    r = run(fresh, "events", "create-archive", "a", "--pattern", "{nope")
    assert r.exit_code == 2 and "--pattern" in r.output
    r = run(fresh, "events", "create-archive", "a", "--pattern", '{"source": "shop"}')
    assert r.exit_code == 4 and "--pattern" in r.output
    r = run(fresh, "events", "create-archive", "a", "--retention-days", "-1")
    assert r.exit_code == 2 and "--retention-days" in r.output
    r = run(fresh, "events", "archives")
    assert r.exit_code == 4 and "no walq store" in r.output
    assert not fresh.exists()
    store = tmp_path / "s"
    lines(run(store, "events", "create-archive", "a", "--retention-days", "1"))
    r = run(store, "events", "create-archive", "a")
    assert r.exit_code == 4 and "already exists" in r.output
    r = run(store, "events", "create-archive", "b", "--bus", "ghost")
    assert r.exit_code == 3 and "ghost" in r.output
    r = run(store, "events", "create-archive", "bad name!")
    assert r.exit_code == 4 and "'bad name!'" in r.output
    assert [(x["name"], x["retention_days"]) for x in lines(run(store, "events", "archives"))] == [("a", 1)]


def replay_store(tmp_path):
    """A store with queue q, rule r (source s) -> q, archive all, and events n=1..6 at hours 1..6 of
    2026-01-01 UTC, drained from q."""
    import datetime as dt

    store = tmp_path / "s"
    with walq.open(store, durability="os") as b:
        bus = b.get_bus("default")
        q = b.create_queue("q")
        bus.put_rule("r", pattern={"source": ["s"]})
        bus.put_rule("other", pattern={"source": ["s"]})
        bus.put_targets("r", [walq.Target("q", q)])
        bus.create_archive("all")
        bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": h},
                         "time": dt.datetime(2026, 1, 1, h, tzinfo=dt.timezone.utc)} for h in range(1, 7)])
        assert len(q.receive(10, visibility_timeout=600)) == 6
        q.purge()
    return store


def run_replays(store) -> list[dict]:
    """Runs every replay to its end as a worker would; returns what q got."""
    from walq.bus.archive import run_replays as advance

    with walq.open(store, durability="os") as b:
        while advance(b._bus_service()):
            pass
        q, out = b.get_queue("q"), []
        while got := q.receive(10, visibility_timeout=600):
            out += [json.loads(m.body) for m in got]
            q.delete_batch([m.receipt for m in got])
        return out


def test_start_replay_describe_and_list(tmp_path):
    store = replay_store(tmp_path)
    (r,) = lines(run(store, "events", "start-replay", "again", "--archive", "all",
                     "--start", "2026-01-01T02:00:00Z", "--end", "1767243600"))  # 05:00Z
    assert r == {"name": "again", "arn": "arn:aws:events:us-east-1:000000000000:replay/again", "state": "RUNNING",
                 "bus": "default", "archive": "all", "start": "2026-01-01T02:00:00Z", "end": "2026-01-01T05:00:00Z",
                 "rules": None}
    (d,) = lines(run(store, "events", "describe-replay", "again"))
    assert d == r
    got = run_replays(store)
    assert sorted(e["detail"]["n"] for e in got) == [2, 3, 4] and {e["replay-name"] for e in got} == {"again"}
    (d,) = lines(run(store, "events", "describe-replay", "again"))
    assert d["state"] == "COMPLETED"
    # A naive time is UTC; --rule limits the replay to those rules' targets.
    (r2,) = lines(run(store, "events", "start-replay", "only-other", "--archive", "all",
                      "--start", "2026-01-01T00:00:00", "--end", "2026-01-02", "--rule", "other"))
    assert (r2["start"], r2["end"], r2["rules"]) == ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", ["other"])
    assert run_replays(store) == []  # rule other has no targets
    assert [(x["name"], x["state"]) for x in lines(run(store, "events", "replays"))] == [
        ("again", "COMPLETED"), ("only-other", "COMPLETED")]
    assert run(store, "events", "create-bus", "orders").exit_code == 0
    assert lines(run(store, "events", "replays", "--bus", "orders")) == []


def test_start_replay_refusals_name_the_flags_and_write_nothing(tmp_path):
    store = replay_store(tmp_path)
    ok = ["--archive", "all", "--start", "2026-01-01", "--end", "2026-01-02"]
    r = run(store, "events", "start-replay", "x", "--archive", "nope", "--start", "0", "--end", "10")
    assert r.exit_code == 3 and "--archive" in r.output and "nope" in r.output
    r = run(store, "events", "start-replay", "x", "--archive", "all", "--start", "yesterday", "--end", "10")
    assert r.exit_code == 2 and "--start" in r.output
    r = run(store, "events", "start-replay", "x", "--archive", "all", "--start", "0", "--end", "inf")
    assert r.exit_code == 2 and "--end" in r.output
    r = run(store, "events", "start-replay", "x", "--archive", "all", "--start", "2026-01-02", "--end", "2026-01-01")
    assert r.exit_code == 2 and "--end" in r.output and "--start" in r.output
    r = run(store, "events", "start-replay", "x", "--archive", "all", "--start", "0")
    assert r.exit_code == 2 and "--end" in r.output
    r = run(store, "events", "start-replay", "x", "--start", "0", "--end", "10")
    assert r.exit_code == 2 and "--archive" in r.output
    r = run(store, "events", "start-replay", "x", *ok, "--rule", "ghost")
    assert r.exit_code == 3 and "ghost" in r.output
    r = run(store, "events", "start-replay", "x", *ok, "--bus", "ghost")
    assert r.exit_code == 3 and "ghost" in r.output
    assert lines(run(store, "events", "replays")) == []  # none of those wrote anything
    assert run(store, "events", "start-replay", "x", *ok).exit_code == 0
    r = run(store, "events", "start-replay", "x", *ok)
    assert r.exit_code == 4 and "already exists" in r.output
    r = run(store, "events", "describe-replay", "nope")
    assert r.exit_code == 3 and "nope" in r.output
    assert run(store, "events", "create-bus", "orders").exit_code == 0
    r = run(store, "events", "describe-replay", "x", "--bus", "orders")
    assert r.exit_code == 3 and "orders" in r.output
    assert [x["name"] for x in lines(run(store, "events", "replays"))] == ["x"]
