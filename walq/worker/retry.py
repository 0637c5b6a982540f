"""RetryPolicy: how often and how long a failed delivery is retried.

STAND-IN, as walq/TOPICS-CONTRACT shows it, until the worker's own module
replaces this file.
"""

from __future__ import annotations

from dataclasses import dataclass

from walq.errors import InvalidParameter


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt, none after
    ``max_age`` seconds since the message was published."""

    max_retries: int = 3
    max_age: float = 3600

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise InvalidParameter(f"max_retries must be a non-negative integer; got {self.max_retries!r}")
        if isinstance(self.max_age, bool) or not isinstance(self.max_age, (int, float)) or self.max_age <= 0:
            raise InvalidParameter(f"max_age must be a positive number of seconds; got {self.max_age!r}")

    def delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (1-based): exponential from 1 s to at most 60 s."""
        return float(min(60, 2 ** max(0, attempt - 1)))
