"""``walq verify`` and ``walq dump --catalog`` include topics and their subscriptions."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

import walq
from walq.tools import inspect as winspect
from walq.cli import main
from walq.topic import inspect as topic_inspect


def _store(tmp_path):
    path = tmp_path / "s"
    with walq.open(path, durability="os") as b:
        t = b.create_topic("t")
        t.subscribe(b.create_queue("q"), filter_policy={"k": ["v"]})
        t.subscribe("https://example.com/h")
        t.publish("m", attributes={"k": "v"})
        uid = b.get_topic("t")._uid
    return str(path), uid


def test_dump_catalog_lists_topics_and_subscriptions(tmp_path):
    path, _uid = _store(tmp_path)
    r = CliRunner().invoke(main, ["--data", path, "dump", "--catalog"])
    assert r.exit_code == 0
    [topic] = [json.loads(line) for line in r.output.splitlines() if json.loads(line).get("type") == "topic"]
    assert topic["topic"] == "t"
    assert [(s["protocol"], s["filter_policy"]) for s in topic["subscriptions"]] == \
        [("sqs", {"k": ["v"]}), ("https", None)]


def test_verify_reads_topic_logs_and_reports_a_damaged_publish(tmp_path):
    path, uid = _store(tmp_path)
    with walq.open(path, durability="os") as b:
        b.get_topic("t").publish("second")
    report = winspect.verify_store(path)
    assert report.ok, [p.describe() for p in report.problems]
    assert topic_inspect.verify(path) == []
    # Damage the first of two publishes (valid data follows it: damage, not a torn tail).
    d = os.path.join(path, "topics", f"{uid:016x}")
    first = next(winspect.iter_log(d))
    with open(first.path, "r+b") as f:
        f.seek(first.offset + 40)
        byte = f.read(1)
        f.seek(first.offset + 40)
        f.write(bytes([byte[0] ^ 0xFF]))
    [problem] = topic_inspect.verify(path)
    assert problem.kind == winspect.DAMAGE and problem.path == first.path and problem.offset == first.offset
    r = CliRunner().invoke(main, ["--data", path, "verify"])
    assert r.exit_code == 1 and first.path in r.output


def test_verify_notes_an_internal_queue_no_subscription_names(tmp_path):
    path, _uid = _store(tmp_path)
    with walq.open(path, durability="os") as b:
        b._create_internal_queue("~orphan", False)
    notes = [p for p in topic_inspect.verify(path) if "~orphan" in p.message]
    assert notes and notes[0].kind == winspect.NOTE
