"""walq verify and walq dump: every checksum read, damage named by file and
offset, nothing written.

Damage goes through the named helpers of tests/helpers.py (flip_byte,
zero_range, write_at), and where the damage is found is computed from the
independent reading of the format there (``frames``), not from walq's code.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import walq
from helpers import flip_byte, frames, segment_paths, write_at
from walq.tools import inspect as winspect
from walq.cli import main
from walq.log import Log, LogOptions


def run(store, *args, input=None):
    return CliRunner().invoke(main, ["--data", str(store), *args], input=input)


def queue_dir(store, name="orders") -> str:
    return winspect.queue_dir(str(store), name)


@pytest.fixture
def store(tmp_path):
    """A store with a queue of 8 messages, some received and deleted, and a checkpoint."""
    path = tmp_path / "store"
    with walq.open(path) as b:
        b.create_queue("orders-dlq")
        q = b.create_queue("orders", dead_letter=walq.RedrivePolicy("orders-dlq", max_receives=3))
        for i in range(8):
            q.send(f"order {i}", attributes={"n": i})
        msgs = q.receive(2)
        q.delete(msgs[0].receipt)
        q.checkpoint()
        q.send("after the checkpoint")
    return path


def file_digests(root) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


# -- a clean store -------------------------------------------------------------------------


def test_a_clean_store_verifies_ok_and_counts_what_it_read(store):
    r = run(store, "verify")
    assert r.exit_code == 0, r.output
    assert "OK: 3 logs" in r.output
    assert "DAMAGE" not in r.output
    report = winspect.verify_store(str(store))
    assert report.ok and report.checkpoints == 1 and report.records >= 13


def test_verify_json_reports_ok_and_counts(store):
    r = run(store, "verify", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["logs"] == 3 and doc["problems"] == []


def test_verify_of_a_missing_store_is_an_error_not_a_creation(tmp_path):
    r = run(tmp_path / "nothing", "verify")
    assert r.exit_code == 4
    assert "no walq store" in r.output
    assert not (tmp_path / "nothing").exists()


# -- damage ----------------------------------------------------------------------------------


def test_a_flipped_byte_inside_a_queue_record_is_reported_with_file_and_offset(store):
    seg = segment_paths(queue_dir(store))[0]
    victim = frames(seg)[3]
    flip_byte(seg, victim.offset + 24 + len(victim.payload) // 2)
    r = run(store, "verify")
    assert r.exit_code == 1, r.output
    assert f"DAMAGE {seg} offset {victim.offset}" in r.output
    assert f"record {victim.seq} does not validate" in r.output
    assert "DAMAGED (1 problem)" in r.output


def test_verify_as_a_subprocess_exits_1_and_names_file_and_offset(store):
    seg = segment_paths(queue_dir(store))[0]
    victim = frames(seg)[1]
    flip_byte(seg, victim.offset + 30)
    p = subprocess.run([sys.executable, "-m", "walq", "--data", str(store), "verify", "--quiet"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"{seg} offset {victim.offset}" in p.stdout
    assert "Traceback" not in p.stderr


def test_verify_reads_without_writing_even_when_damaged(store):
    seg = segment_paths(queue_dir(store))[0]
    flip_byte(seg, frames(seg)[2].offset + 26)
    before = file_digests(store)
    assert run(store, "verify").exit_code == 1
    assert file_digests(store) == before


def test_damage_in_an_older_segment_is_found_and_scanning_resumes_after_it(tmp_path):
    path = tmp_path / "s"
    with walq.open(path, segment_size=4096) as b:
        q = b.create_queue("orders")
        for i in range(200):
            q.send(f"message number {i} " + "x" * 40)
    segs = segment_paths(queue_dir(path))
    assert len(segs) > 3
    fs = frames(segs[1])
    flip_byte(segs[1], fs[2].offset + 24)
    report = winspect.verify_store(str(path))
    [damage] = report.damage
    assert damage.path == segs[1] and damage.offset == fs[2].offset
    assert damage.length == fs[3].offset - fs[2].offset  # up to where valid data resumes
    assert f"valid data resumes at offset {fs[3].offset}" in damage.message


def test_a_damaged_segment_header_is_reported_at_offset_0(tmp_path):
    path = tmp_path / "s"
    with walq.open(path, segment_size=4096) as b:
        q = b.create_queue("orders")
        for i in range(100):
            q.send("y" * 100)
    segs = segment_paths(queue_dir(path))
    flip_byte(segs[0], 20)
    r = run(path, "verify")
    assert r.exit_code == 1
    assert f"DAMAGE {segs[0]} offset 0 (64 bytes): segment header does not validate" in r.output


def test_a_missing_segment_is_damage(tmp_path):
    path = tmp_path / "s"
    with walq.open(path, segment_size=4096) as b:
        q = b.create_queue("orders")
        for i in range(100):
            q.send("z" * 100)
    segs = segment_paths(queue_dir(path))
    gone = frames(segs[1])
    os.unlink(segs[1])
    report = winspect.verify_store(str(path))
    assert not report.ok
    assert any(f"records {gone[0].seq}-{gone[-1].seq} are missing" in p.message for p in report.damage)


def test_a_damaged_checkpoint_is_reported(store):
    d = queue_dir(store)
    [name] = [n for n in os.listdir(d) if n.startswith("checkpoint-") and not n.endswith(".tmp")]
    flip_byte(os.path.join(d, name), 12)
    r = run(store, "verify")
    assert r.exit_code == 1
    assert f"DAMAGE {os.path.join(d, name)} offset 0" in r.output
    assert "checkpoint does not validate" in r.output


def test_a_trimmed_log_without_the_checkpoint_that_covers_it_is_damage(tmp_path):
    path = tmp_path / "s"
    with walq.open(path, segment_size=4096) as b:
        q = b.create_queue("orders")
        for i in range(60):
            q.send("w" * 200)
        for m in q.receive(100):
            m.ack()
        q.send("keep")
        q.checkpoint()  # trims the consumed segments
    d = queue_dir(path)
    first = int(os.path.basename(segment_paths(d)[0])[:20])
    assert first > 0
    for name in os.listdir(d):
        if name.startswith("checkpoint-"):
            os.unlink(os.path.join(d, name))
    [damage] = winspect.verify_store(str(path)).damage
    assert damage.path == d
    assert f"the log starts at record {first} but no checkpoint covers the records below it" in damage.message


def test_a_record_with_a_valid_checksum_that_does_not_decode_is_damage(store):
    d = queue_dir(store)
    with Log.open(d, LogOptions()) as log:
        seq = log.append(b"not a queue record", type=42)
    report = winspect.verify_store(str(store))
    [damage] = report.damage
    assert f"record {seq} (type 42)" in damage.message and "unknown queue record type 42" in damage.message


# -- torn tails: what a crash leaves is not damage ------------------------------------------


def test_garbage_after_the_last_record_is_a_torn_tail_not_damage(store):
    seg = segment_paths(queue_dir(store))[-1]
    end = frames(seg)[-1].end
    write_at(seg, end, b"\x17" * 40)  # a write the crash cut short
    r = run(store, "verify")
    assert r.exit_code == 0, r.output
    assert f"TORN {seg} offset {end} (40 bytes): torn tail" in r.output
    # ... also under --strict: log.ctl says nothing past the end was published.
    assert run(store, "verify", "--strict").exit_code == 0


def test_a_flipped_last_record_is_torn_unless_strict_says_it_was_published(store):
    seg = segment_paths(queue_dir(store))[-1]
    last = frames(seg)[-1]
    flip_byte(seg, last.offset + 30)
    r = run(store, "verify")
    assert r.exit_code == 0 and f"TORN {seg} offset {last.offset}" in r.output
    r = run(store, "verify", "--strict")
    assert r.exit_code == 1, r.output
    assert f"DAMAGE {seg} offset {last.offset}" in r.output and "log.ctl says" in r.output


def test_a_newest_segment_whose_creation_never_reached_the_disk_is_torn(store):
    d = queue_dir(store)
    last = segment_paths(d)[-1]
    nxt = os.path.join(d, f"{frames(last)[-1].seq + 1:020d}.seg")
    with open(nxt, "wb") as f:
        f.truncate(65536)  # created and sized, header never written
    r = run(store, "verify")
    assert r.exit_code == 0, r.output
    assert f"TORN {nxt} offset 0" in r.output and "never reached the disk" in r.output


def test_a_zeroed_header_with_data_after_it_is_damage_under_strict(store):
    d = queue_dir(store)
    last = segment_paths(d)[-1]
    nxt = os.path.join(d, f"{frames(last)[-1].seq + 1:020d}.seg")
    with open(nxt, "wb") as f:
        f.truncate(65536)
    write_at(nxt, 64, b"\x01" * 24)
    r = run(store, "verify")
    assert r.exit_code == 0 and "header is all zeros but data follows" in r.output
    r = run(store, "verify", "--strict")
    assert r.exit_code == 1 and f"DAMAGE {nxt} offset 0" in r.output


# -- dump ---------------------------------------------------------------------------------------


def test_dump_prints_every_record_type_of_a_queue_as_json_lines(tmp_path):
    path = tmp_path / "s"
    with walq.open(path) as b:
        b.create_queue("orders-dlq")
        q = b.create_queue("orders", dead_letter=walq.RedrivePolicy("orders-dlq", max_receives=1))
        q.send("café", attributes={"table": 4, "blob": b"\x00\x01"})
        q.send(b"\xff\xfe binary")
        [m] = q.receive(1)
        q.change_visibility(m.receipt, 0)
        assert q.receive(1, visibility_timeout=0) == []  # second receive: moved to the DLQ (hide, moved)
        m2 = q.receive(1)[0]
        q.delete(m2.receipt)
        q.purge()
    r = run(path, "dump", "orders")
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    types = [x["type"] for x in recs]
    for t in ("send", "lease", "change_visibility", "hide", "moved", "delete", "purge"):
        assert t in types, types
    first = recs[0]
    assert first["body"] == "café" and first["attributes"] == {"table": 4, "blob": {"Binary": "AAE="}}
    assert recs[1]["body_base64"] == "//4gYmluYXJ5"
    assert [x["seq"] for x in recs] == list(range(len(recs)))
    # --limit, --from and --no-body
    r = run(path, "dump", "orders", "--from", "1", "--limit", "1", "--no-body")
    [rec] = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["seq"] == 1 and rec["size"] == 9 and "body" not in rec
    # The DLQ holds the moved message with its source.
    r = run(path, "dump", "orders-dlq")
    [moved] = [json.loads(line) for line in r.stdout.splitlines()]
    assert moved["source"] == "orders" and moved["body"] == "café"


def test_dump_catalog_and_segment(store):
    r = run(store, "dump", "--catalog")
    entries = [json.loads(line)["entry"] for line in r.stdout.splitlines()]
    assert [(e["op"], e["name"]) for e in entries] == [("create", "orders-dlq"), ("create", "orders")]
    seg = segment_paths(queue_dir(store))[0]
    r = run(store, "dump", "--segment", seg)
    assert r.exit_code == 0
    assert json.loads(r.stdout.splitlines()[0])["body"] == "order 0"
    seg = segment_paths(os.path.join(store, "catalog"))[0]
    assert json.loads(run(store, "dump", "--segment", seg).stdout.splitlines()[0])["type"] == "catalog"


def test_dump_reads_past_damage_reporting_it_inline_and_exits_1(store):
    seg = segment_paths(queue_dir(store))[0]
    all_frames = frames(seg)
    victim = all_frames[2]
    flip_byte(seg, victim.offset + 28)
    r = run(store, "dump", "orders")
    assert r.exit_code == 1
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == len(all_frames)  # every record but one, and the damage in its place
    assert lines[2]["offset"] == victim.offset and lines[2]["seq"] == victim.seq and "damage" in lines[2]
    assert [x["seq"] for x in lines if "damage" not in x] == [f.seq for f in all_frames if f.seq != victim.seq]
    assert "walq repair" in r.stderr


def test_dump_needs_exactly_one_target_and_an_existing_queue(store):
    assert run(store, "dump").exit_code == 2
    assert run(store, "dump", "orders", "--catalog").exit_code == 2
    r = run(store, "dump", "nope")
    assert r.exit_code == 3 and "queue 'nope' does not exist" in r.output


def test_a_checkpoint_whose_tables_contradict_each_other_is_reported(store):
    # Its checksum matches (rewritten below), so the message must say what
    # is wrong instead: the contents, not the bytes.
    from array import array

    from walq.queue import checkpoint as ckpt

    d = queue_dir(store)
    [name] = [n for n in os.listdir(d) if n.startswith("checkpoint-") and not n.endswith(".tmp")]
    path = os.path.join(d, name)
    with open(path, "rb") as f:
        applied, meta, cols = ckpt._parse(f.read(), path)
    # A lease for a message the checkpoint holds as visible, not in flight.
    visible = [m for m, st in zip(cols["state_seq"], cols["state_val"]) if st == 0]
    cols["lease_msg"], cols["lease_seq"], cols["lease_deadline"] = array("q", visible[:1]), array("q", [1]), array("d", [1.0])
    with open(path, "wb") as f:
        f.write(ckpt._frame(applied, meta, {n: [cols[n]] for n, _c in ckpt._ARRAYS}))
    r = run(store, "verify")
    assert r.exit_code == 1
    assert "checkpoint checksum matches but its contents do not decode" in r.output


# -- a live store ---------------------------------------------------------------------------------


def test_verify_beside_a_live_writer_that_rolls_and_trims_reports_no_damage(tmp_path):
    """verify's help says it is safe on a live store: 40 verifies while a
    writer appends, rolls segments, checkpoints and trims them.  Each verify
    starts after the writer reports another round done (an observable event,
    not a timer), so they land at different points of its work."""
    path = tmp_path / "s"
    walq.open(path).close()
    writer = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "live_writer.py"), str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        damage = []
        for _ in range(40):
            line = writer.stdout.readline()
            assert line.startswith("round"), "the writer stopped"
            report = winspect.verify_store(str(path))
            damage += [p.describe() for p in report.damage]
        assert damage == []
        assert report.logs == 2
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)


def test_a_queue_directory_the_catalog_never_listed_is_damage(store):
    cat = os.path.join(store, "catalog")
    for n in os.listdir(cat):
        os.unlink(os.path.join(cat, n))
    walq_dirs = winspect.queue_dirs(str(store))
    report = winspect.verify_store(str(store))
    unlisted = [p for p in report.damage if "not listed in the catalog" in p.message]
    assert sorted(p.path for p in unlisted) == sorted(walq_dirs)
    assert any("queue 'orders'" in p.message for p in unlisted)


def test_deleted_queue_directories_and_renamed_ones_are_not_damage(store):
    with walq.open(store) as b:
        q = b.create_queue("doomed")
        q.send("x")
        doomed = q._dir
        b.delete_queue("doomed")
    os.makedirs(doomed)  # as if its removal had not happened yet
    with open(os.path.join(doomed, "queue.json"), "w") as f:
        f.write('{"name": "doomed"}')
    os.makedirs(os.path.join(store, "queues", "0123456789abcdef.deleted"))
    os.makedirs(os.path.join(store, "queues", ".trash", "0123456789abcdef"))
    report = winspect.verify_store(str(store))
    assert report.ok, [p.describe() for p in report.damage]
    assert any(p.path == doomed and "deleted queue" in p.message for p in report.problems)


def test_a_flipped_first_record_of_a_synced_batch_is_damage_not_a_torn_tail(tmp_path):
    path = tmp_path / "s"
    with walq.open(path) as b:
        q = b.create_queue("orders")
        q.send_batch([f"m{i}" for i in range(10)])
        d = q._dir
    seg = segment_paths(d)[0]
    first = frames(seg)[0]
    flip_byte(seg, first.offset + 30)
    r = run(path, "verify")
    assert r.exit_code == 1
    assert f"record {first.seq} does not validate" in r.output and "not a torn tail" in r.output
