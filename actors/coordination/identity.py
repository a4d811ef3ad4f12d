"""Who an agent is: `AgentId` and the `AgentDescriptor` it registers with.

Threading: these are frozen values; any thread may build or read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from actors._core import FrozenDict
from actors.errors import AgentRegistrationError

__all__ = ["AgentDescriptor", "AgentId"]


def _name(what: str) -> Any:
    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or not value or ("/" in value and what == "type"):
            extra = " without /" if what == "type" else ""
            msg = f"an agent id's {attribute.name} must be a non-empty string{extra}, got {value!r}"
            raise AgentRegistrationError(msg)

    return check


@attrs.frozen(order=True, cache_hash=True)
class AgentId:
    """An agent's identity: its ``type`` (what kind of agent) and ``key`` (which one), AutoGen's `AgentId`.

    Its string form is ``type/key`` (`parse` reads it back); the type holds no ``/``.
    """

    type: str = attrs.field(validator=_name("type"))
    key: str = attrs.field(validator=_name("key"))

    def __str__(self) -> str:
        return f"{self.type}/{self.key}"

    @classmethod
    def parse(cls, text: str) -> AgentId:
        """Read ``type/key`` (the key may hold further ``/``)."""
        kind, sep, key = text.partition("/")
        if not sep:
            msg = f"agent id {text!r} is not of the form type/key"
            raise AgentRegistrationError(msg)
        return cls(kind, key)

    @classmethod
    def of(cls, value: AgentId | str) -> AgentId:
        """Return `value` as an `AgentId` (a string is parsed)."""
        return value if isinstance(value, AgentId) else cls.parse(value)


def _capabilities(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        value = (value,)
    caps = frozenset(value)
    for cap in caps:
        if not isinstance(cap, str) or not cap:
            msg = f"a capability must be a non-empty string, got {cap!r}"
            raise AgentRegistrationError(msg)
    return caps


def _attributes(value: Mapping[str, Any] | None) -> FrozenDict[str, Any]:
    if isinstance(value, FrozenDict):
        return value
    return FrozenDict(value or {})


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        msg = f"{attribute.name} must be an int >= 1, got {value!r}"
        raise AgentRegistrationError(msg)


@attrs.frozen
class AgentDescriptor:
    """What an agent registers: its id, capabilities, attributes and task slots.

    Attributes:
        id: the agent's `AgentId`.
        capabilities: what it can do; a task is only given to an agent holding
            all the capabilities the task requires.
        attributes: free facts (model, region, version...) queries may filter on.
        max_concurrent_tasks: task slots: the coordinator never has more than
            this many of the agent's tasks in flight (its credit).
    """

    id: AgentId = attrs.field(converter=AgentId.of)  # type: ignore[misc]
    capabilities: frozenset[str] = attrs.field(default=frozenset(), converter=_capabilities)
    attributes: FrozenDict[str, Any] = attrs.field(factory=FrozenDict, converter=_attributes)
    max_concurrent_tasks: int = attrs.field(default=1, validator=_positive)
