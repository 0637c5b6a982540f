"""``walq repair``: a way forward from any damage, with what was lost named.

Runs with the store to itself: it holds ``lock.open`` and ``lock.users`` of
every log exclusively (openers wait, and a store another process has open is
refused), so nothing moves underneath.  Then, for each log:

* **Salvage.**  Every record of every segment that validates is kept, and
  scanning resumes after damage at the next valid frame (``walq_find_valid``),
  as SQLite's ``.recover`` reads every page it can and LevelDB's ``RepairDB``
  keeps every record of a log it can parse.  Records set aside in
  ``torn-*.bin`` files by recovery are read too: those that still validate
  (the segment's salt, consecutive sequences) were cut from behind a damaged
  record, and come back.
* **Rewrite.**  A log with damage, a gap or salvaged torn records is written
  afresh into new segments (docs/format.md, "Repair"): every intact record
  keeps its sequence number, so receipts, checkpoints and the records that
  name messages by sequence keep their meaning; a sequence whose record is
  lost gets a filler (a DELETE naming nothing), so the log stays dense; torn
  records whose sequences were reused after the cut are appended with new
  ones.  A message the checkpoint holds live whose SEND record is lost gets
  a DELETE at the end, so no reader ever reads a filler as its body.
* **Checkpoints.**  The newest one that validates and that the log covers is
  kept; a damaged one falls back to an older one, or to a full replay when
  the log starts at record 0, or else to an empty checkpoint at the log's
  first record (the messages the log still holds come back; receive counts
  and deduplication below that record are forgotten).
* **Catalog.**  Rebuilt from the records that validate and each queue's
  ``queue.json`` when it lost a queue, holds damage, or lists a queue whose
  directory is gone.
* **Topics and event buses.**  The topics' catalog and each topic's log,
  cursor and mark (walq/topic/repair.py); the buses' catalog, each bus's
  log, cursor and mark, and each archive's log (walq/bus/repair.py): the
  same salvage and rewrite (``rewrite_log``), lost records filled where
  other files name records by sequence.

Everything replaced or cut is moved, not deleted, to
``<store>/quarantine/<UTC time>/`` (paths kept), beside ``report.json`` and
``report.txt`` saying exactly what was lost: sequence ranges, and the
message ids of damaged SEND records whose id bytes are still readable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import struct
import time
from dataclasses import dataclass, field

import portalocker

from walq.catalog import DEFINITION, definition_json, queue_uid, read_definition
from walq.errors import InvalidParameter, LockTimeout
from walq.log._native import lib
from walq.log.fileio import OsIO
from walq.log.format import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, decode_segment_header, encode_segment_header
from walq.log.format import frame as frame_records
from walq.log.format import segment_name
from walq.queue import checkpoint as ckpt
from walq.queue import records as R
from walq.queue.attributes import QueueAttributes
from walq.queue.ids import format_id
from walq.queue.native_index import new_index
from walq.tools.inspect import _Mapped, _scan, is_store, segment_files

__all__ = ["RepairReport", "LogRepair", "repair"]

_NOT_FOUND = 0xFFFFFFFFFFFFFFFF
_TORN = re.compile(r"^torn-(\d{20})-(\d+|header)(?:-\d+)?\.bin$")
#: What fills the sequence of a lost queue record: a DELETE naming nothing.
FILLER_TYPE, FILLER = R.DELETE, b""
_MIN_SEGMENT = 64 * 1024


@dataclass
class LogRepair:
    """What repair found and did in one log (the catalog or a queue)."""

    label: str  # "catalog" or "queue 'NAME'"
    directory: str
    first: int = 0
    end: int = 0  # the rewritten log's end
    records_kept: int = 0
    lost: list[dict] = field(default_factory=list)  # {"from", "to", "why", "file", "offset", "message_ids"}
    salvaged: list[dict] = field(default_factory=list)  # torn records brought back
    deleted_lost_messages: list[int] = field(default_factory=list)
    checkpoint: str = ""  # what happened to checkpoints
    bad_checkpoints: list[dict] = field(default_factory=list)  # {"file", "why"}
    actions: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def to_json(self) -> dict:
        return {"log": self.label, "directory": self.directory, "first": self.first, "end": self.end,
                "records_kept": self.records_kept, "lost": self.lost, "salvaged": self.salvaged,
                "deleted_lost_messages": self.deleted_lost_messages, "checkpoint": self.checkpoint,
                "bad_checkpoints": self.bad_checkpoints,
                "actions": self.actions, "set_aside": self.set_aside}


@dataclass
class RepairReport:
    """What ``repair`` found, did (or, with ``dry_run``, would do) and lost."""

    store: str
    dry_run: bool
    quarantine: str | None = None
    logs: list[LogRepair] = field(default_factory=list)
    catalog: list[str] = field(default_factory=list)  # catalog actions

    @property
    def changed(self) -> bool:
        """Whether anything was (or would be) changed."""
        return bool(self.catalog) or any(lg.changed for lg in self.logs)

    @property
    def lost_records(self) -> int:
        """How many log records could not be kept (a segment that cannot be
        read at all counts as one: how many it held is unknown)."""
        return sum((x["from"] if x["to"] is None else x["to"]) - x["from"] + 1 for lg in self.logs for x in lg.lost)

    def to_json(self) -> dict:
        """The report as JSON-able data (``report.json``)."""
        return {"store": self.store, "dry_run": self.dry_run, "quarantine": self.quarantine,
                "changed": self.changed, "lost_records": self.lost_records, "catalog": self.catalog,
                "logs": [lg.to_json() for lg in self.logs if lg.changed or lg.lost]}

    def to_text(self) -> str:
        """The report for people (``report.txt``)."""
        verb = "would" if self.dry_run else "did"
        out = [f"walq repair of {self.store}" + (" (dry run: nothing changed)" if self.dry_run else "")]
        if not self.changed:
            out.append("nothing to repair: every log, checkpoint and the catalog are intact")
        for a in self.catalog:
            out.append(f"catalog: {a}")
        for lg in self.logs:
            if not (lg.changed or lg.lost):
                continue
            out.append(f"{lg.label} ({lg.directory}):")
            for x in lg.lost:
                span = f"record {x['from']}" if x["from"] == x["to"] else f"records {x['from']}-{x['to']}" \
                    if x["to"] is not None else f"the records of the segment from {x['from']}"
                where = f" in {x['file']}" + (f" at offset {x['offset']}" if x.get("offset") is not None else "") \
                    if x.get("file") else ""
                ids = f"; message ids (unverified) {', '.join(x['message_ids'])}" if x.get("message_ids") else ""
                out.append(f"  LOST {span}{where}: {x['why']}{ids}")
            if lg.deleted_lost_messages:
                out.append(f"  LOST messages the checkpoint held whose SEND record is gone: sequences "
                           f"{_ranges(lg.deleted_lost_messages)}")
            for s in lg.salvaged:
                out.append(f"  SALVAGED {s['count']} records from {s['file']} (sequences {s['from']}-{s['to']}"
                           + (f", now {s['new_from']}-{s['new_to']}" if s.get("new_from") is not None else "") + ")")
            for c in lg.bad_checkpoints:
                out.append(f"  DAMAGED {c['file']}: {c['why']}")
            if lg.checkpoint:
                out.append(f"  checkpoint: {lg.checkpoint}")
            for a in lg.actions:
                out.append(f"  {verb}: {a}")
            for p in lg.set_aside:
                out.append(f"  set aside: {p}")
        if self.quarantine:
            out.append(f"damaged and replaced files are in {self.quarantine}")
        return "\n".join(out) + "\n"


def _ranges(seqs: list[int]) -> str:
    out, seqs = [], sorted(seqs)
    i = 0
    while i < len(seqs):
        j = i
        while j + 1 < len(seqs) and seqs[j + 1] == seqs[j] + 1:
            j += 1
        out.append(str(seqs[i]) if i == j else f"{seqs[i]}-{seqs[j]}")
        i = j + 1
    return ", ".join(out)


# -- the store to ourselves ---------------------------------------------------------


@contextlib.contextmanager
def _exclusive(log_dirs: list[tuple[str, str]]):
    """Holds ``lock.open`` and ``lock.users`` of every log exclusively;
    LockTimeout naming the first log another process has open."""
    held = []
    try:
        for label, d in log_dirs:
            if not os.path.isdir(d):
                continue
            fhs = []
            for name in ("lock.open", "lock.users"):
                fh = open(os.path.join(d, name), "a+b")
                held.append(fh)
                try:
                    portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
                except portalocker.LockException:
                    raise LockTimeout(
                        f"walq repair needs the store to itself, but another process has the {label} open "
                        f"({os.path.join(d, name)} is locked): close every process using {d} and run it "
                        "again") from None
                fhs.append(fh)
        yield
    finally:
        for fh in held:
            fh.close()


# -- reading what validates -----------------------------------------------------------


class _Salvage:
    """Every valid record of one log, by sequence, and what could not be read."""

    def __init__(self, directory: str):
        self.directory = directory
        self.records: dict[int, tuple[int, bytes]] = {}
        self.lost: list[dict] = []  # damaged byte ranges with the sequences they held
        self.torn: list[dict] = []  # torn files: {"file", "cut", "frames": [(seq, type, payload)]}
        self.aside: list[str] = []  # files to set aside when rewriting
        self.salts: dict[int, int] = {}
        self.seg_end_offs: dict[int, list[tuple[int, int]]] = {}  # base -> [(offset, seq)]
        self.bases: list[int] = []
        self.bad_headers: dict[int, str] = {}
        self.problems = False

    def read(self) -> None:
        segs = segment_files(self.directory)
        self.bases = [b for b, _p in segs]
        for i, (base, path) in enumerate(segs):
            nxt = segs[i + 1][0] if i + 1 < len(segs) else None
            self._read_segment(base, path, nxt)
        for name in sorted(os.listdir(self.directory)):
            m = _TORN.match(name)
            if m:
                self._read_torn(os.path.join(self.directory, name), int(m.group(1)), m.group(2))
            elif name.endswith(".seg.tmp"):
                self.aside.append(os.path.join(self.directory, name))

    def _read_segment(self, base: int, path: str, next_base: int | None) -> None:
        try:
            m = _Mapped(path)
        except OSError as exc:
            self.lost.append({"from": base, "to": None, "why": f"cannot read: {exc}", "file": path, "offset": None})
            self.problems = True
            self.aside.append(path)  # kept in quarantine: the bytes may read again elsewhere
            return
        with m:
            header = decode_segment_header(m.excerpt(0, SEGMENT_HEADER_SIZE))
            if header is None or header[0] != base:
                # The salt may still be readable where only the checksum broke.
                (salt,) = struct.unpack_from("<Q", m.excerpt(0, SEGMENT_HEADER_SIZE).ljust(64, b"\0"), 24)
                self.problems = True
                self.bad_headers[base] = path
            else:
                salt = header[1]
            self.salts[base] = salt
            offs = self.seg_end_offs.setdefault(base, [])
            off, seq = SEGMENT_HEADER_SIZE, base
            while True:
                gen = _scan(m, off, salt, seq, True)
                while True:
                    try:
                        s, o, n, t = next(gen)
                    except StopIteration as stop:
                        res = stop.value
                        break
                    if next_base is None or s < next_base:
                        self.records[s] = (t, bytes(m.mm[o + RECORD_HEADER_SIZE: o + RECORD_HEADER_SIZE + n]))
                    offs.append((o + lib.walq_frame_size(n), s + 1))
                off, seq = res.next_off, res.next_seq
                if res.status not in (lib.WALQ_SCAN_BAD, lib.WALQ_SCAN_END):
                    break
                nxt = m.find_valid(off + 8, salt, seq)
                if nxt is None:
                    if res.status == lib.WALQ_SCAN_BAD:
                        # Garbage to the end: up to the next segment, or
                        # (the newest) a tail whose extent is unknown.
                        self._lost_bytes(m, off, m.last_nonzero(off) - off, seq,
                                         next_base - 1 if next_base is not None else seq, salt,
                                         tail=next_base is None)
                    break
                (resume,) = struct.unpack_from("<Q", m.mm, nxt + 16)
                self._lost_bytes(m, off, nxt - off, seq, resume - 1, salt)
                off, seq = nxt, resume
            self.aside.append(path)

    def _lost_bytes(self, m: _Mapped, off: int, length: int, lo: int, hi: int, salt: int,
                    tail: bool = False) -> None:
        self.problems = True
        ids = []
        # A damaged SEND whose header still reads as one: its id is the first
        # 16 payload bytes (unverified - the checksum failed).
        if m.size - off >= RECORD_HEADER_SIZE + 16:
            _c, n, t = struct.unpack_from("<QIB", m.mm, off)
            if t == R.SEND and n >= R.SEND_HEAD.size:
                ids.append(format_id(bytes(m.mm[off + RECORD_HEADER_SIZE: off + RECORD_HEADER_SIZE + 16])))
        why = "does not validate"
        if not any(m.excerpt(off, RECORD_HEADER_SIZE)):
            why = "zeroed"
        if tail:
            why += ", and nothing valid follows (the newest record: it may never have been acknowledged)"
        self.lost.append({"from": lo, "to": hi, "why": why, "tail": tail,
                          "file": m.path, "offset": off, "length": length, "message_ids": ids,
                          "bytes": bytes(m.mm[off: off + min(length, 64)]).hex()})

    def _read_torn(self, path: str, base: int, where: str) -> None:
        """Valid frames (consecutive sequences) in bytes recovery cut aside."""
        self.aside.append(path)
        with open(path, "rb") as f:
            raw = f.read()
        if where == "header":
            (salt,) = struct.unpack_from("<Q", raw.ljust(64, b"\0"), 24)
            start, cut_off = SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE
        else:
            salt = self.salts.get(base)
            start, cut_off = 0, int(where)
        if salt is None or not raw:
            return
        padded = raw + bytes(-len(raw) % 8 + RECORD_HEADER_SIZE)
        m = _Bytes(padded)
        frames, off, expect = [], start, None
        while True:
            at = lib.walq_find_valid(m.ptr, len(padded), off, salt, expect if expect is not None else 0)
            if at == _NOT_FOUND:
                break
            _c, n, t = struct.unpack_from("<QIB", padded, at)
            (seq,) = struct.unpack_from("<Q", padded, at + 16)
            if expect is not None and seq != expect:
                break  # consecutive only: anything else is not this log's data
            frames.append((seq, t, bytes(padded[at + RECORD_HEADER_SIZE: at + RECORD_HEADER_SIZE + n])))
            off, expect = at + lib.walq_frame_size(n), seq + 1
        # The sequence recovery cut at: the segment's record at that offset.
        cut = base
        for end_off, nxt_seq in self.seg_end_offs.get(base, []):
            if end_off <= cut_off:
                cut = nxt_seq
        if where == "header":
            cut = base
        self.torn.append({"file": path, "cut": cut, "frames": frames})


class _Bytes:
    """A bytes object with a native pointer, for walq_find_valid."""

    def __init__(self, raw: bytes):
        from walq.log._native import ffi

        self.raw = raw
        self.ptr = ffi.from_buffer(raw)


# -- writing a log afresh ----------------------------------------------------------------


def _segment_size(directory: str) -> int:
    sizes = []
    for _b, p in segment_files(directory):
        try:
            sizes.append(os.path.getsize(p))
        except OSError:
            pass  # unreadable: repair reports it
    return max([_MIN_SEGMENT, *sizes])


def _write_log(directory: str, first: int, records: list[tuple[int, bytes]], seg_size: int) -> list[str]:
    """Writes ``records`` (type, payload), sequences from ``first``, as
    segments in ``directory`` (created), each fsynced; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths, i, seq = [], 0, first
    while True:
        base, chunk, size = seq, [], SEGMENT_HEADER_SIZE
        salt = secrets.randbits(64)
        while i < len(records):
            t, p = records[i]
            need = lib.walq_frame_size(len(p))
            if chunk and size + need > seg_size:
                break
            chunk.append(frame_records([p], salt, seq, t))
            size += need
            seq += 1
            i += 1
        path = os.path.join(directory, segment_name(base))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            data = encode_segment_header(base, salt, time.time_ns()) + b"".join(chunk)
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, max(seg_size, len(data) + RECORD_HEADER_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        paths.append(path)
        if i >= len(records):
            return paths


# -- one queue --------------------------------------------------------------------------


def _usable_checkpoints(directory: str, lg: LogRepair) -> tuple[list[tuple[int, bytes]], list[str]]:
    """``([(pos, raw)] that validate, newest first; [paths that do not])``."""
    good, bad = [], []
    for pos in reversed(ckpt.list_checkpoints(directory)):
        path = os.path.join(directory, ckpt.checkpoint_name(pos))
        try:
            with open(path, "rb") as f:
                raw = f.read()
            applied = ckpt._parse(raw, path)[0]
            ckpt.decode(raw, path)
            if applied != pos:
                raise ValueError(f"it says it covers records below {applied}")
            good.append((pos, raw))
        except Exception as exc:  # any failure to decode makes it unusable
            bad.append(path)
            lg.bad_checkpoints.append({"file": path, "why": f"does not validate ({exc})"})
    return good, bad


def _repair_queue(store: str, qdir: str, label: str, attrs: QueueAttributes | None, lg: LogRepair,
                  dry_run: bool, quarantine) -> None:
    sv = _Salvage(qdir)
    sv.read()
    good, bad_ckpts = _usable_checkpoints(qdir, lg)
    first = sv.bases[0] if sv.bases else 0
    present = sorted(sv.records)
    log_end = (present[-1] + 1) if present else first
    torn_frames = [t for t in sv.torn if t["frames"]]
    # Which checkpoint: the newest that validates and is not below the
    # log's first record (everything below it must be covered).
    chosen = next(((pos, raw) for pos, raw in good if pos >= first), None)
    end = max(log_end, chosen[0] if chosen else first)
    # Torn records go back at their own sequences when nothing reused them.
    in_place, appended = [], []
    for t in torn_frames:
        seqs = [s for s, _t, _p in t["frames"]]
        if seqs[0] >= end:
            in_place.append(t)
            end = seqs[-1] + 1
        else:
            appended.append(t)
    fillers = [s for s in range(first, end) if s not in sv.records and
               not any(t["frames"][0][0] <= s <= t["frames"][-1][0] for t in in_place)]
    # Replayed from an empty index at `first`, a CARRY whose original lies
    # below it would drop its copy ("the original went first"): such
    # entries are taken out, and deletes naming the originals follow them.
    orphan_carries = chosen is None and first > 0 and any(t == R.CARRY for t, _p in sv.records.values())
    needs_rewrite = bool(fillers or torn_frames or sv.problems or orphan_carries)
    if not needs_rewrite and not bad_ckpts and (chosen is not None or first == 0):
        return
    # Where the sequences of lost records are; filler ranges not explained
    # by damaged bytes are missing files (or a torn cut).
    explained = set()
    for x in sv.lost:
        if x["tail"] and any(t["frames"] for t in in_place):
            continue  # a torn record in front of salvaged ones: counted with the fillers
        explained.update(range(x["from"], (x["from"] if x["to"] is None else x["to"]) + 1))
        lg.lost.append({k: v for k, v in x.items() if k not in ("bytes", "tail")})
    for lo, hi in _runs([s for s in fillers if s not in explained]):
        seg = max((b for b in sv.bases if b <= lo), default=None)
        if seg in sv.bad_headers:
            why, where = "their segment's header does not validate", sv.bad_headers[seg]
        elif any(t["cut"] <= lo for t in in_place):
            why, where = "cut as a torn tail and unreadable", next(t["file"] for t in in_place)
        else:
            why, where = ("missing: no segment holds these records (a segment file was deleted, or the log "
                          "cut short)"), qdir
        lg.lost.append({"from": lo, "to": hi, "why": why, "file": where, "offset": None, "message_ids": []})
    out: list[tuple[int, bytes]] = []
    for s in range(first, end):
        rec = sv.records.get(s)
        if rec is None:
            for t in in_place:
                if t["frames"][0][0] <= s <= t["frames"][-1][0]:
                    _s, typ, p = t["frames"][s - t["frames"][0][0]]
                    rec = (typ, p)
        out.append(rec if rec is not None else (FILLER_TYPE, FILLER))
    if orphan_carries:
        out = _unlink_carries(out, first)
    for t in in_place:
        seqs = [s for s, _t, _p in t["frames"]]
        lg.salvaged.append({"file": t["file"], "count": len(seqs), "from": seqs[0], "to": seqs[-1]})
    # Torn records whose sequences were reused after the cut: their sends
    # (and deletes and moves, which are safe to apply late) get new ones.
    for t in appended:
        mapping, start = {}, first + len(out)
        for s, typ, p in t["frames"]:
            if typ == R.SEND:
                mapping[s] = first + len(out)
                out.append((typ, p))
            elif typ in (R.DELETE, R.MOVED):
                seqs = [mapping.get(m, m if m < t["cut"] else None) for m in R.decode_seqs(p)]
                seqs = [m for m in seqs if m is not None]
                if seqs:
                    out.append((typ, R.encode_seqs(seqs)))
        frames = t["frames"]
        lg.salvaged.append({"file": t["file"], "count": len(mapping), "from": frames[0][0], "to": frames[-1][0],
                            "new_from": start, "new_to": first + len(out) - 1})
    filled = set(fillers)
    if chosen is not None:
        state = ckpt._parse(chosen[1], "")[2]["state_seq"]
        gone = [s for s in state if s in filled]
        if gone:
            lg.deleted_lost_messages = gone
            out.append((R.DELETE, R.encode_seqs(gone)))
    lg.first, lg.end, lg.records_kept = first, first + len(out), sum(1 for s in range(first, end) if s not in filled)
    new_ckpt = None
    if chosen is not None:
        lg.checkpoint = f"kept checkpoint-{chosen[0]:020d}"
        if bad_ckpts:
            lg.checkpoint = f"fell back to the older checkpoint-{chosen[0]:020d}"
    elif first == 0:
        lg.checkpoint = "none usable: the whole log (from record 0) is replayed" if bad_ckpts else ""
    else:
        lg.checkpoint = (f"none usable and the log starts at record {first}: an empty checkpoint at {first} "
                         "(the messages the log holds come back; receive counts and deduplication before "
                         f"record {first} are forgotten)")
        new_ckpt = first
    if needs_rewrite:
        lg.actions.append(f"rewrote the log: records {first}-{first + len(out) - 1} in new segments "
                          f"({len(fillers)} lost records filled)")
    for p in bad_ckpts:
        lg.actions.append(f"set aside the damaged {os.path.basename(p)}")
    if new_ckpt is not None:
        lg.actions.append(f"wrote an empty {ckpt.checkpoint_name(new_ckpt)}")
    aside = (sv.aside + [os.path.join(qdir, "log.ctl")] if needs_rewrite else []) + bad_ckpts
    lg.set_aside = [os.path.relpath(p, store) for p in aside if os.path.exists(p)]
    if dry_run:
        return
    qroot = quarantine()
    if needs_rewrite:
        _swap_in(store, qroot, qdir, first, out, aside)
    else:
        _set_aside(store, qroot, aside)
    if new_ckpt is not None:
        if attrs is None:
            raise InvalidParameter(f"{label}: no queue.json or catalog entry says whether it is FIFO")
        idx = new_index(attrs.fifo, attrs.dedup_scope)
        idx.applied = new_ckpt
        ckpt.save(idx, qdir, OsIO())
    _fsync_dir(qdir)


#: Written into a log's ``repair.tmp/`` once the new segments there are
#: complete and fsynced: ``{"aside": [paths under the store], "new":
#: {segment name: salt}}``.  Repair finds it after a crash and finishes the
#: swap; an open refuses the queue meanwhile.
READY = "READY"


def _swap_in(store: str, qroot: str, log_dir: str, first: int, records: list[tuple[int, bytes]],
             aside: list[str]) -> None:
    """Replaces a log's segments with ``records``: written and fsynced in
    ``repair.tmp/``, marked READY, then the old files moved to quarantine
    and the new segments renamed in."""
    staging = os.path.join(log_dir, "repair.tmp")
    if os.path.isdir(staging):
        for n in os.listdir(staging):
            os.unlink(os.path.join(staging, n))
    # Even with nothing left, one empty segment at ``first``: the log goes on
    # from there instead of reusing sequences other files may name.
    new_paths = _write_log(staging, first, records, _segment_size(log_dir))
    new = {}
    for p in new_paths:
        with open(p, "rb") as f:
            new[os.path.basename(p)] = decode_segment_header(f.read(SEGMENT_HEADER_SIZE))[1]
    plan = {"aside": [os.path.relpath(p, store) for p in aside], "new": new}
    OsIO().write_file_atomic(os.path.join(staging, READY), json.dumps(plan).encode())
    _finish_swap(store, qroot, log_dir)


def _finish_swap(store: str, qroot: str, log_dir: str) -> None:
    """Completes a swap whose ``repair.tmp/READY`` exists (also after a
    crash part way through): a file of the plan's ``aside`` list still in
    place is moved to quarantine unless it is one of the new segments
    already renamed in (same name and salt)."""
    staging = os.path.join(log_dir, "repair.tmp")
    with open(os.path.join(staging, READY), "rb") as f:
        plan = json.loads(f.read())
    old = []
    for rel in plan["aside"]:
        p = os.path.join(store, rel)
        name = os.path.basename(p)
        if name in plan["new"] and not os.path.exists(os.path.join(staging, name)):
            continue  # already renamed in: this is the new one
        old.append(p)
    _set_aside(store, qroot, old)
    for name in plan["new"]:
        src = os.path.join(staging, name)
        if os.path.exists(src):
            os.rename(src, os.path.join(log_dir, name))
    _fsync_dir(log_dir)
    os.unlink(os.path.join(staging, READY))
    os.rmdir(staging)
    _fsync_dir(log_dir)


def _resume_swaps(store: str, log_dirs: list[str], quarantine) -> list[str]:
    """Finishes swaps a crash interrupted; drops staging never marked READY."""
    done = []
    for d in log_dirs:
        staging = os.path.join(d, "repair.tmp")
        if not os.path.isdir(staging):
            continue
        if os.path.exists(os.path.join(staging, READY)):
            _finish_swap(store, quarantine(), d)
            done.append(f"finished the interrupted repair of {os.path.relpath(d, store)}")
        else:
            for n in os.listdir(staging):
                os.unlink(os.path.join(staging, n))
            os.rmdir(staging)
    return done


def _unlink_carries(out: list[tuple[int, bytes]], first: int) -> list[tuple[int, bytes]]:
    """``out`` with CARRY entries whose original is below ``first`` removed
    (their copies stay as plain sends), and DELETE and MOVED entries that
    name such an original redirected to its copy."""
    redirect: dict[int, int] = {}
    fixed = []
    for t, p in out:
        if t == R.CARRY:
            keep = []
            for e in R.decode_carry(p):
                if e[1] < first:
                    redirect[e[1]] = e[0]
                else:
                    keep.append(e)
            p = R.encode_carry(keep) if keep else FILLER
            t = R.CARRY if keep else FILLER_TYPE
        elif t in (R.DELETE, R.MOVED) and redirect and p:
            seqs = R.decode_seqs(p)
            for i, m in enumerate(seqs):
                while m in redirect:
                    m = redirect[m]
                seqs[i] = m
            p = R.encode_seqs(seqs)
        fixed.append((t, p))
    return fixed


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    out = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def _fsync_dir(d: str) -> None:
    OsIO().fsync_dir(d)


def _set_aside(store: str, qroot: str, paths: list[str]) -> None:
    """Moves files into the quarantine folder, keeping their paths under the store."""
    dirs = set()
    for p in paths:
        if not os.path.lexists(p):
            continue
        dest = os.path.join(qroot, os.path.relpath(p, store))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.rename(p, dest)
        dirs.add(os.path.dirname(dest))
        dirs.add(os.path.dirname(p))
    for d in sorted(dirs):
        _fsync_dir(d)


# -- logs other than queues' (topics, buses, archives) ---------------------------------


def _decodes(check, type_: int, payload: bytes) -> bool:
    try:
        check(type_, payload)
        return True
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False


def rewrite_log(store: str, d: str, lg: LogRepair, check, filler: int | None, dry_run: bool, quarantine) -> bool:
    """Salvages and rewrites a log of records other than a queue's if it
    holds damage, a gap, records ``check`` refuses, or torn records;
    returns whether it did (or, with ``dry_run``, would).

    ``filler``: the record type that takes a lost record's sequence (an
    empty payload its readers skip), for logs whose sequences are named
    elsewhere (cursors, marks, positions); None for a log whose sequences
    name nothing: it is rewritten from what survives, and its torn records
    that were reused since are reported lost instead of replayed late (they
    could undo a later change).
    """
    sv = _Salvage(d)
    sv.read()
    first = sv.bases[0] if sv.bases else 0
    undecodable = sorted(s for s, (t, p) in sv.records.items() if not _decodes(check, t, p))
    present = sorted(sv.records)
    end = present[-1] + 1 if present else first
    torn = [t for t in sv.torn if t["frames"]]
    in_place, late = [], []
    for t in torn:
        if t["frames"][0][0] >= end:
            in_place.append(t)
            end = t["frames"][-1][0] + 1
        else:
            late.append(t)
    torn_at = {s: (typ, p) for t in in_place for s, typ, p in t["frames"]}
    missing = [s for s in range(first, end) if s not in sv.records and s not in torn_at]
    if not (sv.problems or torn or undecodable or missing):
        return False
    explained = set()
    for x in sv.lost:
        explained.update(range(x["from"], (x["from"] if x["to"] is None else x["to"]) + 1))
        lg.lost.append({k: v for k, v in x.items() if k not in ("bytes", "tail", "message_ids")})
    for lo, hi in _runs([s for s in missing if s not in explained]):
        lg.lost.append({"from": lo, "to": hi, "why": "missing: no segment holds these records", "file": d,
                        "offset": None})
    for lo, hi in _runs(undecodable):
        lg.lost.append({"from": lo, "to": hi, "why": "valid checksum, but not a record of this log",
                        "file": d, "offset": None})
    out = []
    bad = set(undecodable)
    for s in range(first, end):
        rec = sv.records.get(s) or torn_at.get(s)
        if rec is None or s in bad:
            if filler is not None:
                out.append((filler, b""))
            continue
        out.append(rec)
    for t in in_place:
        lg.salvaged.append({"file": t["file"], "count": len(t["frames"]), "from": t["frames"][0][0],
                            "to": t["frames"][-1][0]})
    for t in late:
        frames = [(typ, p) for _s, typ, p in t["frames"] if _decodes(check, typ, p)]
        if filler is not None:
            start = first + len(out)
            out += frames
            lg.salvaged.append({"file": t["file"], "count": len(frames), "from": t["frames"][0][0],
                                "to": t["frames"][-1][0], "new_from": start, "new_to": first + len(out) - 1})
        else:
            lg.lost.append({"from": t["frames"][0][0], "to": t["frames"][-1][0], "file": t["file"],
                            "offset": None, "why": "cut aside as a torn tail and its sequences reused since: "
                                                   "not replayed late (it could undo a later change)"})
    lg.first, lg.end = first, first + len(out)
    lg.records_kept = len(present) - len(undecodable)
    lg.actions.append(f"rewrote the log: {len(out)} records from {first} in new segments"
                      + (f" ({len(missing) + len(undecodable)} lost records filled)" if filler is not None else ""))
    aside = sv.aside + [os.path.join(d, "log.ctl")]
    lg.set_aside = [os.path.relpath(p, store) for p in aside if os.path.exists(p)]
    if not dry_run:
        _swap_in(store, quarantine(), d, first, out, aside)
    return True



# -- the catalog -------------------------------------------------------------------------


def _catalog_state(sv: _Salvage) -> tuple[dict[str, tuple[int, dict]], set[int], bool]:
    """Replays the catalog records that validate: ``(name -> (uid, attrs
    json), every uid named, whether a record failed to decode)``."""
    queues: dict[str, tuple[int, dict]] = {}
    known: set[int] = set()
    bad = False
    payloads = [sv.records[s][1] for s in sorted(sv.records)]
    for t in sv.torn:
        payloads += [p for _s, _t, p in t["frames"]]
    for p in payloads:
        try:
            r = json.loads(p)
            op, name, uid = r["op"], r["name"], int(r["uid"])
        except (ValueError, KeyError, TypeError):
            bad = True
            continue
        known.add(uid)
        if op in ("create", "set"):
            queues[name] = (uid, r["attrs"])
        elif op == "delete" and queues.get(name, (None,))[0] == uid:
            del queues[name]
    return queues, known, bad


def repair(path, *, dry_run: bool = False) -> RepairReport:
    """Repairs the store at ``path`` so that every queue opens and every
    intact message can be received; returns what was lost and done.

    Needs the store to itself: LockTimeout while any other process has it
    open.  With ``dry_run`` nothing is changed and the report says what
    would be.  See walq/tools/repair.py and docs/format.md ("Repair").
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidParameter(f"path must be a str or os.PathLike; got {type(path).__name__}")
    store = os.path.abspath(os.fspath(path))
    if not is_store(store):
        raise InvalidParameter(f"no walq store at {store} (no catalog/ directory)")
    report = RepairReport(store, dry_run)
    qroot_dir = os.path.join(store, "queues")
    os.makedirs(qroot_dir, exist_ok=True)
    qdirs = sorted(os.path.join(qroot_dir, n) for n in os.listdir(qroot_dir)
                   if queue_uid(n) is not None and os.path.isdir(os.path.join(qroot_dir, n)))
    cat_dir = os.path.join(store, "catalog")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    qpath = os.path.join(store, "quarantine", stamp)
    n = 1
    while os.path.exists(qpath):
        n += 1
        qpath = os.path.join(store, "quarantine", f"{stamp}-{n}")

    def quarantine() -> str:
        if report.quarantine is None:
            os.makedirs(qpath, exist_ok=True)
            report.quarantine = qpath
        return qpath

    from walq.bus import repair as bus_repair
    from walq.topic import repair as topic_repair

    other_logs = topic_repair.log_dirs(store) + bus_repair.log_dirs(store)
    logs = [("catalog", cat_dir)] + [(f"queue directory {os.path.basename(d)}", d) for d in qdirs] + other_logs
    with _exclusive(logs):
        if not dry_run:
            report.catalog += _resume_swaps(store, [cat_dir, *qdirs, *(d for _l, d in other_logs)], quarantine)
        cat = _Salvage(cat_dir)
        cat.read()
        queues, known, undecodable = _catalog_state(cat)
        by_uid = {uid: (name, a) for name, (uid, a) in queues.items()}
        defs = {}
        rebuild = cat.problems or undecodable or any(t["frames"] for t in cat.torn)
        if cat.problems or undecodable:
            report.catalog.append("the catalog log holds damage: rebuilt from the records that validate "
                                  "and each queue's queue.json")
        for d in qdirs:
            uid = int(os.path.basename(d), 16)
            qdef = read_definition(d)
            if uid in by_uid:
                name, a = by_uid[uid]
                defs[uid] = (name, QueueAttributes.from_json(a))
                if qdef is None or qdef["attrs"] != defs[uid][1] or qdef["name"] != name:
                    report.catalog.append(f"wrote queues/{os.path.basename(d)}/{DEFINITION} for queue {name!r}")
            elif qdef is not None:
                name = qdef["name"]
                if name in queues:
                    stem = name[:-5] if qdef["attrs"].fifo else name
                    name = f"{stem[:40]}-recovered-{uid:016x}" + (".fifo" if qdef["attrs"].fifo else "")
                    report.catalog.append(f"queue {qdef['name']!r} of queues/{os.path.basename(d)} is missing "
                                          f"from the catalog and its name is taken: listed as {name!r}")
                else:
                    report.catalog.append(f"queue {name!r} (queues/{os.path.basename(d)}) is missing from the "
                                          "catalog: listed again from its queue.json")
                defs[uid] = (name, dataclasses.replace(qdef["attrs"], name=name))
                queues[name] = (uid, defs[uid][1].to_json())
                rebuild = True
            elif segment_files(d):
                fifo = False
                name = f"recovered-{uid:016x}"
                attrs = QueueAttributes(name=name, fifo=fifo)
                defs[uid] = (name, attrs)
                queues[name] = (uid, attrs.to_json())
                report.catalog.append(f"queues/{os.path.basename(d)} holds a log but neither the catalog nor a "
                                      f"queue.json names it: listed as standard queue {name!r}")
                rebuild = True
        for name, (uid, _a) in sorted(queues.items()):
            if uid not in defs:
                report.catalog.append(f"queue {name!r} is listed but its directory queues/{uid:016x} is gone: "
                                      "every message in it is lost; removed from the catalog")
                del queues[name]
                rebuild = True
        for d in qdirs:
            uid = int(os.path.basename(d), 16)
            if uid not in defs:
                continue
            name, attrs = defs[uid]
            lg = LogRepair(f"queue {name!r}", d)
            report.logs.append(lg)
            _repair_queue(store, d, lg.label, attrs, lg, dry_run, quarantine)
        if not dry_run:
            for d in qdirs:
                uid = int(os.path.basename(d), 16)
                if uid in defs:
                    name, attrs = defs[uid]
                    want = definition_json(name, uid, attrs)
                    try:
                        with open(os.path.join(d, DEFINITION), "rb") as f:
                            same = f.read() == want
                    except FileNotFoundError:
                        same = False
                    if not same:
                        OsIO().write_file_atomic(os.path.join(d, DEFINITION), want)
        if rebuild:
            records = [(1, json.dumps({"op": "create", "name": name, "uid": uid,
                                       "attrs": a if isinstance(a, dict) else a.to_json()},
                                      sort_keys=True).encode())
                       for name, (uid, a) in sorted(queues.items())]
            report.catalog.append(f"rewrote the catalog log: {len(records)} queues")
            if not dry_run:
                _swap_in(store, quarantine(), cat_dir, 0, records, cat.aside + [os.path.join(cat_dir, "log.ctl")])
        topic_repair.repair_topics(store, report, dry_run, quarantine)  # topics' catalog, logs, cursors, marks
        bus_repair.repair_buses(store, report, dry_run, quarantine)  # buses, archives, outbox files
        if report.quarantine and not dry_run:
            OsIO().write_file_atomic(os.path.join(report.quarantine, "report.json"),
                                     json.dumps(report.to_json(), indent=1).encode())
            OsIO().write_file_atomic(os.path.join(report.quarantine, "report.txt"), report.to_text().encode())
    return report
