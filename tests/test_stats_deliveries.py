"""`walq stats` lists every HTTP and handler subscription and bus target
with what the workers delivered, failed, dead-lettered and dropped, and what
waits."""

from __future__ import annotations

import json

from click.testing import CliRunner

import walq
from walq.cli import main
from walq.worker import counters
from worker_helpers import running, wait_until

SEEN = []


def remember(note):
    """A subscription handler: keeps what it gets."""
    SEEN.append(note)


def refuse(event):
    """A bus target handler that always fails."""
    raise RuntimeError("refused")


def test_stats_shows_each_delivery_target_with_its_counts(tmp_path):
    # The broker's own clock: the command opens the store with it (a fake
    # clock's messages would look years old to it, past their retention).
    broker = walq.open(tmp_path / "s", durability="os")
    SEEN.clear()
    t = broker.create_topic("news")
    sub = t.subscribe(f"{__name__}:remember")
    t.subscribe("http://127.0.0.1:9/never")  # never delivered: it waits
    bus = broker.get_bus("default")
    dl = broker.create_queue("dead")
    bus.put_rule("orders", pattern={"source": ["shop"]})
    bus.put_targets("orders", [walq.Target("h", f"{__name__}:refuse", dead_letter=dl,
                                           retry=walq.RetryPolicy.eventbridge(max_retries=0, max_age=60))])
    t.publish("one")
    t.publish("two")
    bus.put_events([{"source": "shop", "detail_type": "order", "detail": {}}])
    rule_key = "arn:aws:events:us-east-1:000000000000:rule/orders:h"
    with running(walq.Worker(broker)):
        wait_until(lambda: sub.stats().delivered == 2 and counters.read(broker, rule_key).dead_lettered == 1,
                   what="the deliveries and the dead letter")
    path = broker.path
    r = CliRunner().invoke(main, ["--data", path, "stats", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    targets = {row["source"] + " " + row["kind"]: row for row in rows if "target" in row}
    assert set(targets) == {"topic news handler", "topic news http", "rule orders handler"}
    got = targets["topic news handler"]
    assert (got["delivered"], got["failed"], got["pending"], got["target"]) == (2, 0, 0, sub.arn)
    got = targets["topic news http"]
    assert (got["delivered"], got["pending"]) == (0, 2)  # port 9 refuses; both wait for their retry
    got = targets["rule orders handler"]
    assert (got["delivered"], got["failed"], got["dead_lettered"], got["target"]) == (0, 1, 1, rule_key)
    assert {row["queue"] for row in rows if "queue" in row} == {"dead"}  # internal queues stay hidden
    table = CliRunner().invoke(main, ["--data", path, "stats"]).output
    assert "DELIVERIES OF" in table and "rule orders" in table and "topic news" in table
    assert "DELIVERIES OF" not in CliRunner().invoke(main, ["--data", path, "stats", "--prefix", "d"]).output
    broker.close()
