"""Dispatcher groups (``ActorSystem(dispatchers={...})``, ``spawn(dispatcher=)``) and the held-dispatcher watch."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

import pykka
import pytest

from actors import Actor, ActorSystem, DispatcherError, ManualClock
from tests.core.actors_for_tests import WAIT, Gate

if TYPE_CHECKING:
    from tests.conftest import LogRecords


class WhereAmI(Actor):
    """Reply with the name of the thread the handler runs on; hold a `Gate` until it is released."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Gate):
            message.hold()
        return threading.current_thread().name


class Blocker(WhereAmI):
    """Another class, for the once-per-class rule."""


class OnBlocking(WhereAmI):
    """Runs on the ``"blocking"`` group unless spawned with another."""

    dispatcher = "blocking"


class Parent(Actor):
    """Spawns a child on the group it is told, and answers with the child's ref."""

    def on_receive(self, group: str) -> Any:
        return self.spawn(WhereAmI, dispatcher=group)


def _thread_of(ref: pykka.ActorRef[Any]) -> str:
    # A timeout keeps the ask off the inline path: the handler runs on a dispatcher.
    return str(ref.ask("where", timeout=WAIT))


GROUPS: list[tuple[Any, dict[str, int]]] = [
    (1, {"default": 1}),
    (3, {"default": 3}),
    ({"default": 2}, {"default": 2}),
    ({"default": 1, "blocking": 3}, {"default": 1, "blocking": 3}),
    ({"default": 2, "io": 1, "cpu": 2}, {"default": 2, "io": 1, "cpu": 2}),
]


@pytest.mark.parametrize(("dispatchers", "expected"), GROUPS)
def test_each_group_runs_its_actors_on_threads_of_its_own(dispatchers: Any, expected: dict[str, int]) -> None:
    with ActorSystem("groups", clock=ManualClock(), dispatchers=dispatchers) as system:
        assert system.dispatchers == expected
        for group, size in expected.items():
            prefix = "troupe-groups-" if group == "default" else f"troupe-groups-{group}-"
            names = {_thread_of(system.spawn(WhereAmI, dispatcher=group)) for _ in range(2 * size)}
            assert all(name.startswith(f"{prefix}dispatcher-") for name in names), names
            assert len(names) <= size


def test_a_mapping_without_default_gets_a_default_group_of_cpu_count_threads() -> None:
    with ActorSystem("no-default", clock=ManualClock(), dispatchers={"blocking": 2}) as system:
        assert set(system.dispatchers) == {"default", "blocking"}
        assert system.dispatchers["default"] >= 1
        assert _thread_of(system.spawn(WhereAmI)).startswith("troupe-no-default-dispatcher-")


def test_a_group_starts_its_threads_when_its_first_actor_is_spawned() -> None:
    with ActorSystem("lazy-group", clock=ManualClock(), dispatchers={"default": 1, "blocking": 4}) as system:
        assert not [t for t in threading.enumerate() if "-blocking-" in t.name]
        system.spawn(WhereAmI)  # the default group: the blocking one stays unstarted
        assert not [t for t in threading.enumerate() if "-blocking-" in t.name]
        system.spawn(WhereAmI, dispatcher="blocking")
        assert len([t for t in threading.enumerate() if t.name.startswith("troupe-lazy-group-blocking-")]) == 4


def test_the_class_attribute_chooses_the_group_and_spawn_overrides_it() -> None:
    with ActorSystem("attr", clock=ManualClock(), dispatchers={"default": 1, "blocking": 1, "io": 1}) as system:
        assert "-blocking-dispatcher-" in _thread_of(system.spawn(OnBlocking))
        assert "-io-dispatcher-" in _thread_of(system.spawn(OnBlocking, dispatcher="io"))
        assert _thread_of(system.spawn(OnBlocking, dispatcher="default")).startswith("troupe-attr-dispatcher-")
        # Thread mode has no dispatcher: the class attribute does not apply there.
        assert not _thread_of(system.spawn(OnBlocking, mode="thread")).startswith("troupe-attr-")


