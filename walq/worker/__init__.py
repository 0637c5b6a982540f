"""Workers: queue handlers, and deliveries to HTTP and handler subscriptions.

The only part of walq that runs user code or calls out.  Modules:
``worker`` (Worker, the pollers and the pool), ``delivery`` (one batch of
one target: attempt, retry, dead-letter), ``webhook`` (HTTP POSTs),
``handlers`` (import paths, Lambda's batch responses), ``leases`` (lease
extension), ``retry`` (RetryPolicy), ``notification`` (Notification),
``targets`` (DeliveryTarget), ``counters`` (per-target counts).
"""

from walq.worker.notification import Notification
from walq.worker.retry import RetryPolicy
from walq.worker.targets import DeliveryTarget
from walq.worker.worker import Worker

__all__ = ["Worker", "RetryPolicy", "Notification", "DeliveryTarget"]
