"""Thread mode: many idle actor threads woken at once, and many started at once.

A burst of asks to idle thread-mode actors wakes their threads a few at a
time (`StopPacer`), and spawning starts their threads without waiting for
each to run, at most `START_WIDTH` not yet running (`ThreadExecutor.start`).
Either way a deferred thread goes on as soon as an earlier one has begun,
not once it has finished: handlers and ``on_start`` hooks that wait for a
later actor's to begin still all run. An actor thread registers for
interpreter exit's join without sweeping every other thread's registration
each time (`_ActorThread`, CPython 3.11-3.12).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from actors import Actor, ActorSystem
from actors._core.executors import _REGISTER_O1, _SWEEP_MIN, START_WIDTH, STOP_WAKE_WIDTH
from tests.core.actors_for_tests import WAIT


class _WaitsForTheLast(Actor):
    """Its handler blocks until the last actor's handler began; answers what it saw and where ("ready": at once)."""

    def __init__(self, index: int, last: int, reached: threading.Event) -> None:
        super().__init__()
        self.index, self.last, self.reached = index, last, reached

    def on_receive(self, message: Any) -> Any:
        if message == "ready":
            return message
        if self.index == self.last:
            self.reached.set()
        return message, self.reached.wait(timeout=WAIT), threading.current_thread().name


class _StartWaitsForTheLast(Actor):
    """Its ``on_start`` blocks until the last actor's ``on_start`` has begun; records what it saw."""

    def __init__(self, index: int, last: int, reached: threading.Event, seen: list[Any]) -> None:
        super().__init__()
        self.index, self.last, self.reached, self.seen = index, last, reached, seen

    def on_start(self) -> None:
        if self.index == self.last:
            self.reached.set()
        self.seen.append((self.index, self.reached.wait(timeout=WAIT)))  # list.append is atomic

    def on_receive(self, message: Any) -> Any:
        return message


def test_a_burst_of_asks_to_idle_thread_actors_reaches_every_one_even_while_earlier_handlers_block(
    system: ActorSystem,
) -> None:
    count = STOP_WAKE_WIDTH * 2 + 5
    reached = threading.Event()
    refs = [system.spawn(_WaitsForTheLast, i, count - 1, reached, mode="thread", name=f"a{i}") for i in range(count)]
    assert [ref.ask("ready", timeout=WAIT) for ref in refs] == ["ready"] * count  # every thread idle now

    asks = [ref.ask(i, block=False) for i, ref in enumerate(refs)]

    answers = [ask.get(timeout=WAIT) for ask in asks]
    assert [(message, saw) for message, saw, _ in answers] == [(i, True) for i in range(count)]
    assert all(thread.startswith(f"a{i}-") for i, (_, _, thread) in enumerate(answers))


def test_spawning_more_thread_actors_than_start_at_once_starts_every_one_even_while_earlier_on_starts_block(
    system: ActorSystem,
) -> None:
    count = START_WIDTH * 2 + 5
    reached = threading.Event()
    seen: list[Any] = []

    refs = [system.spawn(_StartWaitsForTheLast, i, count - 1, reached, seen, mode="thread") for i in range(count)]

    assert [ref.ask(i, timeout=WAIT) for i, ref in enumerate(refs)] == list(range(count))
    assert sorted(seen) == [(i, True) for i in range(count)]


class _Where(Actor):
    """Answer the thread it runs on."""

    def on_receive(self, message: Any) -> Any:
        return threading.current_thread()


class _DaemonWhere(_Where):
    """Answer the thread it runs on, a daemon thread."""

    use_daemon_thread = True


_o1_only = pytest.mark.skipif(not _REGISTER_O1, reason="threading keeps no set of shutdown locks here (3.13+)")


@_o1_only
def test_starting_many_thread_actors_sweeps_the_set_exit_joins_a_few_times_not_once_a_thread(
    system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = threading._maintain_shutdown_locks  # type: ignore[attr-defined]
    sweeps = []

    def counted() -> None:
        sweeps.append(1)
        sweep()

    monkeypatch.setattr(threading, "_maintain_shutdown_locks", counted)
    count = _SWEEP_MIN * 5
    refs = [system.spawn(_Where, mode="thread") for _ in range(count)]
    threads = [ref.ask("where", timeout=WAIT) for ref in refs]  # every thread has run its start

    # threading's own start sweeps once a thread; the threshold doubles, and at least _SWEEP_MIN / 2 come between.
    assert len(sweeps) <= count // (_SWEEP_MIN // 2) + 1
    locks = threading._shutdown_locks  # type: ignore[attr-defined]
    assert all(thread._tstate_lock in locks for thread in threads)


@_o1_only
def test_a_thread_actor_is_among_what_interpreter_exit_joins_until_its_thread_is_joined_and_a_daemon_never(
    system: ActorSystem,
) -> None:
    locks = threading._shutdown_locks  # type: ignore[attr-defined]
    ref = system.spawn(_Where, mode="thread")
    daemon_ref = system.spawn(_DaemonWhere, mode="thread")
    thread, daemon_thread = ref.ask("where", timeout=WAIT), daemon_ref.ask("where", timeout=WAIT)
    lock = thread._tstate_lock
    assert not thread.daemon
    assert daemon_thread.daemon
    assert lock in locks
    assert daemon_thread._tstate_lock not in locks

    ref.stop(timeout=WAIT)
    thread.join(timeout=WAIT)

    assert not thread.is_alive()
    assert lock not in locks
