"""walq's exception tree.

Every error walq raises derives from :class:`WalqError`, which is never raised
itself; each also inherits the builtin it resembles, so ``except ValueError``
keeps working for callers that do not know walq::

    WalqError
    ├── QueueDoesNotExist (LookupError)
    ├── QueueAlreadyExists
    ├── TopicDoesNotExist (LookupError)
    ├── BusDoesNotExist (LookupError)
    ├── RuleDoesNotExist (LookupError)
    ├── InvalidParameter (ValueError)
    │   ├── MessageTooLarge
    │   ├── InvalidReceipt
    │   ├── BatchError           (empty, too many or duplicate batch entries)
    │   └── InvalidPattern       (an SNS filter policy or EventBridge pattern AWS would refuse)
    ├── MessageNotInflight
    ├── CorruptionError          (damaged file: names the file and offset)
    ├── BrokerClosed
    ├── LogPoisoned (OSError)    (an fsync failed: reopen, never retry)
    ├── StoreFull (OSError)      (no space: nothing was written; free some, retry)
    ├── ReadOnlyStore (PermissionError)  (a write through walq.open(readonly=True))
    ├── UnsafeFile (PermissionError)     (a symlink, non-regular or foreign-owned file in the store)
    └── LockTimeout (TimeoutError)
"""

from __future__ import annotations

__all__ = [
    "WalqError",
    "QueueDoesNotExist",
    "QueueAlreadyExists",
    "TopicDoesNotExist",
    "BusDoesNotExist",
    "RuleDoesNotExist",
    "InvalidParameter",
    "MessageTooLarge",
    "InvalidReceipt",
    "BatchError",
    "InvalidPattern",
    "MessageNotInflight",
    "CorruptionError",
    "BrokerClosed",
    "LogPoisoned",
    "StoreFull",
    "ReadOnlyStore",
    "UnsafeFile",
    "LockTimeout",
]


class WalqError(Exception):
    """Base of every walq error; never raised directly."""

    #: The matching SQS error code, for the wire protocol and for messages.
    code: str = "InternalError"


class QueueDoesNotExist(WalqError, LookupError):
    """The named queue does not exist (or was deleted by another process)."""

    code = "AWS.SimpleQueueService.NonExistentQueue"


class QueueAlreadyExists(WalqError):
    """A queue of that name exists with different attributes."""

    code = "QueueAlreadyExists"


class InvalidParameter(WalqError, ValueError):
    """A name, range, attribute or argument is not acceptable."""

    code = "InvalidParameterValue"


class TopicDoesNotExist(WalqError, LookupError):
    """The named topic does not exist (or was deleted by another process)."""

    code = "NotFound"


class BusDoesNotExist(WalqError, LookupError):
    """The named event bus does not exist (or was deleted by another process)."""

    code = "ResourceNotFoundException"


class RuleDoesNotExist(WalqError, LookupError):
    """The named rule does not exist on its bus (or was deleted meanwhile)."""

    code = "ResourceNotFoundException"


class MessageTooLarge(InvalidParameter):
    """Body plus message attributes exceed the queue's max_message_size."""


class InvalidReceipt(InvalidParameter):
    """A receipt handle that is malformed, or (FIFO) no longer current."""

    code = "ReceiptHandleIsInvalid"


class BatchError(InvalidParameter):
    """A batch request that is empty, too long, or has duplicate entry ids."""

    code = "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"


class InvalidPattern(InvalidParameter):
    """An SNS filter policy or EventBridge event pattern that AWS would refuse.

    The message is AWS's reason text (``Invalid parameter: FilterPolicy: ...``
    or ``Event pattern is not valid. Reason: ...``).
    """

    code = "InvalidParameter"


class MessageNotInflight(WalqError):
    """change_visibility on a message that is deleted or whose lease ran out."""

    code = "AWS.SimpleQueueService.MessageNotInflight"


class CorruptionError(WalqError):
    """A file failed validation somewhere other than a torn tail.

    ``path`` and ``offset`` say where; walq never skips damaged data silently.
    """

    code = "InternalError"

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        # Every message names the queue (not only its directory) and ends
        # with the way forward; the damage itself stays in the files.
        from walq.catalog import queue_label, repair_hint  # late: catalog imports this module

        if path is not None and "queue '" not in message:
            qdir = _queue_dir_of(path)
            if qdir is not None:
                message = f"{queue_label(qdir)}: {message}"
        if "walq repair --data" not in message:
            message = f"{message}; {repair_hint(path)}"
        super().__init__(message)
        self.path = path
        self.offset = offset


def _queue_dir_of(path: str) -> str | None:
    """``<store>/queues/<uid>`` when ``path`` is that directory or inside it."""
    import os

    p = os.path.abspath(path)
    for _ in range(3):
        parent = os.path.dirname(p)
        if os.path.basename(parent) == "queues":
            return p
        if parent == p:
            return None
        p = parent
    return None


class BrokerClosed(WalqError):
    """The broker (or log) was closed; open a new one."""

    code = "BrokerClosed"


class LogPoisoned(WalqError, OSError):
    """An fsync failed; the handle refuses further writes until reopened.

    After a failed fsync the kernel may have dropped the dirty pages, so a
    retry could report success for data that is gone (PostgreSQL's
    "fsyncgate"); reopening re-reads what is actually on disk.
    """

    code = "InternalError"


class LockTimeout(WalqError, TimeoutError):
    """A lock could not be taken within the allowed time."""

    code = "LockTimeout"


class StoreFull(WalqError, OSError):
    """The file system holding the store is full (ENOSPC, or EDQUOT).

    Raised before anything was published: the operation wrote nothing a
    reader can see, and the store stays consistent.  Free space (or raise
    the quota) and retry; ``errno`` and ``filename`` are the OSError's.
    """

    code = "StoreFull"

    def __init__(self, errno: int, path: str, what: str):
        super().__init__(errno, f"no space left for {what}: nothing was written and the store is consistent; "
                                "free space on its file system and retry", path)


class ReadOnlyStore(WalqError, PermissionError):
    """A write through a store opened with ``readonly=True``."""

    code = "AccessDenied"


class UnsafeFile(WalqError, PermissionError):
    """A file in the store that walq did not make: a symlink, something
    other than a regular file or directory, or a file owned by a user other
    than the store's owner, this process's user or root.  walq refuses to
    read or write through it; ``path`` names it."""

    code = "AccessDenied"

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path
