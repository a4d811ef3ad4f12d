"""Fixtures shared by every test.

- `mode`: every runtime test runs once per execution mode (pykka's RUNTIMES).
- `system` / `clock`: a fresh `ActorSystem` on a `ManualClock`, shut down after.
- Every test fails if it leaves a thread behind.
- `logs`: loguru records emitted by the library during the test.
- The hang guard is pytest-timeout (``timeout`` in setup.cfg).
- Hypothesis runs with no deadline and no too_slow check, in every test
  (the ``troupe`` profile): both time the machine, and CI's is shared. A
  test's own ``@settings`` keeps these unless it names them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings
from loguru import logger

from actors import MODES, ActorSystem, ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

    from loguru import Record


settings.register_profile("troupe", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("troupe")


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    """Each execution mode name in turn."""
    return str(request.param)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def system(clock: ManualClock) -> Iterator[ActorSystem]:
    with ActorSystem("test", clock=clock, dispatchers=2) as system:
        yield system


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    # A thread that is finishing its last instructions right now gets a moment.
    for thread in leaked:
        thread.join(timeout=2)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"


class LogRecords(list["Record"]):
    def messages(self, level: str | None = None) -> list[str]:
        return [r["message"] for r in self if level is None or r["level"].name == level]


@pytest.fixture
def logs() -> Iterator[LogRecords]:
    records = LogRecords()
    logger.enable("actors")
    sink = logger.add(lambda m: records.append(m.record), level="DEBUG", format="{message}")
    yield records
    logger.remove(sink)
    logger.disable("actors")
