"""`RetryPolicy`: when, and how soon, a failed attempt is tried again; one type for tasks and workflows.

The `Coordinator` (``TaskSpec.retry``) and the workflow orchestrator of
``patterns`` (``Task(retry=...)``) both take it. The fields are LangGraph's
(``max_attempts``, ``initial_delay``, ``backoff``, ``max_delay``, ``jitter``,
``retry_on``) plus Temporal's non-retryable types (``non_retryable``); the
defaults are Temporal's shape (1 s, x2, capped at 100x the initial delay)
with at most 3 attempts (Ray's and LangGraph's limit, so that a handler that
always raises reaches its caller). See ../shared/research/anchors-coordination.md.

A retry is never a sleep: the caller arms a timer on its system's clock for
`delay`, so tests drive it with a `ManualClock`.

Threading: a frozen value; any thread may read it.
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

from actors.errors import TaskSpecError

__all__ = ["RetryPolicy"]


def _exception_types(value: Any) -> tuple[type[BaseException], ...]:
    types = (value,) if isinstance(value, type) else tuple(value)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            msg = f"RetryPolicy needs exception classes (a class or a tuple of them), got {t!r}"
            raise TaskSpecError(msg)
    return types


def _seconds(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None and attribute.name == "max_delay":
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        msg = f"RetryPolicy.{attribute.name} must be a finite number of seconds >= 0, got {value!r}"
        raise TaskSpecError(msg)


def _attempts(_inst: object, _attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"RetryPolicy.max_attempts must be an int >= 1 (1: never retry; None: no limit), got {value!r}"
        raise TaskSpecError(msg)


def _backoff(_inst: object, _attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 1:
        msg = f"RetryPolicy.backoff must be a finite number >= 1 (1: the same delay every time), got {value!r}"
        raise TaskSpecError(msg)


@attrs.frozen
class RetryPolicy:
    """Retry a failed attempt up to `max_attempts` attempts in all, with exponential backoff.

    The n-th retry waits ``min(initial_delay * backoff**(n-1), max_delay)``.

    Args:
        max_attempts: attempts in all, the first included (1: no retry; None: no limit).
        initial_delay: seconds before the second attempt (0: at once).
        backoff: factor each further delay grows by (>= 1).
        max_delay: cap on any one delay, in seconds; None (default): 100x `initial_delay`.
        jitter: add up to 25% of random delay (from the caller's seeded rng, if it passes one).
        retry_on: only these exception types are retried (default: every `Exception`,
            `TaskTimeoutError` included).
        non_retryable: these are never retried, even if `retry_on` matches.

    Raises:
        TaskSpecError: a field out of its range (a `ValueError`).
    """

    max_attempts: int | None = attrs.field(default=3, validator=_attempts)
    initial_delay: float = attrs.field(default=1.0, validator=_seconds)
    backoff: float = attrs.field(default=2.0, validator=_backoff)
    max_delay: float | None = attrs.field(default=None, validator=_seconds)
    jitter: bool = False
    retry_on: tuple[type[BaseException], ...] = attrs.field(default=(Exception,), converter=_exception_types)
    non_retryable: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_exception_types)

    def should_retry(self, error: BaseException | None, attempt: int) -> bool:
        """Return whether attempt number `attempt` (1-based), which ended with `error`, is tried again.

        `error` None means the attempt was lost, not failed (its agent stopped):
        it is tried again while attempts remain.
        """
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return False
        if error is None:
            return True
        if isinstance(error, self.non_retryable):
            return False
        return isinstance(error, self.retry_on)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the seconds to wait after failed attempt number `attempt` (1-based)."""
        cap = self.max_delay if self.max_delay is not None else 100 * self.initial_delay
        delay = min(self.initial_delay * self.backoff ** (attempt - 1), cap)
        if self.jitter:
            delay += delay * 0.25 * (rng or random).random()
        return float(delay)
