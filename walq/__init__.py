"""walq: embeddable, persistent SQS-style message queues on a write-ahead log.

    import walq
    with walq.open("./data") as broker:
        q = broker.create_queue("orders")
        q.send("hello")
        for m in q.receive(10, wait=1):
            m.ack()
"""

from walq.broker import Broker, open
from walq.errors import (
    BatchError,
    BrokerClosed,
    CorruptionError,
    InvalidParameter,
    InvalidReceipt,
    LockTimeout,
    LogPoisoned,
    MessageNotInflight,
    MessageTooLarge,
    QueueAlreadyExists,
    QueueDoesNotExist,
    WalqError,
)
from walq.queue.attributes import QueueAttributes, RedrivePolicy
from walq.queue.queue import Queue
from walq.queue.results import BatchResult, Message, QueueStats, SendResult

__version__ = "0.1.0"
__all__ = [
    "open",
    "Broker",
    "Queue",
    "Message",
    "SendResult",
    "BatchResult",
    "QueueStats",
    "QueueAttributes",
    "RedrivePolicy",
    "WalqError",
    "QueueDoesNotExist",
    "QueueAlreadyExists",
    "InvalidParameter",
    "MessageTooLarge",
    "InvalidReceipt",
    "BatchError",
    "MessageNotInflight",
    "CorruptionError",
    "BrokerClosed",
    "LogPoisoned",
    "LockTimeout",
]
