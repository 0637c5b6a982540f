"""``walq verify``, ``walq dump`` and ``walq repair`` cover event buses: the
buses' catalog, each bus's log, mark and cursor, each archive's log, and
the destinations targets name."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

import walq
from helpers import flip_byte, write_at
from walq.cli import main
from walq.tools import inspect as winspect
from walq.tools.repair import repair


def _store(tmp_path, events: int = 3):
    """A store whose default bus routes to a queue, a topic, another bus and
    an HTTPS endpoint, with an archive and a replay."""
    path = str(tmp_path / "s")
    with walq.open(path, durability="os") as b:
        bus = b.get_bus("default")
        q, t, other = b.create_queue("q"), b.create_topic("t"), b.create_bus("other")
        bus.put_rule("r", pattern={"source": ["s"]}, description="all of s")
        bus.put_targets("r", [walq.Target("q", q), walq.Target("t", t), walq.Target("b", other),
                              walq.Target("h", "https://example.com/hook")])
        bus.put_rule("tick", schedule="rate(5 minutes)", enabled=False)
        arch = bus.create_archive("keep", pattern={"source": ["s"]}, retention_days=7)
        for i in range(events):
            bus.put_events([{"source": "s", "detail_type": "d", "detail": {"n": i}}])
        bus.start_replay("again", arch, 0, 4_000_000_000)
        aid = b._bus_service().catalog.archives["keep"]["uid"]
    return path, os.path.join(path, "buses", "0000000000000000"), os.path.join(path, "buses", "archives",
                                                                             f"{aid:016x}")


def _damage_first_record(directory: str):
    """Flips a payload byte of a log's first record (valid records follow:
    damage, not a torn tail)."""
    first = next(winspect.iter_log(directory))
    flip_byte(first.path, first.offset + 40)
    return first


def _damage(path):
    return [p for p in winspect.verify_store(path).problems if p.kind == winspect.DAMAGE]


def test_an_intact_store_with_buses_verifies_clean_and_reads_every_bus_log(tmp_path):
    path, _bus_dir, _arch = _store(tmp_path)
    report = winspect.verify_store(path)
    assert report.ok, [p.describe() for p in report.problems]
    # The catalog, queues, topics... and the buses' catalog, two buses, the archive.
    assert report.logs >= 4 + 4
    # A bus target's internal queue is named by the bus: not an orphan.
    assert not [p for p in report.problems if "belongs to no subscription" in p.message]


def test_dump_catalog_lists_buses_rules_targets_archives_and_replays(tmp_path):
    path, _bus_dir, _arch = _store(tmp_path)
    r = CliRunner().invoke(main, ["--data", path, "dump", "--catalog"])
    assert r.exit_code == 0, r.output
    buses = {d["bus"]: d for d in map(json.loads, r.output.splitlines()) if d.get("type") == "bus"}
    assert sorted(buses) == ["default", "other"]
    d = buses["default"]
    rules = {x["rule"]: x for x in d["rules"]}
    assert rules["r"]["pattern"] == {"source": ["s"]} and rules["r"]["state"] == "ENABLED"
    assert rules["r"]["description"] == "all of s"
    assert rules["tick"]["schedule"] == "rate(5 minutes)" and rules["tick"]["state"] == "DISABLED"
    assert [(t["id"], t["kind"]) for t in rules["r"]["targets"]] == \
        [("q", "sqs"), ("t", "topic"), ("b", "bus"), ("h", "https")]
    assert d["archives"] == [{"archive": "keep", "uid": d["archives"][0]["uid"], "pattern": {"source": ["s"]},
                              "retention_days": 7, "first": 0, "end": 3}]
    [replay] = d["replays"]
    assert replay["replay"] == "again" and replay["state"] == "RUNNING" and replay["position"] == 0
    assert buses["other"]["rules"] == []


def test_dump_segment_decodes_bus_and_archive_records(tmp_path):
    path, bus_dir, arch = _store(tmp_path)
    recs = list(winspect.dump_segment(winspect.segment_files(bus_dir)[0][1]))
    assert recs and all(r["type"] == "routed" for r in recs)
    assert {c["kind"] for c in recs[0]["copies"]} == {"a", "q", "t", "b"}
    # The event's JSON is stored once and named by index; the dump shows each copy's text.
    assert all(json.loads(c["body"])["source"] == "s" for c in recs[0]["copies"])
    recs = list(winspect.dump_segment(winspect.segment_files(arch)[0][1]))
    assert [r["event"]["detail"]["n"] for r in recs] == [0, 1, 2]


def test_verify_reports_a_damaged_routed_record_with_exit_code_1(tmp_path):
    path, bus_dir, _arch = _store(tmp_path)
    first = _damage_first_record(bus_dir)
    [problem] = _damage(path)
    assert problem.path == first.path and problem.offset == first.offset
    r = CliRunner().invoke(main, ["--data", path, "verify"])
    assert r.exit_code == 1 and first.path in r.output


def test_verify_reports_a_damaged_archive_record(tmp_path):
    path, _bus_dir, arch = _store(tmp_path)
    first = _damage_first_record(arch)
    [problem] = _damage(path)
    assert problem.path == first.path and problem.offset == first.offset


def test_verify_reports_a_damaged_bus_catalog_record(tmp_path):
    path, _bus_dir, _arch = _store(tmp_path)
    first = _damage_first_record(os.path.join(path, "buses", "catalog"))
    assert [p.path for p in _damage(path)] == [first.path]


def test_verify_reports_a_record_that_validates_but_is_not_a_routed_record(tmp_path):
    path, bus_dir, _arch = _store(tmp_path)
    with walq.log.Log.open(bus_dir, walq.log.LogOptions(durability="os")) as log:
        seq = log.append(b"not json", 1)
    [problem] = _damage(path)
    assert f"record {seq}" in problem.message and "bus record" in problem.message


@pytest.mark.parametrize("cursor, why", [
    (b"\x00garbage", "does not decode"),
    (b'{"upto": "x"}', "does not decode"),
    (b'{"upto": 1000}', "holds valid records only below 3"),
])
def test_verify_reports_a_damaged_or_too_far_cursor(tmp_path, cursor, why):
    path, bus_dir, _arch = _store(tmp_path)
    with open(os.path.join(bus_dir, "cursor"), "wb") as f:
        f.write(cursor)
    [problem] = _damage(path)
    assert problem.path == os.path.join(bus_dir, "cursor") and why in problem.message
    r = CliRunner().invoke(main, ["--data", path, "verify"])
    assert r.exit_code == 1


def test_verify_reports_a_mark_something_else_wrote_and_notes_a_copy_cut_short(tmp_path):
    from walq.bus import outbox as O

    path, bus_dir, _arch = _store(tmp_path)
    mark = os.path.join(bus_dir, "mark")
    with open(mark, "rb") as f:
        good = f.read()
    magic, boot, done, _busy = O._MARK.unpack(good)
    write_at(mark, 0, O._MARK.pack(magic, boot, done, done + 2))
    notes = [p for p in winspect.verify_store(path).problems if p.path == mark]
    assert [p.kind for p in notes] == [winspect.NOTE] and "cut short" in notes[0].message
    write_at(mark, 0, b"NOTAMARK")
    assert [p.path for p in _damage(path)] == [mark]


def test_verify_reports_targets_whose_destinations_are_gone(tmp_path):
    path, _bus_dir, _arch = _store(tmp_path)
    with walq.open(path, durability="os") as b:
        internal = b.get_bus("default").describe_rule("r").targets()[3]["queue"]
        b.delete_queue("q")
        b.delete_topic("t")
        b.delete_bus("other")
        b.delete_queue(internal)  # only a damaged store loses it: users cannot name it
    problems = winspect.verify_store(path).problems
    notes = sorted(p.message for p in problems if p.kind == winspect.NOTE and "target" in p.message)
    assert len(notes) == 3
    assert "bus 'other'" in notes[0] and "queue 'q'" in notes[1] and "topic 't'" in notes[2]
    [damage] = [p for p in problems if p.kind == winspect.DAMAGE]
    assert "'h'" in damage.message and internal in damage.message


def test_repair_rewrites_a_damaged_bus_log_and_the_bus_works_again(tmp_path):
    path, bus_dir, _arch = _store(tmp_path)
    _damage_first_record(bus_dir)
    assert repair(path, dry_run=True).changed and _damage(path)
    report = repair(path)
    lg = next(lg for lg in report.logs if lg.directory == bus_dir)
    assert lg.lost[0]["from"] == 0 and "buses/0000000000000000/mark" in lg.set_aside
    assert os.path.exists(os.path.join(report.quarantine, "buses", "0000000000000000", "00000000000000000000.seg"))
    assert _damage(path) == []
    with walq.open(path, durability="os") as b:
        before = b.get_queue("q").stats().total
        b.get_bus("default").put_events([{"source": "s", "detail_type": "d", "detail": {"n": 9}}])
        assert b.get_queue("q").stats().total == before + 1
    assert repair(path).changed is False


def test_repair_sets_a_damaged_cursor_aside(tmp_path):
    path, bus_dir, _arch = _store(tmp_path)
    with open(os.path.join(bus_dir, "cursor"), "wb") as f:
        f.write(b"garbage")
    report = repair(path)
    assert os.path.exists(os.path.join(report.quarantine, "buses", "0000000000000000", "cursor"))
    assert _damage(path) == []
    with walq.open(path, durability="os") as b:
        q = b.get_queue("q")
        before = q.stats().total
        b.get_bus("default").put_events([{"source": "s", "detail_type": "d", "detail": {"n": 9}}])
        assert q.stats().total == before + 1  # the records below it were not copied again


def test_repair_rewrites_a_damaged_archive_and_replays_skip_the_lost_record(tmp_path):
    path, _bus_dir, arch = _store(tmp_path)
    _damage_first_record(arch)
    repair(path)
    assert _damage(path) == []
    with walq.open(path, durability="os") as b:
        q = b.get_queue("q")
        before = q.stats().total
        svc = b._bus_service()
        from walq.bus.archive import run_replays
        while b.get_bus("default").describe_replay("again").state == "RUNNING":
            run_replays(svc)
        assert q.stats().total == before + 2  # events 1 and 2; event 0's record was lost


def test_a_damaged_bus_does_not_stop_the_store_opening(tmp_path):
    path, bus_dir, _arch = _store(tmp_path)
    with open(os.path.join(bus_dir, "cursor"), "wb") as f:
        f.write(b"garbage")
    os.unlink(os.path.join(bus_dir, "mark"))  # so that the open's completion reads the cursor
    with walq.open(path, durability="os") as b:
        assert b.get_queue("q").stats().total == 3  # the queues stay usable
        with pytest.raises(walq.CorruptionError, match="cursor"):
            b.get_bus("default").put_events([{"source": "s", "detail_type": "d", "detail": {}}])
