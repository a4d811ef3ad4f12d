"""`Supervisor`: an actor whose job is to start children from specs and keep them running.

Any actor supervises the children it spawns with a restart type (see
`actors._core.supervision`); a `Supervisor` adds Erlang's shape to that:
children declared up front as `ChildSpec`s and started in order by
``on_start``, children added and terminated at run time, and a policy given
as an argument. Supervisors nest: a `ChildSpec` may name another `Supervisor`.

When a supervisor is itself restarted, its children are stopped with the old
instance and the new instance starts the children of its constructor's specs
again (children added later with `start_child` are not restored, as in Erlang).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from actors._core import DEFAULT_POLICY, STOP, Actor, ChildSpec, RestartType, SupervisionPolicy

if TYPE_CHECKING:
    from collections.abc import Iterable

    from actors._core import ActorRef

__all__ = ["ChildInfo", "Supervisor"]


@attrs.frozen
class ChildInfo:
    """One row of `Supervisor.which_children`."""

    ref: ActorRef[Any]
    name: str | None
    restart: RestartType
    alive: bool


class Supervisor(Actor):
    """Start children from specs, in order, and supervise them by `policy`.

    Args:
        children: the child specs started by ``on_start``, in order (start order
            is what ``rest_for_one`` and the stop order go by).
        policy: strategy, restart intensity, backoff and decider.

    Proxy or ask its methods from anywhere::

        sup = system.spawn(Supervisor, [ChildSpec(Worker, name="w")], policy=SupervisionPolicy("one_for_all"))
        sup.proxy().which_children().get()
    """

    def __init__(self, children: Iterable[ChildSpec] = (), *, policy: SupervisionPolicy = DEFAULT_POLICY) -> None:
        super().__init__()
        specs = list(children)
        for spec in specs:
            _check_spec(spec)
        if not isinstance(policy, SupervisionPolicy):
            msg = f"policy must be a SupervisionPolicy, got {policy!r}"
            raise TypeError(msg)
        self.supervision_policy = policy
        self._initial = specs

    def on_start(self) -> None:
        """Start the children of the constructor's specs, in order."""
        for spec in self._initial:
            self.start_child(spec)

    def start_child(self, spec: ChildSpec) -> ActorRef[Any]:
        """Start one more child from `spec` and return its ref (Erlang's ``start_child``)."""
        _check_spec(spec)
        return self.spawn(
            spec.actor_class,
            *spec.args,
            name=spec.name,
            mode=spec.mode,
            mailbox=spec.mailbox,
            restart=spec.restart,
            **spec.kwargs,
        )

    def terminate_child(self, child: ActorRef[Any] | str) -> bool:
        """Stop a child for good, whatever its restart type; return False if it is not ours.

        `child` is its ref or its name. The stop is asynchronous: watch the
        child or wait on ``ref.actor_stopped`` to know when it is gone.
        """
        for cell in self._children():
            if cell.ref == child or (isinstance(child, str) and cell.name == child):
                cell.post_system(STOP)
                return True
        return False

    def which_children(self) -> list[ChildInfo]:
        """Return the live children in start order (Erlang's ``which_children``)."""
        return [
            ChildInfo(cell.ref, cell.name, cell.restart or RestartType.TEMPORARY, cell.alive)
            for cell in self._children()
            if cell.alive
        ]

    def _children(self) -> list[Any]:
        cell = self._troupe_cell
        with cell.system.tree_lock:
            return list(cell.children or ())


def _check_spec(spec: Any) -> None:
    if not isinstance(spec, ChildSpec):
        msg = f"a Supervisor's children are ChildSpec(actor_class, ...) objects, got {spec!r}"
        raise TypeError(msg)
