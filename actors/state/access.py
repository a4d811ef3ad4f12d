"""Access control for the state store: which agent may read or write which keys.

Off unless the store is given rules. With rules, an operation is allowed when
some rule names its agent (or ``"*"``, every agent), covers its key (the key
starts with the rule's prefix) and grants the access it needs. An operation
without an agent identity matches only ``"*"`` rules. Anything else raises
`AccessDeniedError` naming the agent and the key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from actors.errors import AccessDeniedError

__all__ = ["ANY_AGENT", "AccessRule", "AccessRules"]

ANY_AGENT = "*"
"""The agent name of a rule that applies to every agent."""


def _str(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        msg = f"AccessRule.{attribute.name} must be a str, got {value!r}"
        raise TypeError(msg)


@attrs.frozen
class AccessRule:
    """Grant `agent` read and/or write access to every key starting with `prefix`.

    Attributes:
        agent: the agent identity, or ``"*"`` for every agent.
        prefix: the key prefix (``""``: every key).
        read: grants reading (get, list, subscribe, history of the keys).
        write: grants writing (set, delete, batch, merge, resolving conflicts);
            with prefix ``""``, also changing the rules (`SetAccessRules`).
    """

    agent: str = attrs.field(validator=_str)
    prefix: str = attrs.field(default="", validator=_str)
    read: bool = True
    write: bool = False


class AccessRules:
    """A set of `AccessRule` and the checks the store makes against it."""

    __slots__ = ("_by_agent",)

    def __init__(self, rules: Iterable[AccessRule]) -> None:
        by_agent: dict[str, list[AccessRule]] = {}
        for rule in rules:
            if not isinstance(rule, AccessRule):
                msg = f"access rules must be AccessRule instances, got {rule!r}"
                raise TypeError(msg)
            by_agent.setdefault(rule.agent, []).append(rule)
        # Invariant: never mutated after construction.
        self._by_agent = by_agent

    def _rules(self, agent: str | None) -> list[AccessRule]:
        mine = self._by_agent.get(agent, []) if agent is not None else []
        return mine + self._by_agent.get(ANY_AGENT, [])

    def allows(self, agent: str | None, key: str, *, write: bool) -> bool:
        """Return whether `agent` may read (or write) `key`."""
        return any((rule.write if write else rule.read) and key.startswith(rule.prefix) for rule in self._rules(agent))

    def check(self, agent: str | None, key: str, *, write: bool, what: str) -> None:
        """Raise `AccessDeniedError` unless `agent` may read (or write) `key`."""
        if not self.allows(agent, key, write=write):
            access = "write" if write else "read"
            who = f"agent {agent!r}" if agent is not None else "an operation without an agent identity"
            msg = (
                f"{who} may not {access} key {key!r} ({what}); grant it with "
                f"AccessRule({agent or '*'!r}, prefix=..., {access}=True) or act as an agent that may"
            )
            raise AccessDeniedError(msg)

    def may_read_under(self, agent: str | None, prefix: str) -> bool:
        """Return whether `agent` may read some key starting with `prefix`."""
        return any(
            rule.read and (rule.prefix.startswith(prefix) or prefix.startswith(rule.prefix))
            for rule in self._rules(agent)
        )

    def check_under(self, agent: str | None, prefix: str, *, what: str) -> None:
        """Raise `AccessDeniedError` unless `agent` may read some key starting with `prefix`."""
        if not self.may_read_under(agent, prefix):
            who = f"agent {agent!r}" if agent is not None else "an operation without an agent identity"
            msg = (
                f"{who} may not read any key under {prefix!r} ({what}); grant it with "
                f"AccessRule({agent or '*'!r}, prefix={prefix!r}, read=True)"
            )
            raise AccessDeniedError(msg)

    def check_admin(self, agent: str | None) -> None:
        """Raise `AccessDeniedError` unless `agent` may change the rules: write access to every key."""
        if not any(rule.write and not rule.prefix for rule in self._rules(agent)):
            who = f"agent {agent!r}" if agent is not None else "an operation without an agent identity"
            msg = (
                f"{who} may not change the access rules: that needs write access to every key "
                f"(AccessRule({agent or '*'!r}, prefix='', write=True)); send SetAccessRules as an agent that has it"
            )
            raise AccessDeniedError(msg)
