"""A sync that finds a segment trimmed by another handle skips it.

Under "always", the process that wins the sync lock fdatasyncs every
segment from the durable point to the end in its list of segments -
segments other processes wrote and it never opened.  A checkpoint elsewhere
may trim one of them after the list was taken (delete_below); opening it
then failed, and the send whose sync it was
raised RecordGone although its own record was written and the trimmed
records live on in the checkpoint (found by tests/test_stress.py)."""

from __future__ import annotations

from walq.log.log import Log
from walq.log.options import LogOptions


def test_a_sync_skips_segments_another_handle_trimmed(tmp_path):
    opts = LogOptions(durability="always", segment_size=4096)
    writer = Log.open(tmp_path / "log", opts)
    syncer = Log.open(tmp_path / "log", opts)
    try:
        # Not synced: several segments' worth, written through the other handle.
        for _ in range(12):
            writer.append(b"w" * 1000, settle=False)
        assert len(writer.segment_bases()) > 3
        syncer.segment_bases()  # its list of segments, taken before the trim
        end = writer.end
        writer.delete_below(end - 1)  # as a checkpoint's trim would
        seq = syncer.append(b"mine", settle=False)
        syncer.settle(seq + 1)  # raised RecordGone
        assert syncer.read(seq).payload == b"mine"
    finally:
        syncer.close()
        writer.close()
