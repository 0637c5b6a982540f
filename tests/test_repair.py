"""walq repair: damage is always found, and never a dead end.

Each test damages a store through the named helpers of tests/helpers.py,
checks that the damage is refused (not skipped) on open and found by
verify, then repairs and checks that every intact message can be received,
that what was lost is reported by sequence number, and that the damaged
bytes are kept in the quarantine folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import walq
from helpers import flip_byte, frames, segment_paths, torn_files, truncate_by, zero_range
from walq.cli import main
from walq.tools import inspect as winspect


def run(store, *args):
    return CliRunner().invoke(main, ["--data", str(store), *args])


def bodies_of(store, name="orders") -> list[str]:
    """Receives and deletes everything in the queue; returns the bodies."""
    out = []
    with walq.open(store) as b:
        q = b.get_queue(name)
        while msgs := q.receive(10):
            out += [m.body.decode() for m in msgs]
            q.delete_batch([m.receipt for m in msgs])
    return out


def make(store, n=200, *, segment_size=64 * 1024 * 1024, checkpoint=False, name="orders", batch=False):
    with walq.open(store, segment_size=segment_size) as b:
        b.create_queue("other")
        q = b.create_queue(name)
        if batch:
            for i in range(0, n, 10):
                q.send_batch([f"m{j}" for j in range(i, i + 10)])
        else:
            for i in range(n):
                q.send(f"m{i}" + ("x" * 500 if segment_size < 1 << 20 else ""))
        if checkpoint:
            q.checkpoint()
        return q._dir


def sends(qdir):
    return [f for p in segment_paths(qdir) for f in frames(p) if f.type == 1]


def verified_ok(store) -> bool:
    return winspect.verify_store(str(store)).ok


# -- a flipped byte in the middle of a queue ---------------------------------------------------


def test_a_flipped_byte_in_record_5_of_200_loses_only_that_message_after_repair(tmp_path):
    store = tmp_path / "s"
    qdir = make(store)
    victim = sends(qdir)[5]
    flip_byte(segment_paths(qdir)[0], victim.offset + 24 + 40)  # inside the body
    with walq.open(store) as b, pytest.raises(walq.CorruptionError) as err:
        b.get_queue("orders").receive(10)
    assert "queue 'orders'" in str(err.value) and str(err.value).endswith(f"run `walq repair --data {store}`")
    r = run(store, "dump", "orders")  # reads past the damage and says so
    assert r.exit_code == 1
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert any("damage" in x for x in lines) and sum(1 for x in lines if x.get("type") == "send") == 199

    report = walq.repair(store)
    assert isinstance(report, walq.RepairReport) and report.changed
    (lg,) = [lg for lg in report.logs if lg.lost]
    assert [(x["from"], x["to"]) for x in lg.lost] == [(victim.seq, victim.seq)]
    assert lg.lost[0]["message_ids"]  # the id bytes were readable
    with walq.open(store) as b:  # compact and purge work again too
        q = b.get_queue("orders")
        q.checkpoint()
        assert q.stats().total == 199
    assert run(store, "dump", "orders").exit_code == 0
    got = bodies_of(store)
    assert sorted(got) == sorted(f"m{i}" for i in range(200) if i != 5)
    assert verified_ok(store)
    with walq.open(store) as b:
        q = b.get_queue("orders")
        q.send("more")
        q.purge()
        assert q.stats().total == 0
    qfiles = os.listdir(report.quarantine)
    assert {"report.json", "report.txt", "queues"} <= set(qfiles)
    text = open(os.path.join(report.quarantine, "report.txt")).read()
    assert f"LOST record {victim.seq}" in text
    assert json.load(open(os.path.join(report.quarantine, "report.json")))["lost_records"] == 1


def test_repair_of_an_intact_store_changes_nothing(tmp_path):
    store = tmp_path / "s"
    make(store, 20)
    report = walq.repair(store)
    assert not report.changed and report.quarantine is None
    assert not os.path.exists(store / "quarantine")
    assert len(bodies_of(store)) == 20


def test_a_dry_run_reports_and_changes_nothing(tmp_path):
    store = tmp_path / "s"
    qdir = make(store, 20)
    flip_byte(segment_paths(qdir)[0], sends(qdir)[3].offset + 30)
    before = {p: open(p, "rb").read() for p in segment_paths(qdir)}
    report = walq.repair(store, dry_run=True)
    assert report.changed and report.lost_records == 1 and report.quarantine is None
    assert {p: open(p, "rb").read() for p in segment_paths(qdir)} == before
    r = run(store, "repair", "--dry-run")
    assert r.exit_code == 0 and "LOST record" in r.output and "dry run" in r.output


def test_repair_is_refused_while_another_process_has_the_store_open(tmp_path):
    store = tmp_path / "s"
    make(store, 5)
    with walq.open(store) as b:
        b.get_queue("orders")
        with pytest.raises(walq.LockTimeout, match="to itself"):
            walq.repair(store)
        r = run(store, "repair")
        assert r.exit_code != 0 and "to itself" in r.output


# -- missing files ----------------------------------------------------------------------------


def test_a_deleted_middle_segment_is_refused_on_open_then_repaired(tmp_path):
    store = tmp_path / "s"
    qdir = make(store, 400, segment_size=64 * 1024)
    segs = segment_paths(qdir)
    assert len(segs) >= 4
    gone = frames(segs[1])
    os.unlink(segs[1])
    with walq.open(store) as b:
        with pytest.raises(walq.CorruptionError, match=f"records {gone[0].seq}-{gone[-1].seq} are missing"):
            b.get_queue("orders")
    assert not verified_ok(store)
    report = walq.repair(store)
    (lg,) = [lg for lg in report.logs if lg.lost]
    assert [(x["from"], x["to"]) for x in lg.lost] == [(gone[0].seq, gone[-1].seq)]
    lost = {R for R in range(gone[0].seq, gone[-1].seq + 1)}
    assert sorted(bodies_of(store)) == sorted(f"m{i}" + "x" * 500 for i in range(400) if i not in lost)
    assert verified_ok(store)


def test_a_deleted_checkpoint_of_a_trimmed_log_is_refused_then_repaired(tmp_path):
    store = tmp_path / "s"
    with walq.open(store, segment_size=64 * 1024) as b:
        q = b.create_queue("orders")
        for i in range(300):
            q.send(f"m{i}" + "x" * 300)
        for m in q.receive(10):  # a receive the checkpoint remembers
            m.ack()
        q.checkpoint()
        qdir = q._dir
    (ck,) = [n for n in os.listdir(qdir) if n.startswith("checkpoint-")]
    first = int(os.path.basename(segment_paths(qdir)[0])[:20])
    assert first > 0
    os.unlink(os.path.join(qdir, ck))
    with walq.open(store) as b:
        with pytest.raises(walq.CorruptionError, match=f"records 0-{first - 1} are gone"):
            b.get_queue("orders")
    walq.repair(store)
    assert len(bodies_of(store)) == 290  # the log holds every live message
    assert verified_ok(store)


def test_a_truncated_checkpoint_of_a_complete_log_falls_back_to_a_full_replay(tmp_path):
    store = tmp_path / "s"
    qdir = make(store, 50, checkpoint=True)
    (ck,) = [n for n in os.listdir(qdir) if n.startswith("checkpoint-")]
    truncate_by(os.path.join(qdir, ck), 10)
    with walq.open(store) as b:
        with pytest.raises(walq.CorruptionError, match="queue 'orders': .*nothing is lost") as err:
            b.get_queue("orders")
    assert str(err.value).endswith(f"run `walq repair --data {store}`")
    report = walq.repair(store)
    (lg,) = [lg for lg in report.logs if lg.bad_checkpoints]
    assert "replayed" in lg.checkpoint and not lg.lost
    assert len(bodies_of(store)) == 50
    assert os.path.exists(os.path.join(report.quarantine, "queues", os.path.basename(qdir), ck))


# -- the catalog -------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip-last-record", "truncate", "zero", "delete"])
def test_a_lost_catalog_is_refused_on_open_and_rebuilt_from_queue_json(tmp_path, damage):
    store = tmp_path / "s"
    make(store, 10)
    cat = os.path.join(store, "catalog")
    seg = segment_paths(cat)[0]
    fs = frames(seg)
    if damage == "flip-last-record":
        flip_byte(seg, fs[-1].offset + 30)
    elif damage == "truncate":
        os.truncate(seg, fs[-1].offset)
    elif damage == "zero":
        zero_range(seg, 0, fs[-1].end)
    else:
        for n in os.listdir(cat):
            os.unlink(os.path.join(cat, n))
    with pytest.raises(walq.CorruptionError, match="does not list queue '(orders|other)'.*walq repair"):
        walq.open(store)
    assert not verified_ok(store)
    walq.repair(store)
    with walq.open(store) as b:
        assert b.list_queues() == ["orders", "other"]
    assert len(bodies_of(store)) == 10
    assert verified_ok(store)


def test_attribute_changes_reach_queue_json_before_the_catalog(tmp_path):
    store = tmp_path / "s"
    with walq.open(store) as b:
        q = b.create_queue("orders", visibility_timeout=5)
        q.set_attributes(visibility_timeout=7) if hasattr(q, "set_attributes") else \
            b._set_attributes(q, {"visibility_timeout": 7})
        d = json.load(open(os.path.join(q._dir, "queue.json")))
    assert d["name"] == "orders" and d["attrs"]["visibility_timeout"] == 7
    for n in os.listdir(store / "catalog"):
        os.unlink(os.path.join(store, "catalog", n))
    walq.repair(store)
    with walq.open(store) as b:
        assert b.get_queue("orders").attributes.visibility_timeout == 7


def test_a_deleted_queue_directory_is_damage_not_a_fresh_empty_queue(tmp_path):
    store = tmp_path / "s"
    qdir = make(store, 10)
    for n in os.listdir(qdir):
        os.unlink(os.path.join(qdir, n))
    os.rmdir(qdir)
    with walq.open(store) as b, pytest.raises(walq.CorruptionError, match="directory .* is missing"):
        b.get_queue("orders")
    report = walq.repair(store)
    assert any("is gone" in a for a in report.catalog)
    with walq.open(store) as b:
        assert b.list_queues() == ["other"]


# -- torn tails that were synced -----------------------------------------------------------------


def test_a_flipped_first_record_of_a_synced_batch_is_damage_and_repair_brings_the_rest_back(tmp_path):
    store = tmp_path / "s"
    with walq.open(store) as b:
        q = b.create_queue("orders")
        q.send("before")
        q.send_batch([f"b{i}" for i in range(10)])
        qdir = q._dir
    batch = [f for f in sends(qdir)][1:]
    flip_byte(segment_paths(qdir)[0], batch[0].offset + 40)
    assert not verified_ok(store)  # valid records after the bad one: synced data, not a torn tail
    # An open (recovery) sets the batch aside as a torn tail ...
    with walq.open(store) as b:
        q = b.get_queue("orders")
        q.send("after")  # ... and reuses its sequence numbers
    assert torn_files(qdir)
    r = run(store, "verify")
    assert r.exit_code == 1 and "torn-" in r.output
    report = walq.repair(store)
    (lg,) = [lg for lg in report.logs if lg.salvaged]
    assert lg.salvaged[0]["count"] == 9
    got = sorted(bodies_of(store))
    assert got == sorted(["before", "after"] + [f"b{i}" for i in range(1, 10)])
    assert verified_ok(store)


def test_torn_records_come_back_at_their_own_sequences_when_nothing_reused_them(tmp_path):
    store = tmp_path / "s"
    with walq.open(store) as b:
        q = b.create_queue("orders")
        q.send_batch([f"b{i}" for i in range(10)])
        qdir = q._dir
    flip_byte(segment_paths(qdir)[0], sends(qdir)[0].offset + 40)
    with walq.open(store) as b:  # recovery cuts the batch aside
        assert b.get_queue("orders").stats().total == 0
    report = walq.repair(store)
    (lg,) = [lg for lg in report.logs if lg.salvaged]
    assert "new_from" not in lg.salvaged[0] and [(x["from"], x["to"]) for x in lg.lost] == [(0, 0)]
    assert sorted(bodies_of(store)) == [f"b{i}" for i in range(1, 10)]


def test_repair_cli_prints_the_report_and_exits_0(tmp_path):
    store = tmp_path / "s"
    qdir = make(store, 20)
    flip_byte(segment_paths(qdir)[0], sends(qdir)[2].offset + 30)
    r = subprocess.run([sys.executable, "-m", "walq", "--data", str(store), "repair", "--json"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["lost_records"] == 1 and doc["quarantine"].startswith(str(store))
    assert len(bodies_of(store)) == 19


def test_a_repair_cut_short_after_its_new_segments_were_ready_is_finished_by_the_next(tmp_path, monkeypatch):
    from walq.tools import repair as repair_mod

    store = tmp_path / "s"
    qdir = make(store, 20)
    flip_byte(segment_paths(qdir)[0], sends(qdir)[4].offset + 30)

    def crash(*_a):
        raise KeyboardInterrupt("crash after READY")

    monkeypatch.setattr(repair_mod, "_finish_swap", crash)
    with pytest.raises(KeyboardInterrupt):
        walq.repair(store)
    monkeypatch.undo()
    with walq.open(store) as b, pytest.raises(walq.CorruptionError, match="interrupted"):
        b.get_queue("orders")
    report = walq.repair(store)
    assert any("finished the interrupted repair" in a for a in report.catalog)
    assert sorted(bodies_of(store)) == sorted(f"m{i}" for i in range(20) if i != 4)
    assert verified_ok(store)


def test_a_fifo_queue_keeps_its_order_after_repair(tmp_path):
    store = tmp_path / "s"
    with walq.open(store) as b:
        q = b.create_queue("orders.fifo")
        for i in range(30):
            q.send(f"m{i}", group="g", dedup_id=str(i))
        qdir = q._dir
    flip_byte(segment_paths(qdir)[0], sends(qdir)[7].offset + 30)
    walq.repair(store)
    assert bodies_of(store, "orders.fifo") == [f"m{i}" for i in range(30) if i != 7]
    assert verified_ok(store)
