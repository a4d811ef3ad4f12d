"""`CheckHealth`: the one question every service actor answers about itself.

Services never import each other (tests/test_layers.py), so a health check
of a service cannot read its state: it *asks* the service's actor, with this
shared message, and the actor answers a `HealthReport` on its own turn. The
StateStore probes its database, the coordinator reports its queue depth, the
broker its dropped messages; `actors.observability` aggregates the answers
(and judges the measurements against thresholds the user sets).

An actor that does not handle `CheckHealth` answers with its usual error
(`MessageNotUnderstoodError`); the health registry reports it unhealthy.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

import attrs

from actors._core.frozendict import FrozenDict

__all__ = ["CheckHealth", "HealthReport", "HealthStatus"]


class HealthStatus(enum.IntEnum):
    """How a service is; higher is worse, so the worst of several is their `max`."""

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2

    def __str__(self) -> str:
        return self.name.lower()


def _measurements(value: Mapping[str, float]) -> FrozenDict[str, float]:
    return value if isinstance(value, FrozenDict) else FrozenDict(value)


def _check_measurements(_instance: object, _attribute: object, value: FrozenDict[str, float]) -> None:
    for name, number in value.items():
        if not isinstance(name, str) or isinstance(number, bool) or not isinstance(number, int | float):
            msg = f"HealthReport measurements map names (str) to numbers, got {name!r}: {number!r}"
            raise TypeError(msg)
        if math.isnan(number):
            msg = f"HealthReport measurement {name!r} is NaN; report a number"
            raise ValueError(msg)


@attrs.frozen
class HealthReport:
    """What a service says of itself.

    Attributes:
        status: its own judgement (UNHEALTHY when it cannot do its job: the
            database unreachable).
        detail: one line a person reads ("database unreachable: disk I/O error").
        measurements: numbers a health check may compare with its thresholds
            (``queue_depth``, ``dropped``...), each documented by the service.
    """

    status: HealthStatus = attrs.field(validator=attrs.validators.instance_of(HealthStatus))
    detail: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    measurements: FrozenDict[str, float] = attrs.field(
        factory=FrozenDict, converter=_measurements, validator=_check_measurements
    )


@attrs.frozen
class CheckHealth:
    """Ask a service how it is; it answers a `HealthReport` (see the module docstring)."""
