"""Power cuts across several logs of one store at once (tests/crashsim.py):
every log under the given parents is recorded through a ``RecordingIO``
whose operations share one clock, so that a crash point is one instant for
every log; each instant's states are rebuilt into a scratch copy of the store
and checked.  Used by the topic and event bus power-loss tests."""

from __future__ import annotations

import itertools
import os
import random
import shutil

import crashsim
import walq


class StampedRecordings:
    """``RecordingIO`` for every log of ``root`` whose parent directory is one
    of ``parents`` (catalogs excepted), installed as ``Broker._log_io``."""

    def __init__(self, monkeypatch, root: str, parents: tuple[str, ...]):
        self.recs: dict[str, crashsim.RecordingIO] = {}
        self.stamps: dict[str, list[int]] = {}
        clock = itertools.count()
        prefix = os.path.abspath(root) + os.sep

        def log_io(_broker, directory):
            d = os.path.abspath(directory)
            if not d.startswith(prefix) or os.path.basename(os.path.dirname(d)) not in parents \
                    or os.path.basename(d) == "catalog":
                return None
            if d not in self.recs:
                rec = crashsim.RecordingIO(d)
                mine = self.stamps[d] = []
                plain = rec._record

                def stamped(op, _plain=plain, _mine=mine):
                    _plain(op)
                    _mine.append(next(clock))

                rec._record = stamped
                self.recs[d] = rec
            return self.recs[d]

        monkeypatch.setattr(walq.Broker, "_log_io", log_io)

    def note(self, what) -> None:
        """Marks this instant in every recording (also records what the C path appended meanwhile)."""
        for r in self.recs.values():
            r.note(what)

    def finish(self) -> None:
        """Ends every recording (before the broker closes: what closing
        writes is not part of the instants checked)."""
        self.ops = {d: r.finish() for d, r in self.recs.items()}
        self.snaps = {d: r.ctl_snapshots for d, r in self.recs.items()}

    def close(self) -> None:
        """Closes every recording."""
        for r in self.recs.values():
            r.close()


def _disk_point(ops, n: int) -> int:
    """The crash point with the same files as after ``n`` operations: crashsim
    gives no state right after a note (a note changes nothing on disk)."""
    while n > 0 and ops[n - 1].kind == crashsim.NOTE:
        n -= 1
    return n


def check_every_instant(tmp_path, root: str, rec: StampedRecordings, start: dict, main: str, check,
                        n_states: int | None, seed: int) -> int:
    """Rebuilds the store as a power cut at each instant since ``start``
    (each log's operation count then) would leave it, and calls
    ``check(path, confirmed)``, ``confirmed`` being what the notes of
    ``main``'s recording (``("returned", [keys])``) said returned by then.
    With ``n_states``, that many instants, one state of each; else every
    state of ``main``'s log at every instant.  Returns how many were checked.
    ``rec.finish()`` must have been called."""
    ops, snaps, stamps = rec.ops, rec.snaps, rec.stamps
    first = min(stamps[d][start[d]] for d in rec.recs if len(stamps[d]) > start[d])
    last = max(s[-1] for s in stamps.values()) + 1
    rng = random.Random(seed)
    points = list(range(first, last + 1))
    if n_states is not None:
        points = sorted(rng.sample(points, min(n_states, len(points))))
    checked = 0
    for g in points:
        at = {d: _disk_point(ops[d], sum(1 for s in stamps[d] if s < g)) for d in rec.recs}
        per_log = {d: list(crashsim.crash_states(ops[d], snaps[d], seed=g, points={at[d]})) for d in rec.recs}
        # Notes change nothing on disk: those made by the instant count, wherever the state was taken.
        confirmed = {k for op in ops[main][:sum(1 for s in stamps[main] if s < g)]
                     if op.kind == crashsim.NOTE for k in op.note[1]}
        picks = per_log[main] if n_states is None else [rng.choice(per_log[main])]
        for ms in picks:
            scratch = str(tmp_path / "scratch")
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.copytree(root, scratch)
            labels = []
            for d in rec.recs:
                state = ms if d == main else rng.choice(per_log[d])
                target = os.path.join(scratch, os.path.relpath(d, root))
                shutil.rmtree(target)
                crashsim.materialize(state, target)
                labels.append(state.label)
            try:
                check(scratch, confirmed)
            except AssertionError as exc:
                raise AssertionError(f"crash at instant {g} ({labels}): {exc}") from None
            checked += 1
    return checked
