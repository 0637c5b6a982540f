"""walq's exception tree.

Every error walq raises derives from :class:`WalqError`, which is never raised
itself; each also inherits the builtin it resembles, so ``except ValueError``
keeps working for callers that do not know walq::

    WalqError
    ├── QueueDoesNotExist (LookupError)
    ├── QueueAlreadyExists
    ├── TopicDoesNotExist (LookupError)
    ├── InvalidParameter (ValueError)
    │   ├── InvalidPattern       (a filter policy SNS would refuse; says why)
    │   ├── MessageTooLarge
    │   ├── InvalidReceipt
    │   └── BatchError           (empty, too many or duplicate batch entries)
    ├── MessageNotInflight
    ├── CorruptionError          (damaged file: names the file and offset)
    ├── BrokerClosed
    ├── LogPoisoned (OSError)    (an fsync failed: reopen, never retry)
    └── LockTimeout (TimeoutError)
"""

from __future__ import annotations

__all__ = [
    "WalqError",
    "QueueDoesNotExist",
    "QueueAlreadyExists",
    "TopicDoesNotExist",
    "InvalidParameter",
    "InvalidPattern",
    "MessageTooLarge",
    "InvalidReceipt",
    "BatchError",
    "MessageNotInflight",
    "CorruptionError",
    "BrokerClosed",
    "LogPoisoned",
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


class InvalidPattern(InvalidParameter):
    """A filter policy (or event pattern) that SNS or EventBridge would
    refuse; the message says why, in their words."""

    code = "InvalidParameter"


class MessageTooLarge(InvalidParameter):
    """Body plus message attributes exceed the queue's max_message_size."""


class InvalidReceipt(InvalidParameter):
    """A receipt handle that is malformed, or (FIFO) no longer current."""

    code = "ReceiptHandleIsInvalid"


class BatchError(InvalidParameter):
    """A batch request that is empty, too long, or has duplicate entry ids."""

    code = "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"


class MessageNotInflight(WalqError):
    """change_visibility on a message that is deleted or whose lease ran out."""

    code = "AWS.SimpleQueueService.MessageNotInflight"


class CorruptionError(WalqError):
    """A file failed validation somewhere other than a torn tail.

    ``path`` and ``offset`` say where; walq never skips damaged data silently.
    """

    code = "InternalError"

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.path = path
        self.offset = offset


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
