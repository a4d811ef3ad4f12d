"""`RetryPolicy`: how often and how soon a failed workflow task is tried again.

One type with the Coordinator's: it is `actors.RetryPolicy` (defined in
`actors.coordination.retry`), re-exported here so ``from patterns.retry import
RetryPolicy`` keeps working. Its fields are LangGraph's (``max_attempts``,
``initial_delay``, ``backoff``, ``max_delay``, ``jitter``, ``retry_on``) plus
``non_retryable``; the orchestrator calls ``should_retry(error, attempt)`` and
``delay(attempt, rng)``. A retry is never a sleep: the orchestrator arms a
timer on the system's clock for `delay`, so tests drive it with a `ManualClock`.
"""

from __future__ import annotations

from actors import RetryPolicy

__all__ = ["RetryPolicy"]
