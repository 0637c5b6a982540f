"""walq: embeddable, persistent SQS-style message queues on a write-ahead log.

    import walq
    with walq.open("./data") as broker:
        q = broker.create_queue("orders")
        q.send("hello")
        for m in q.receive(10, wait=1):
            m.ack()
"""

from walq.broker import Broker, open
from walq.bus import Bus, InputTransformer, Rule, Target
from walq.clock import StoreClock
from walq import errors as _errors
from walq.errors import *  # noqa: F401,F403  (the exception tree; names in errors.__all__)
from walq.match import pattern_matches
from walq.queue.attributes import QueueAttributes, RedrivePolicy
from walq.queue.queue import Queue
from walq.queue.results import BatchResult, Message, QueueStats, SendResult
from walq.tools.repair import RepairReport, repair
from walq.worker import Notification, RetryPolicy, Worker
from walq.topic.results import PublishResult
from walq.topic.topic import Subscription, Topic

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
    "StoreClock",
    "repair",
    "RepairReport",
    "Worker",
    "RetryPolicy",
    "Notification",
    "pattern_matches",
    "Topic",
    "Subscription",
    "PublishResult",
    "Bus",
    "Rule",
    "Target",
    "InputTransformer",
    *_errors.__all__,
]