def test_a_child_is_spawned_on_the_group_its_parent_names() -> None:
    with ActorSystem("children", clock=ManualClock(), dispatchers={"default": 1, "blocking": 1}) as system:
        child = system.spawn(Parent).ask("blocking", timeout=WAIT)
        assert "-blocking-dispatcher-" in _thread_of(child)


def test_an_actor_blocking_its_group_leaves_the_default_group_serving() -> None:
    with ActorSystem("apart", clock=ManualClock(), dispatchers={"default": 1, "blocking": 1}) as system:
        gate = Gate()
        blocked = system.spawn(WhereAmI, dispatcher="blocking")
        held = blocked.ask(gate, block=False)
        assert gate.entered.wait(WAIT)
        # The only default thread is free: a default actor answers while the blocking one holds its thread.
        assert _thread_of(system.spawn(WhereAmI)).startswith("troupe-apart-dispatcher-")
        gate.released.set()
        assert "-blocking-" in held.get(timeout=WAIT)


class Sentinel(Actor):
    """Stopped first at shutdown (the youngest top-level actor): opens every gate as it stops."""

    def __init__(self, gates: list[Gate]) -> None:
        super().__init__()
        self.gates = gates

    def on_stop(self) -> None:
        for gate in self.gates:
            gate.released.set()


