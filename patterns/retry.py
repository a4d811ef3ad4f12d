"""`RetryPolicy`: how often and how soon a failed workflow task is tried again.

The fields are LangGraph's ``RetryPolicy`` (initial interval, backoff factor,
maximum interval, maximum attempts, jitter, which errors to retry) plus
Temporal's ``non_retryable_error_types``. A retry is never a sleep: the
orchestrator arms a timer on the system's clock for `delay`, so tests drive it
with a `ManualClock`.

Note for the lead: the Coordinator (issue 12) may define a policy of its own;
the two should become one type in the public API.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

__all__ = ["RetryPolicy"]


def _exception_types(value: Any) -> tuple[type[BaseException], ...]:
    types = (value,) if isinstance(value, type) else tuple(value)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            msg = f"RetryPolicy needs exception classes, got {t!r}"
            raise TypeError(msg)
    return types


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        msg = f"RetryPolicy.{attribute.name} must be a number >= 0, got {value!r}"
        raise ValueError(msg)


def _attempts(_: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"RetryPolicy.max_attempts must be an int >= 1 (1: never retry), got {value!r}"
        raise ValueError(msg)


@attrs.frozen
class RetryPolicy:
    """Retry a failed attempt up to `max_attempts` attempts in all, with exponential backoff.

    Args:
        max_attempts: attempts in all, the first included (1: no retry).
        initial_delay: seconds before the second attempt.
        backoff: factor each further delay grows by.
        max_delay: cap on any one delay, in seconds.
        jitter: add up to 25% of random delay (from the orchestrator's seeded rng).
        retry_on: only these exception types are retried (default: every `Exception`,
            `TaskTimeoutError` included).
        non_retryable: these are never retried, even if `retry_on` matches.
    """

    max_attempts: int = attrs.field(default=3, validator=_attempts)
    initial_delay: float = attrs.field(default=0.5, validator=_positive)
    backoff: float = attrs.field(default=2.0, validator=_positive)
    max_delay: float = attrs.field(default=128.0, validator=_positive)
    jitter: bool = False
    retry_on: tuple[type[BaseException], ...] = attrs.field(default=(Exception,), converter=_exception_types)
    non_retryable: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_exception_types)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Return whether attempt number `attempt` (1-based), which failed with `error`, is tried again."""
        if attempt >= self.max_attempts:
            return False
        if isinstance(error, self.non_retryable):
            return False
        return isinstance(error, self.retry_on)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the seconds to wait after failed attempt number `attempt` (1-based)."""
        delay = min(self.initial_delay * self.backoff ** (attempt - 1), self.max_delay)
        if self.jitter:
            delay += delay * 0.25 * (rng or random).random()
        return float(delay)
