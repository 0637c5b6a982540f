"""RetryPolicy: how often, and for how long, a failed delivery is retried."""

from __future__ import annotations

from dataclasses import dataclass

from walq.errors import InvalidParameter

__all__ = ["RetryPolicy", "FIRST_DELAY_S", "MAX_DELAY_S"]

#: The wait before the first retry; each later one doubles it ...
FIRST_DELAY_S = 1.0
#: ... up to this.
MAX_DELAY_S = 60.0

#: Accepted ranges per service: (max_retries lo, hi), (max_age lo, hi) in seconds.
#: SNS caps a delivery policy's retries at 100 and its whole retry span at an
#: hour; EventBridge allows 0-185 retries over 60 s to 24 h.
_RANGES = {
    "sns": ((0, 100), (60, 3_600)),
    "events": ((0, 185), (60, 86_400)),
}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of an HTTP or handler delivery after its first attempt.

    ``max_retries``: retries after the first attempt (SNS: 0-100, default 3).
    ``max_age``: seconds after the publish past which a failed delivery is
    not retried again (SNS: 60-3,600, default 3,600).  The wait before retry
    ``n`` is ``delay(n)``: 1 s, 2 s, 4 s ... at most 60 s, on the broker's
    clock.  ``RetryPolicy.eventbridge()`` gives EventBridge's defaults and
    ranges.
    """

    max_retries: int = 3
    max_age: float = 3600
    service: str = "sns"

    def __post_init__(self):
        if self.service not in _RANGES:
            raise InvalidParameter(f"service must be one of {', '.join(sorted(_RANGES))}; got {self.service!r}")
        (rlo, rhi), (alo, ahi) = _RANGES[self.service]
        r = self.max_retries
        if isinstance(r, bool) or not isinstance(r, int) or not rlo <= r <= rhi:
            raise InvalidParameter(f"max_retries must be an integer {rlo}-{rhi}; got {r!r}")
        a = self.max_age
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not alo <= a <= ahi:
            raise InvalidParameter(f"max_age must be {alo}-{ahi:,} seconds; got {a!r}")

    @classmethod
    def eventbridge(cls, max_retries: int = 185, max_age: float = 86_400) -> "RetryPolicy":
        """EventBridge's policy: defaults 185 retries over 86,400 s; ranges
        0-185 and 60-86,400 s."""
        return cls(max_retries=max_retries, max_age=max_age, service="events")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first
        retry): exponential from 1 s, at most 60 s."""
        if attempt < 1:
            raise InvalidParameter(f"attempt counts from 1; got {attempt!r}")
        return min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** min(attempt - 1, 32))