def test_every_ask_resolves_on_shutdown_with_several_groups() -> None:
    futures: list[pykka.Future[Any]] = []
    gates: list[Gate] = []
    with ActorSystem("resolve", clock=ManualClock(), dispatchers={"default": 3, "blocking": 2, "io": 2}) as system:
        for group in ("default", "blocking", "io"):
            for _ in range(2):
                gate = Gate()
                gates.append(gate)
                ref = system.spawn(WhereAmI, dispatcher=group)
                futures.append(ref.ask(gate, block=False))
                futures.extend(ref.ask(i, block=False) for i in range(5))  # queued behind the held handler
        for gate in gates:
            assert gate.entered.wait(WAIT)
        # Shutdown stops the sentinel first (on a thread of its own; the root
        # guardian runs on the one default thread left free); its on_stop releases the held handlers, so the
        # queued asks meet a stopping actor.
        system.spawn(Sentinel, gates, mode="thread")
    for future in futures:
        # A queued ask that became a dead letter is resolved all the same.
        with contextlib.suppress(pykka.ActorDeadError):
            future.get(timeout=0)


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dispatchers", "error", "match"),
    [
        (0, ValueError, "dispatchers must be >= 1, got 0"),
        ({"default": 0}, ValueError, r"dispatchers\['default'\] must be >= 1, got 0"),
        ({"default": 1, "blocking": -3}, ValueError, r"dispatchers\['blocking'\] must be >= 1"),
        ({"blocking": "32"}, TypeError, r"dispatchers\['blocking'\] must be an int"),
        ({"blocking": True}, TypeError, r"dispatchers\['blocking'\] must be an int"),
        ({"": 2}, TypeError, "group name must be a non-empty str"),
        ({3: 2}, TypeError, "group name must be a non-empty str"),
        ("2", TypeError, "dispatchers must be an int >= 1 .* a mapping of group name to size"),
        ([("default", 2)], TypeError, "dispatchers must be an int"),
    ],
)
def test_bad_dispatcher_sizes_are_refused_with_what_to_pass(dispatchers: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ActorSystem("bad", dispatchers=dispatchers)


def test_an_unknown_group_is_refused_naming_the_groups_there_are(system: ActorSystem) -> None:
    with pytest.raises(DispatcherError, match=r"'gpu' is not a dispatcher group .*\['default'\]") as caught:
        system.spawn(WhereAmI, dispatcher="gpu")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(DispatcherError, match=r"OnBlocking.dispatcher 'blocking' is not a dispatcher group"):
        system.spawn(OnBlocking)
    assert system.children() == []  # nothing half-spawned


@pytest.mark.parametrize("mode", ["thread", "asyncio"])
def test_a_dispatcher_for_a_mode_without_one_is_refused(system: ActorSystem, mode: str) -> None:
    with pytest.raises(DispatcherError, match=f"runs in mode {mode!r}, which has no dispatcher"):
        system.spawn(WhereAmI, mode=mode, dispatcher="default")


def test_a_dispatcher_that_is_not_a_name_is_a_type_error(system: ActorSystem) -> None:
    with pytest.raises(TypeError, match="dispatcher= must be the name of a dispatcher group"):
        system.spawn(WhereAmI, dispatcher=2)  # type: ignore[arg-type]


# -- the held-dispatcher watch -------------------------------------------------


def _hold(system: ActorSystem, actor_class: type[Actor], **spawn: Any) -> tuple[Gate, pykka.Future[Any]]:
    gate = Gate()
    future = system.spawn(actor_class, **spawn).ask(gate, block=False)
    assert gate.entered.wait(WAIT)
    return gate, future


def _held_warnings(logs: LogRecords) -> list[str]:
    return [m for m in logs.messages("WARNING") if "has held dispatcher thread" in m]


@pytest.fixture
def watched(clock: ManualClock) -> Any:
    with ActorSystem(
        "watched", clock=clock, dispatchers={"default": 2, "blocking": 1}, slow_callback_duration=1.0
    ) as system:
        yield system


def test_a_turn_holding_a_dispatcher_is_logged_once_per_class_with_the_time_and_the_advice(
    watched: ActorSystem, clock: ManualClock, logs: LogRecords
) -> None:
    gate, future = _hold(watched, Blocker)
    clock.advance(1.0)  # first seen
    assert _held_warnings(logs) == []
    clock.advance(1.0)  # seen again a threshold later: the same turn
    (warning,) = _held_warnings(logs)
    assert "Blocker" in warning
    assert "for 1.000 s" in warning
    assert "slow_callback_duration is 1.0 s" in warning
    assert "mode='thread'" in warning
    assert "mode='asyncio'" in warning
    assert "dispatcher='blocking'" in warning
    gate.released.set()
    future.get(timeout=WAIT)
    # The same class again: not logged twice.
    gate, future = _hold(watched, Blocker)
    clock.advance(1.0)
    clock.advance(1.0)
    assert len(_held_warnings(logs)) == 1
    gate.released.set()
    future.get(timeout=WAIT)
    # Another class is.
    gate, future = _hold(watched, WhereAmI)
    clock.advance(1.0)
    clock.advance(1.0)
    assert len(_held_warnings(logs)) == 2
    assert "WhereAmI" in _held_warnings(logs)[1]
    gate.released.set()
    future.get(timeout=WAIT)


def test_short_turns_and_blocking_groups_are_not_logged(
    watched: ActorSystem, clock: ManualClock, logs: LogRecords
) -> None:
    ref = watched.spawn(WhereAmI)
    for _ in range(5):  # a new turn at each tick: never the same one twice
        _thread_of(ref)
        clock.advance(1.0)
    # A group of its own is where blocking belongs: not watched.
    gate, future = _hold(watched, WhereAmI, dispatcher="blocking")
    clock.advance(1.0)
    clock.advance(1.0)
    clock.advance(1.0)
    gate.released.set()
    future.get(timeout=WAIT)
    assert _held_warnings(logs) == []


def test_the_watch_sleeps_while_the_pool_is_idle_and_wakes_with_it(
    watched: ActorSystem, clock: ManualClock, logs: LogRecords
) -> None:
    clock.advance(10.0)  # idle: the tick pauses the watch instead of re-arming
    assert clock.pending_timers() == 0  # the watch's own timer never counts
    gate, future = _hold(watched, Blocker)  # waking a thread re-arms it
    clock.advance(1.0)
    clock.advance(1.0)
    assert len(_held_warnings(logs)) == 1
    gate.released.set()
    future.get(timeout=WAIT)


def test_the_watch_is_off_without_a_threshold(clock: ManualClock, logs: LogRecords) -> None:
    with ActorSystem("unwatched", clock=clock, dispatchers=1, slow_callback_duration=None) as system:
        gate, future = _hold(system, Blocker)
        clock.advance(100.0)
        clock.advance(100.0)
        gate.released.set()
        future.get(timeout=WAIT)
    assert _held_warnings(logs) == []
