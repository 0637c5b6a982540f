"""walq: embeddable, persistent SQS-style message queues on a write-ahead log."""

from walq.errors import *  # noqa: F401,F403
from walq.errors import __all__ as _errors_all

__version__ = "0.1.0"
__all__ = [*_errors_all]
