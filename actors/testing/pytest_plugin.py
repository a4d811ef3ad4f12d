"""pytest fixtures of the test kit, registered by the ``pytest11`` entry point ``troupe``.

- ``actor_testkit``: an `ActorTestKit` (system on a `ManualClock`), shut down
  and checked for leaked threads after the test.
- ``test_probe``: a `TestProbe` on that kit.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.testing.kit import ActorTestKit, TestProbe

__all__ = ["actor_testkit", "test_probe"]


@pytest.fixture
def actor_testkit() -> Iterator[ActorTestKit]:
    """An `ActorTestKit` for one test."""
    kit = ActorTestKit()
    try:
        yield kit
    finally:
        kit.shutdown()


@pytest.fixture
def test_probe(actor_testkit: ActorTestKit) -> TestProbe:
    """A `TestProbe` on the test's kit."""
    return actor_testkit.probe()
