"""ActorSystem: spawning, names, the actor tree, shutdown, isolation and bad input."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest
from pykka import ActorDeadError

from actors import (
    MODES,
    Actor,
    ActorNameTakenError,
    ActorSystem,
    ModeError,
    NotAnActorError,
    PooledActor,
    SpawnContextError,
    SystemShutdownError,
    ThreadActor,
)
from actors._core.cell import STOP
from tests.core.actors_for_tests import WAIT, Gate, Recorder


class Node(Actor):
    """Spawns the children described by `tree` and logs its stop into `stops`."""

    def __init__(self, label: str, tree: dict[str, Any], stops: list[str], mode: str) -> None:
        super().__init__()
        self.label = label
        self.stops = stops
        for child_label, subtree in tree.items():
            self.spawn(Node, child_label, subtree, stops, mode, mode=mode)

    def on_stop(self) -> None:
        self.stops.append(self.label)


def test_names_are_unique_lookup_finds_them_and_stopped_actors_leave_the_registry(
    system: ActorSystem, mode: str
) -> None:
    ref = system.spawn(Recorder, mode=mode, name="unique")
    assert system.lookup("unique") is ref
    assert system.lookup("nobody") is None
    with pytest.raises(ActorNameTakenError, match="'unique'"):
        system.spawn(Recorder, mode=mode, name="unique")
    assert ref.ask(1) == 1  # the failed spawn left the system working
    ref.stop()
    assert system.lookup("unique") is None
    again = system.spawn(Recorder, mode=mode, name="unique")
    assert system.lookup("unique") is again


def test_shutdown_stops_children_before_parents_and_siblings_in_reverse_start_order(mode: str) -> None:
    stops: list[str] = []
    tree: dict[str, Any] = {"a1": {"a1x": {}, "a1y": {}}, "a2": {}}
    with ActorSystem("tree", dispatchers=2) as system:
        system.spawn(Node, "a", tree, stops, mode, mode=mode)
        system.spawn(Node, "b", {"b1": {}}, stops, mode, mode=mode)
    assert stops == ["b1", "b", "a2", "a1y", "a1x", "a1", "a"]


def test_stopping_a_parent_stops_its_children_first(system: ActorSystem, mode: str) -> None:
    stops: list[str] = []
    parent = system.spawn(Node, "p", {"c1": {"g": {}}, "c2": {}}, stops, mode, mode=mode)
    other = system.spawn(Recorder, mode=mode)
    assert parent.stop() is True
    assert stops == ["c2", "g", "c1", "p"]
    assert other.is_alive()


def test_shutdown_joins_every_thread_it_started_and_is_idempotent(mode: str) -> None:
    before = set(threading.enumerate())
    system = ActorSystem("joined", dispatchers=2)
    refs = [system.spawn(Recorder, mode=mode) for _ in range(20)]
    for ref in refs:
        ref.tell("x")
    system.shutdown(timeout=WAIT)
    system.shutdown()
    assert set(threading.enumerate()) <= before
    assert not any(ref.is_alive() for ref in refs)
    with pytest.raises(SystemShutdownError, match="joined"):
        system.spawn(Recorder, mode=mode)


def test_a_stop_from_the_system_preempts_queued_mail_which_becomes_dead_letters(system: ActorSystem, mode: str) -> None:
    # The system message a stopping parent (or shutdown) sends: posted while
    # the actor is busy, it takes effect after the current message.
    ref = system.spawn(Recorder, mode=mode)
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    ref.tell("left behind")
    pending = ref.ask("unanswered", block=False)
    ref._cell.post_system(STOP)
    gate.released.set()
    with pytest.raises(ActorDeadError, match="stopped before handling"):
        pending.get(timeout=WAIT)
    assert [d.message for d in system.dead_letters.recent()] == ["left behind", "unanswered"]


def test_shutdown_accounts_for_every_message_handled_or_dead_lettered(mode: str) -> None:
    log: list[Any] = []
    with ActorSystem("drained", dispatchers=2, dead_letters_kept=5000) as system:
        refs = [system.spawn(Recorder, log, mode=mode) for _ in range(4)]
        for i in range(2000):
            refs[i % 4].tell(i)
    dead = [d.message for d in system.dead_letters.recent()]
    assert sorted(log + dead) == list(range(2000))


def test_shutdown_from_an_actor_thread_is_refused(system: ActorSystem, mode: str) -> None:
    class Shutter(Actor):
        def on_receive(self, message: Any) -> None:
            self.actor_system.shutdown()

    ref = system.spawn(Shutter, mode=mode)
    with pytest.raises(SystemShutdownError, match="own threads"):
        ref.ask("now", timeout=WAIT)
    assert system.is_running


# Hang guard: before the fix this ask waited for itself for ever (pooled mode
# runs a blocking ask's handler inline, on the asking thread).
@pytest.mark.timeout(60)
def test_shutdown_from_a_handler_run_inline_for_a_blocking_ask_is_refused_at_once(
    system: ActorSystem, mode: str
) -> None:
    class Shutter(Actor):
        def on_receive(self, message: Any) -> None:
            self.actor_system.shutdown()

    ref = system.spawn(Shutter, mode=mode)
    with pytest.raises(SystemShutdownError, match=r"inside an actor's handler|own threads"):
        ref.ask("now")  # no timeout: the inline path in pooled mode
    assert system.is_running
    assert ref.is_alive()  # the refusal went to the asker; the actor serves on
    with pytest.raises(SystemShutdownError):
        ref.ask("again")


def test_a_shutdown_that_times_out_says_who_is_still_running_and_can_be_retried(mode: str) -> None:
    system = ActorSystem("stuck", dispatchers=1)
    ref = system.spawn(Recorder, mode=mode, name="stuck-one")
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    with pytest.raises(SystemShutdownError, match="stuck-one"):
        system.shutdown(timeout=0.05)
    gate.released.set()
    system.shutdown(timeout=WAIT)
    assert not ref.is_alive()


def test_two_systems_in_one_process_do_not_see_each_other(mode: str) -> None:
    with ActorSystem("one", dispatchers=1) as one, ActorSystem("two", dispatchers=1) as two:
        a = one.spawn(Recorder, mode=mode, name="same")
        b = two.spawn(Recorder, mode=mode, name="same")
        assert one.lookup("same") is a
        assert two.lookup("same") is b
        one.shutdown()
        assert b.ask("still here") == "still here"
        assert not a.is_alive()


def test_an_unknown_mode_a_non_actor_and_a_mode_conflict_are_clear_errors(system: ActorSystem) -> None:
    with pytest.raises(ModeError, match=r"'fibers'.*pooled"):
        system.spawn(Recorder, mode="fibers")
    with pytest.raises(NotAnActorError, match="pykka Actor subclass"):
        system.spawn(object)  # type: ignore[arg-type]
    with pytest.raises(NotAnActorError):
        system.spawn(lambda: None)  # type: ignore[arg-type]

    class Pinned(ThreadActor):
        pass

    class Pooled(PooledActor):
        pass

    with pytest.raises(ModeError, match="bound to mode 'thread'"):
        system.spawn(Pinned, mode="pooled")
    with pytest.raises(ModeError, match="bound to mode 'pooled'"):
        system.spawn(Pooled, mode="thread")
    with pytest.raises(TypeError, match="mailbox spec"):
        system.spawn(Recorder, mailbox="big")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty str"):
        system.spawn(Recorder, name="")
    assert system.spawn(Recorder).ask("fine") == "fine"


def test_an_actor_instantiated_directly_is_a_raw_instance_that_is_not_running(mode: str) -> None:
    raw = MODES[mode](1, 2, foo="bar")  # pykka allows any arguments
    recorder = Recorder()
    assert uuid.UUID(recorder.actor_urn).version == 4
    assert str(recorder) == f"Recorder ({recorder.actor_urn})"
    assert recorder.actor_urn != raw.actor_urn
    assert not recorder.actor_ref.is_alive()
    assert recorder.actor_stopped.is_set()
    assert recorder.on_receive("direct") == "direct"  # its methods can be unit-tested
    with pytest.raises(SpawnContextError, match=r"raw instance.*system.spawn\(Recorder"):
        recorder.actor_ref.tell("nobody handles this")
    with pytest.raises(SpawnContextError, match="has no timers"):
        _ = recorder.timers


def test_an_actor_may_take_a_proxy_of_itself_in_its_constructor(system: ActorSystem, mode: str) -> None:
    class SelfProxying(Actor):
        def __init__(self) -> None:
            super().__init__()
            self.me = self.actor_ref.proxy()
            self.child = self.spawn(Recorder)
            self.me_again = self.actor_ref.proxy()  # after building a child too
            self.foo = "bar"

        def foo_through_proxy(self) -> str:
            return self.foo

    ref = system.spawn(SelfProxying, mode=mode)
    assert ref.proxy().foo.get(timeout=WAIT) == "bar"
    assert ref.proxy().foo_through_proxy().get(timeout=WAIT) == "bar"
    assert ref.proxy().child.get(timeout=WAIT).ask("hi", timeout=WAIT) == "hi"


def test_an_init_that_forgets_super_and_one_that_raises_leave_no_trace(system: ActorSystem, mode: str) -> None:
    class Forgetful(Actor):
        def __init__(self) -> None:
            pass

    class Raising(Actor):
        def __init__(self) -> None:
            super().__init__()
            msg = "bad constructor"
            raise ValueError(msg)

    with pytest.raises(TypeError, match="super"):
        system.spawn(Forgetful, mode=mode, name="forgetful")
    with pytest.raises(ValueError, match="bad constructor"):
        system.spawn(Raising, mode=mode, name="raising")
    assert system.lookup("forgetful") is None
    assert system.lookup("raising") is None
    assert system.children() == []
    assert system.spawn(Recorder, mode=mode, name="raising").ask(1) == 1


def test_children_lists_top_level_actors_oldest_first(system: ActorSystem, mode: str) -> None:
    refs = [system.spawn(Recorder, mode=mode) for _ in range(3)]
    assert system.children() == refs
    refs[1].stop()
    assert system.children() == [refs[0], refs[2]]


def test_a_child_cannot_be_spawned_under_a_stopping_parent(system: ActorSystem, mode: str) -> None:
    results: list[Any] = []

    class LateParent(Actor):
        def on_stop(self) -> None:
            try:
                self.spawn(Recorder)
            except SystemShutdownError as exc:
                results.append(exc)

    system.spawn(LateParent, mode=mode).stop()
    assert len(results) == 1
    assert "stopping" in str(results[0])


def _run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_importing_the_package_registers_nothing_to_run_at_exit() -> None:
    stdout = _run_python(
        "import atexit\n"
        "registered = []\n"
        "register = atexit.register\n"
        "def spy(func, *args, **kwargs):\n"
        "    registered.append(f'{func.__module__}.{func.__qualname__}')\n"
        "    return register(func, *args, **kwargs)\n"
        "atexit.register = spy\n"
        "import actors, actors.routing, actors.state, actors.supervisor, patterns\n"
        "print([name for name in registered if name.startswith(('actors', 'patterns'))])\n"
    )
    assert stdout == "[]\n"


def test_the_first_system_registers_one_exit_hook_which_shuts_down_the_systems_left_running() -> None:
    # Not a thread-mode actor: as in pykka, its (non-daemon) thread keeps the
    # interpreter from reaching its exit hooks until it is stopped.
    stdout = _run_python(
        "import atexit\n"
        "from actors import Actor, ActorSystem\n"
        "class Tidy(Actor):\n"
        "    def __init__(self, name):\n"
        "        super().__init__()\n"
        "        self.name = name\n"
        "    def on_stop(self):\n"
        "        print('stopped', self.name, flush=True)\n"
        "before = atexit._ncallbacks()\n"
        "first = ActorSystem('first')\n"
        "after_first = atexit._ncallbacks()\n"
        "second = ActorSystem('second')\n"
        "print(after_first - before, atexit._ncallbacks() - after_first, flush=True)\n"
        "first.spawn(Tidy, 'a')\n"
        "second.spawn(Tidy, 'b', mode='asyncio')\n"
        "with ActorSystem('third'):\n"
        "    pass\n"
        "print('exiting', atexit._ncallbacks() - after_first, flush=True)\n"
    )
    lines = stdout.splitlines()
    assert lines[:2] == ["1 0", "exiting 0"]
    assert sorted(lines[2:]) == ["stopped a", "stopped b"]


# -- spawn_many: the bulk path ---------------------------------------------------


class _Tagged(Actor):
    """Records its constructor arguments; replies with them and its own id."""

    def __init__(self, tag: str, *, weight: int) -> None:
        super().__init__()
        self.args = (tag, weight)

    def on_receive(self, message: Any) -> Any:
        return (*self.args, id(self))


def test_spawn_many_starts_that_many_actors_in_order_each_its_own_instance(system: ActorSystem, mode: str) -> None:
    refs = system.spawn_many(_Tagged, 5, "t", weight=3, mode=mode)
    assert len(refs) == 5
    assert system.children() == refs  # top-level, in spawn order
    replies = [ref.ask("who", timeout=WAIT) for ref in refs]
    assert [reply[:2] for reply in replies] == [("t", 3)] * 5
    assert len({reply[2] for reply in replies}) == 5
    assert system.spawn_many(_Tagged, 0, "t", weight=3, mode=mode) == []
    for ref in refs:
        assert ref.stop(timeout=WAIT) is True


def test_spawn_many_checks_its_arguments_as_spawn_does(system: ActorSystem) -> None:
    with pytest.raises(ValueError, match="count must be >= 0"):
        system.spawn_many(Recorder, -1)
    with pytest.raises(TypeError, match="count must be an int"):
        system.spawn_many(Recorder, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ModeError):
        system.spawn_many(Recorder, 3, mode="nonsense")
    with pytest.raises(ValueError, match="unknown restart type"):
        system.spawn_many(Recorder, 3, restart="sometimes")
    assert system.children() == []


def test_spawn_many_actors_with_a_restart_type_are_restarted_from_the_same_arguments(
    system: ActorSystem, mode: str
) -> None:
    first, second = system.spawn_many(Recorder, 2, mode=mode, restart="permanent")
    assert first.ask(1, timeout=WAIT) == 1
    assert second.ask(2, timeout=WAIT) == 2
    second.tell("fail")  # a permanent child is restarted: a fresh instance, built again
    assert second.ask("get", timeout=WAIT) == []
    assert first.ask("get", timeout=WAIT) == [1]


class _FailsThird(Actor):
    built = 0

    def __init__(self) -> None:
        super().__init__()
        _FailsThird.built += 1  # not type(self): that is the class derived for the mode
        if _FailsThird.built == 3:
            msg = "the third fails on purpose"
            raise RuntimeError(msg)


@pytest.mark.parametrize("collector_on", [True, False])
def test_spawn_many_pauses_the_collector_only_while_it_runs_also_when_a_spawn_fails(
    system: ActorSystem, *, collector_on: bool
) -> None:
    was_on = gc.isenabled()
    _FailsThird.built = 0
    try:
        if collector_on:
            gc.enable()
        else:
            gc.disable()
        assert len(system.spawn_many(Recorder, 3)) == 3
        assert gc.isenabled() is collector_on
        with pytest.raises(RuntimeError, match="third"):
            system.spawn_many(_FailsThird, 5)
        assert gc.isenabled() is collector_on
        assert len(system.children()) == 5  # three Recorders, and the two built before the failure
    finally:
        if was_on:
            gc.enable()
        else:
            gc.disable()


class _HeldInConstructor(Actor):
    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        super().__init__()
        entered.set()
        assert release.wait(WAIT)


def test_spawn_many_calls_at_once_share_one_pause_and_the_last_one_out_ends_it(system: ActorSystem) -> None:
    assert gc.isenabled()
    entered, release = threading.Event(), threading.Event()
    spawned: list[Any] = []
    holder = threading.Thread(
        target=lambda: spawned.extend(system.spawn_many(_HeldInConstructor, 1, entered, release)), name="holder"
    )
    holder.start()
    try:
        assert entered.wait(WAIT)
        assert not gc.isenabled()  # paused while the holder's call runs
        assert len(system.spawn_many(Recorder, 2)) == 2
        assert not gc.isenabled()  # the holder's call is still under way
    finally:
        release.set()
        holder.join(WAIT)
    assert len(spawned) == 1
    assert gc.isenabled()
