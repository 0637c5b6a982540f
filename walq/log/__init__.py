"""The durable segmented log every walq structure is built on (internal API).

A log is a directory of segment files plus a shared control block; see
docs/format.md for the bytes and walq/log/log.py for the behaviour.

    from walq.log import Log, LogOptions
    with Log.open(path, LogOptions(durability="always")) as log:
        seq = log.append(b"hello")
        assert log.read(seq).payload == b"hello"
"""

from walq.log.log import Log, Record, RecordGone
from walq.log.options import LogOptions

__all__ = ["Log", "LogOptions", "Record", "RecordGone"]
