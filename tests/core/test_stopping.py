"""Stopping many actors one `ref.stop()` at a time, and where a blocking stop runs.

Every ask sent before a stop is answered, every stop resolves, ``on_stop``
runs once per actor after the messages sent before it; a blocking stop of an
idle pooled actor runs its turn on the calling thread (as an inline ask),
one in any other mode on the actor's own thread; children of a parent
stopped that way still stop first; a child spawned into a stopping parent
is refused and leaves nothing behind.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pykka import ActorDeadError

from actors import Actor, ActorSystem, SystemShutdownError
from actors._core.executors import STOP_WAKE_WIDTH
from tests.core.actors_for_tests import WAIT

COUNT = 300  # enough that stops overlap the asks still in flight in every mode


class _Echo(Actor):
    """Replies with the message; records on which thread ``on_stop`` ran and in what order."""

    def __init__(self, stopped: list[Any], index: int = 0) -> None:
        super().__init__()
        self.stopped = stopped
        self.index = index
        self.handled: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.handled.append(message)
        return message

    def on_stop(self) -> None:
        # list.append is atomic: actors stop on several threads at once.
        self.stopped.append((self.index, threading.current_thread(), tuple(self.handled)))


class _WaitsForTheLastOnStop(Actor):
    """Its ``on_stop`` blocks until the last actor's ``on_stop`` has begun; records what it saw."""

    def __init__(self, index: int, last: int, reached: threading.Event, seen: list[Any]) -> None:
        super().__init__()
        self.index, self.last, self.reached, self.seen = index, last, reached, seen

    def on_receive(self, message: Any) -> Any:
        return message

    def on_stop(self) -> None:
        if self.index == self.last:
            self.reached.set()
        self.seen.append((self.index, self.reached.wait(timeout=WAIT), threading.current_thread().name))


def test_a_burst_of_stops_to_idle_thread_actors_reaches_every_one_even_while_earlier_on_stops_block(
    system: ActorSystem,
) -> None:
    # More actors than the stop pacer wakes at once (`StopPacer`): the ones
    # deferred are woken as earlier ones start, not as they finish, so an
    # on_stop that waits for a later actor's stop does not hold it up.
    count = STOP_WAKE_WIDTH * 2 + 5
    reached = threading.Event()
    seen: list[Any] = []
    refs = [
        system.spawn(_WaitsForTheLastOnStop, i, count - 1, reached, seen, mode="thread", name=f"w{i}")
        for i in range(count)
    ]
    assert [ref.ask(i, timeout=WAIT) for i, ref in enumerate(refs)] == list(range(count))  # all idle now
    stops = [ref.stop(block=False) for ref in refs]
    late = [ref.ask("late", block=False) for ref in refs]  # queued behind each stop: never handled

    assert [stop.get(timeout=WAIT) for stop in stops] == [True] * count
    # Every on_stop saw the last one begin, each on its own actor's thread (named after the actor).
    assert sorted((index, saw) for index, saw, _ in seen) == [(i, True) for i in range(count)]
    assert all(thread.startswith(f"w{index}-") for index, _, thread in seen)
    for future in late:
        with pytest.raises(ActorDeadError):
            future.get(timeout=WAIT)


@pytest.mark.parametrize("block", [True, False], ids=["blocking", "non-blocking"])
def test_stopping_many_actors_one_at_a_time_answers_every_ask_and_every_stop(
    system: ActorSystem, mode: str, *, block: bool
) -> None:
    stopped: list[Any] = []
    refs = [system.spawn(_Echo, stopped, i, mode=mode) for i in range(COUNT)]
    asks = [ref.ask(i, block=False) for i, ref in enumerate(refs)]
    stops = [ref.stop(block=block) for ref in refs]
    if not block:
        stops = [stop.get(timeout=WAIT) for stop in stops]

    assert stops == [True] * COUNT
    assert [ask.get(timeout=WAIT) for ask in asks] == list(range(COUNT))
    # on_stop once per actor, after the ask sent before the stop.
    assert sorted((index, handled) for index, _, handled in stopped) == [(i, (i,)) for i in range(COUNT)]
    assert all(ref.stop() is False for ref in refs)  # already dead
    with pytest.raises(ActorDeadError):
        refs[0].ask("late", timeout=WAIT)


def test_a_blocking_stop_runs_on_the_caller_for_an_idle_pooled_actor_else_on_the_actors_thread(
    system: ActorSystem, mode: str
) -> None:
    stopped: list[Any] = []
    ref = system.spawn(_Echo, stopped, mode=mode)
    ref.tell("before")
    assert ref.ask("sync", timeout=WAIT) == "sync"  # idle again: nothing queued

    assert ref.stop() is True

    [(_, thread, handled)] = stopped
    assert handled == ("before", "sync")
    assert (thread is threading.current_thread()) is (mode == "pooled")


def test_a_blocking_stop_with_a_timeout_never_runs_on_the_caller(system: ActorSystem) -> None:
    stopped: list[Any] = []
    ref = system.spawn(_Echo, stopped, mode="pooled")

    assert ref.stop(timeout=WAIT) is True

    [(_, thread, _)] = stopped
    assert thread is not threading.current_thread()


class _Parent(Actor):
    """Spawns `children` children in `child_mode`; records its own on_stop after theirs."""

    def __init__(self, stopped: list[Any], children: int, child_mode: str) -> None:
        super().__init__()
        self.stopped = stopped
        for i in range(children):
            self.spawn(_Echo, stopped, i, mode=child_mode)

    def on_stop(self) -> None:
        self.stopped.append(("parent", threading.current_thread(), ()))


def test_a_blocking_stop_of_a_parent_stops_its_children_first_whatever_their_mode(
    system: ActorSystem, mode: str
) -> None:
    stopped: list[Any] = []
    parent = system.spawn(_Parent, stopped, 5, mode, mode="pooled")
    assert parent.ask("sync", timeout=WAIT) is None  # built, children spawned

    assert parent.stop() is True

    assert [index for index, _, _ in stopped] == [4, 3, 2, 1, 0, "parent"]  # youngest first, parent last


class _SpawnsWhenStopping(Actor):
    """Tries to spawn a named child from its own on_stop, when it is stopping."""

    def __init__(self, outcome: list[BaseException]) -> None:
        super().__init__()
        self.outcome = outcome

    def on_stop(self) -> None:
        try:
            self.spawn(_Echo, [], name="late-child")
        except SystemShutdownError as exc:
            self.outcome.append(exc)


def test_a_child_spawned_into_a_stopping_parent_is_refused_and_leaves_nothing_behind(
    system: ActorSystem, mode: str
) -> None:
    outcome: list[BaseException] = []
    parent = system.spawn(_SpawnsWhenStopping, outcome, mode=mode)

    assert parent.stop(timeout=WAIT) is True

    [refused] = outcome
    assert "it is stopping" in str(refused)
    assert system.lookup("late-child") is None  # the name is free again
    assert system.spawn(_Echo, [], name="late-child").ask("ok", timeout=WAIT) == "ok"
