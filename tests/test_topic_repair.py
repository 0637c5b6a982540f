"""walq repair of topics: the topics' catalog, each topic's log, cursor and mark.

Damage is made by flipping bytes of real files; each test then checks what
`walq verify` says before and after, what the report names, and that the
topic publishes into its queues exactly once afterwards.
"""

from __future__ import annotations

import os

from click.testing import CliRunner

import walq
from helpers import flip_byte
from walq.cli import main
from walq.tools import inspect as winspect
from walq.tools.repair import repair


def _store(tmp_path, publishes: int = 3, fifo: bool = False, segment_size: int = 64 * 1024 * 1024):
    """A store with topic ``t`` subscribed by queues ``a`` and ``b`` (and
    ``publishes`` messages fanned out to both); returns (path, topic dir)."""
    path = str(tmp_path / "s")
    suffix = ".fifo" if fifo else ""
    with walq.open(path, durability="os", segment_size=segment_size) as b:
        t = b.create_topic("t" + suffix, content_based_dedup=fifo) if fifo else b.create_topic("t")
        for name in ("a", "b"):
            t.subscribe(b.create_queue(name + suffix), raw=True)
        for i in range(publishes):
            t.publish(f"m{i}", group="g" if fifo else None)
        uid = b._topic_service().catalog.topics["t" + suffix].uid
    return path, os.path.join(path, "topics", f"{uid:016x}")


def _damage(path):
    return [p for p in winspect.verify_store(path).problems if p.kind == winspect.DAMAGE]


def _flip_record(directory: str, seq: int):
    """Flips a payload byte of record ``seq`` of a log (damage with valid records after it)."""
    rec = next(r for r in winspect.iter_log(directory) if r.seq == seq)
    flip_byte(rec.path, rec.offset + 40)


def _bodies(b, name: str) -> list[bytes]:
    q = b.get_queue(name)
    got = []
    while True:
        batch = q.receive(10)
        if not batch:
            return sorted(got)
        got += [m.body for m in batch]
        q.delete_batch(batch)


def _snapshot(root: str) -> dict:
    out = {}
    for d, _dirs, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[p] = f.read()
    return out


def test_a_store_with_intact_topics_has_nothing_to_repair(tmp_path):
    path, _tdir = _store(tmp_path)
    before = _snapshot(path)
    report = repair(path)
    assert not report.changed and report.quarantine is None
    assert "nothing to repair" in report.to_text()
    assert _snapshot(path) == before


def test_repair_fills_a_lost_publish_and_the_topic_copies_each_message_once(tmp_path):
    path, tdir = _store(tmp_path)
    _flip_record(tdir, 1)
    assert _damage(path)
    before = _snapshot(path)
    dry = repair(path, dry_run=True)
    assert dry.changed and _snapshot(path) == before  # a dry run changes nothing
    report = repair(path)
    lg = next(lg for lg in report.logs if lg.directory == tdir)
    assert [(x["from"], x["to"]) for x in lg.lost] == [(1, 1)]
    assert report.lost_records == 1
    rel = os.path.relpath(tdir, path)
    assert f"{rel}/fanout.ctl" in lg.set_aside
    assert os.path.exists(os.path.join(report.quarantine, rel, "00000000000000000000.seg"))
    assert "LOST record 1" in report.to_text()
    assert _damage(path) == []
    with walq.open(path, durability="os") as b:
        b.get_topic("t").publish("m3")
        # The copies made before the damage stay; none is made twice.
        assert _bodies(b, "a") == _bodies(b, "b") == [b"m0", b"m1", b"m2", b"m3"]
    assert repair(path).changed is False


def test_repair_sets_a_damaged_cursor_aside_and_completion_skips_copies_held(tmp_path):
    path, tdir = _store(tmp_path)
    with open(os.path.join(tdir, "cursor"), "wb") as f:
        f.write(b"{not json")
    os.unlink(os.path.join(tdir, "fanout.ctl"))  # as after a reboot: the next open completes from the cursor
    assert any("cursor" in p.message for p in _damage(path))
    report = repair(path)
    assert os.path.exists(os.path.join(report.quarantine, os.path.relpath(tdir, path), "cursor"))
    assert _damage(path) == []
    with walq.open(path, durability="os") as b:
        assert _bodies(b, "a") == _bodies(b, "b") == [b"m0", b"m1", b"m2"]


def test_repair_keeps_a_fifo_topics_sequence_numbers(tmp_path):
    path, tdir = _store(tmp_path, fifo=True)
    _flip_record(tdir, 0)
    repair(path)
    assert _damage(path) == []
    with walq.open(path, durability="os") as b:
        res = b.get_topic("t.fifo").publish("m3", group="g")
        assert res.sequence == 3  # after the three the log held, the lost one included
        assert _bodies(b, "a.fifo") == [b"m0", b"m1", b"m2", b"m3"]


def test_repair_rebuilds_a_damaged_topic_catalog_from_what_validates(tmp_path):
    path, _tdir = _store(tmp_path, publishes=1)
    cat = os.path.join(path, "topics", "catalog")
    # Records: 0 the topic, 1 and 2 the subscriptions of a and b.
    _flip_record(cat, 1)
    assert _damage(path)
    report = repair(path)
    lg = next(lg for lg in report.logs if lg.directory == cat)
    assert [(x["from"], x["to"]) for x in lg.lost] == [(1, 1)]
    assert _damage(path) == []
    with walq.open(path, durability="os") as b:
        t = b.get_topic("t")
        assert [s.endpoint.rsplit(":", 1)[1] for s in t.subscriptions()] == ["b"]  # a's subscription was the lost record
        t.publish("again")
        assert _bodies(b, "b") == [b"again", b"m0"]
        assert _bodies(b, "a") == [b"m0"]


def test_repair_reports_a_listed_topic_whose_directory_is_gone(tmp_path):
    path, tdir = _store(tmp_path, publishes=1)
    os.rename(tdir, str(tmp_path / "elsewhere"))
    report = repair(path)
    assert any("topic 't' is listed but its directory" in a for a in report.catalog)
    with walq.open(path, durability="os") as b:
        b.delete_topic("t")  # the documented way forward
        assert b.list_topics() == []


def test_repair_reports_a_segment_it_cannot_read_at_all(tmp_path):
    path, tdir = _store(tmp_path, publishes=2)
    (seg,) = [p for _base, p in winspect.segment_files(tdir)]
    os.unlink(seg)
    os.symlink(str(tmp_path / "nowhere"), seg)  # listed as a segment, but open() fails
    report = repair(path)
    lg = next(lg for lg in report.logs if lg.directory == tdir)
    assert lg.lost[0]["from"] == 0 and lg.lost[0]["to"] is None and "cannot read" in lg.lost[0]["why"]
    assert report.lost_records == 1  # how many the segment held is unknown
    assert "LOST the records of the segment from 0" in report.to_text()
    assert os.path.islink(os.path.join(report.quarantine, os.path.relpath(seg, path)))  # set aside, not overwritten
    assert _damage(path) == []
    with walq.open(path, durability="os") as b:
        b.get_topic("t").publish("m2")
        assert _bodies(b, "a") == _bodies(b, "b") == [b"m0", b"m1", b"m2"]


def test_the_cli_repairs_topics(tmp_path):
    path, tdir = _store(tmp_path)
    _flip_record(tdir, 1)
    r = CliRunner().invoke(main, ["--data", path, "repair"])
    assert r.exit_code == 0, r.output
    assert f"topic directory {os.path.basename(tdir)}" in r.output and "LOST record 1" in r.output
    assert CliRunner().invoke(main, ["--data", path, "verify"]).exit_code == 0
