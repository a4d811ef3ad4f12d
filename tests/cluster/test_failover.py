"""The failover windows of a node's routing, each forced on the memory transport (see "Failover delivery" in
`actors.cluster.node`): mail of one sender to a peer that goes DOWN keeps its order and nothing is lost,
whatever the DOWN's batch interleaves with.

Each test drives the interleaving itself, never by timing: a send made from inside the DOWN's batch (the
restarted actor's ``restore``, which the batch waits for), a DOWN made at the moment a send appends to its
outbox (the `down_at_append` fixture), or a directory call that raises in the middle of the batch. Sends
are made by asking the sender on its own node, so nothing ticks the cluster meanwhile. Each test was seen
to fail on the code before its fix (its commit message says how).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from actors.cluster import Cluster, MemoryTransport, NodeStatus, wire
from actors.cluster.link import Outbox
from tests.cluster.agents import ON_RESTORE, HookedRecorder, Msg, Recorder, Sender, Watcher

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from actors._core import ActorRef
    from actors.cluster import RemoteRef
    from tests.cluster.conftest import Harness


class _WatchedLock:
    """A node's lock that notes when the thread `waiter` has to wait for it (`Interleaving`)."""

    def __init__(self, inner: Any, waiting: threading.Event) -> None:
        self.inner = inner
        self.waiter: threading.Thread | None = None
        self.waiting = waiting

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:  # noqa: FBT001, FBT002 - Lock's signature
        if self.inner.acquire(blocking=False):
            return True
        if not blocking:
            return False
        if threading.current_thread() is self.waiter:
            self.waiting.set()
        return bool(self.inner.acquire(True, timeout))

    def release(self) -> None:
        self.inner.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


class Interleaving:
    """Run `step` on another thread as far as it goes while the calling thread is paused (`run`).

    `run` returns once `step` has ended or has to wait for `node`'s lock (which
    the paused thread may hold): so `step` happens at the pause point if the
    code lets it, else at the first point after it where the lock is free.
    """

    def __init__(self, node: Any, step: Callable[[], None]) -> None:
        self._step = step
        self._progress = threading.Event()
        self._lock = _WatchedLock(node._lock, self._progress)
        node._lock = self._lock
        self._node = node
        self._thread: threading.Thread | None = None
        self._error: list[BaseException] = []
        self.ran = False

    def _target(self) -> None:
        try:
            self._step()
        except BaseException as exc:  # noqa: BLE001 - re-raised by `join`
            self._error.append(exc)
        finally:
            self._progress.set()

    def run(self) -> None:
        assert not self.ran, "an interleaving runs once"
        self.ran = True
        self._thread = threading.Thread(target=self._target, name="test-interleaved-step")
        self._lock.waiter = self._thread
        self._thread.start()
        assert self._progress.wait(30), "the interleaved step neither ended nor waited for the node's lock"

    def join(self) -> None:
        """Wait for the step to end; re-raise what it raised; give the node its own lock back."""
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the interleaved step did not end"
        self._node._lock = self._lock.inner
        if self._error:
            raise self._error[0]


@pytest.fixture
def down_at_append(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any, str, Callable[[], None]], Interleaving]]:
    """Arm `step` (a DOWN) to run when node `node` appends the first tell to actor `name` to an outbox.

    At that point the sender has chosen the outbox: a DOWN taking it now must
    not leave the tell in an outbox nobody sends or drains.
    """
    armed: list[tuple[Any, str, Interleaving]] = []
    append = Outbox.append

    def watched_append(outbox: Outbox, item: tuple[Any, ...], now: float) -> bool:
        for node, name, step in list(armed):
            if outbox.src == node.name and item[0] == wire.TELL and item[1] == name:
                armed.remove((node, name, step))
                step.run()
        return append(outbox, item, now)

    monkeypatch.setattr(Outbox, "append", watched_append)
    made: list[Interleaving] = []

    def arm(node: Any, name: str, step: Callable[[], None]) -> Interleaving:
        interleaving = Interleaving(node, step)
        armed.append((node, name, interleaving))
        made.append(interleaving)
        return interleaving

    yield arm
    for interleaving in made:
        interleaving.join()


def _declare_down(h: Harness, name: str) -> None:
    epoch = next(info.epoch for info in h.cluster.nodes() if info.name == name)
    assert h.cluster.directory.report(name, epoch, NodeStatus.DOWN)


def _keeper_on_b_and_sender_on_a(
    h: Harness, cls: type[Recorder] = Recorder, *, snapshot: bool = True
) -> tuple[RemoteRef, Any, ActorRef[Any], RemoteRef]:
    """Start a and b, a permanent `keeper` on b (its snapshot saved) and a `Sender` on a.

    Return the driver's ref to keeper, node a, the sender's own ref on a, and a's ref to keeper.
    """
    h.start("a", "b")
    keeper = h.cluster.spawn(cls, node="b", name="keeper", restart="permanent")
    h.cluster.spawn(Sender, node="a", name="snd")
    if snapshot:
        h.node_call("b", "save_snapshots")
        h.wait(lambda: h.cluster.directory.actor("keeper").snapshot is not None)
    node_a = h.transport.node("a")
    sender = node_a.system.lookup("snd")
    assert sender is not None
    return keeper, node_a, sender, node_a.ref("keeper", "b")


def _b_down_seen_by(h: Harness, node: Any) -> Callable[[], None]:
    """Return a step: the directory declares b DOWN (and restarts keeper on a), then `node` applies it."""

    def step() -> None:
        _declare_down(h, "b")
        node.poll_directory()

    return step


def _suspect_b(h: Harness) -> None:
    h.transport.pause("b")
    h.wait(lambda: [p.status for p in h.node_call("a", "peers") if p.name == "b"] == [NodeStatus.SUSPECT])


def test_mail_sent_while_a_node_applies_the_down_of_its_peer_does_not_pass_the_mail_queued_for_that_peer(
    memory: Harness,
) -> None:
    """Window 2: a holds b SUSPECT with Msg0 queued for it, then applies b's DOWN and the failover to a in
    one batch; Msg1, sent in the middle of that batch (the restarted keeper's restore), comes after Msg0."""
    h = memory
    keeper, node_a, sender, to_keeper = _keeper_on_b_and_sender_on_a(h, HookedRecorder)
    _suspect_b(h)
    assert sender.ask(("send", to_keeper, 1), timeout=10) == 1  # queued for b, SUSPECT: nothing flushed to it
    sent: list[int] = []
    ON_RESTORE.append(lambda: sent.append(sender.ask(("send", to_keeper, 1, 1), timeout=10)))
    try:
        _declare_down(h, "b")
        node_a.poll_directory()  # one batch: b DOWN, keeper restarted on a
    finally:
        ON_RESTORE.clear()
    assert sent == [1]  # sent between the batch's DOWN and its end
    h.wait(lambda: keeper.ask("count", timeout=10) >= 2)
    assert keeper.ask("log", timeout=10) == [Msg("snd", 0), Msg("snd", 1)]


def test_mail_appended_for_a_suspect_node_as_it_goes_down_is_routed_again_not_lost(
    memory: Harness, down_at_append: Any
) -> None:
    """Window 3: the DOWN of b (and the failover to a) comes as a's send appends Msg0 to b's outbox."""
    h = memory
    keeper, node_a, sender, to_keeper = _keeper_on_b_and_sender_on_a(h)
    _suspect_b(h)
    down = down_at_append(node_a, "keeper", _b_down_seen_by(h, node_a))
    assert sender.ask(("send", to_keeper, 1), timeout=10) == 1
    down.join()
    assert down.ran
    h.wait(lambda: keeper.ask("count", timeout=10) >= 1)
    assert keeper.ask("log", timeout=10) == [Msg("snd", 0)]
    assert h.cluster.where("keeper") == "a"


def test_the_first_mail_to_a_node_that_goes_down_as_it_is_appended_is_a_dead_letter_not_lost(
    memory: Harness, down_at_append: Any
) -> None:
    """Window 3 where a's outbox to b is new (a had not ticked since b joined): the send makes it and the
    DOWN comes as it appends Msg0. On an idle link Msg0 leaves in a frame at once, which b (hung) may have
    had: a dead letter on a (at most once), never an item left in an outbox nobody sends or drains."""
    h = memory
    h.start("a")
    h.cluster.spawn(Sender, node="a", name="snd")
    h.start("b")
    keeper = h.cluster.spawn(Recorder, node="b", name="keeper", restart="permanent")
    h.transport.pause("b")  # hung: what reaches it is lost
    node_a = h.transport.node("a")
    assert "b" not in node_a._out  # the case under test: no outbox to b yet
    sender = node_a.system.lookup("snd")
    assert sender is not None
    down = down_at_append(node_a, "keeper", _b_down_seen_by(h, node_a))
    assert sender.ask(("send", node_a.ref("keeper", "b"), 1), timeout=10) == 1
    down.join()
    assert down.ran
    assert node_a.dead_letter_count("node_down") == 1
    assert h.cluster.where("keeper") == "a"
    assert keeper.ask("log", timeout=10) == []


def test_mail_held_for_a_move_whose_source_goes_down_is_not_passed_by_mail_sent_in_the_same_batch(
    memory: Harness,
) -> None:
    """a holds keeper's mail for a move out of b (b's HOLD); b goes DOWN and keeper restarts on a in one
    batch: Msg0, held, comes before Msg1, sent in the middle of that batch (the restarted keeper's restore)."""
    h = memory
    keeper, node_a, sender, to_keeper = _keeper_on_b_and_sender_on_a(h, HookedRecorder)
    h.transport.pause("b")  # the fence a sends b is lost: b never releases the hold
    node_a.hold("keeper", "b", "b#1:move")  # as b's HOLD for a move would
    assert sender.ask(("send", to_keeper, 1), timeout=10) == 1  # held at a
    sent: list[int] = []
    ON_RESTORE.append(lambda: sent.append(sender.ask(("send", to_keeper, 1, 1), timeout=10)))
    try:
        _declare_down(h, "b")
        node_a.poll_directory()  # one batch: b DOWN (its hold ends), keeper restarted on a
    finally:
        ON_RESTORE.clear()
    assert sent == [1]
    h.wait(lambda: keeper.ask("count", timeout=10) >= 2)
    assert keeper.ask("log", timeout=10) == [Msg("snd", 0), Msg("snd", 1)]
    assert node_a._holding == {}


def test_mail_waiting_to_be_routed_again_when_a_hold_begins_for_it_is_held_before_mail_sent_after(
    memory: Harness,
) -> None:
    """b goes DOWN with Msg0 for keeper queued at a; in the same batch (while `other` restores on a) keeper's
    new home c starts moving it (its HOLD reaches a) and the sender sends Msg1: a holds both, Msg0 first."""
    h = memory
    h.start("a", "b", "c")
    keeper = h.cluster.spawn(Recorder, node="b", name="keeper", restart="permanent")  # the ring of a, c: on c
    h.cluster.spawn(HookedRecorder, node="b", name="other", restart="permanent")  # the ring of a, c: on a
    h.cluster.spawn(Sender, node="a", name="snd")
    h.node_call("b", "save_snapshots")
    h.wait(lambda: all(h.cluster.directory.actor(n).snapshot is not None for n in ("keeper", "other")))
    node_a = h.transport.node("a")
    sender = node_a.system.lookup("snd")
    assert sender is not None
    to_keeper = node_a.ref("keeper", "b")
    _suspect_b(h)
    assert sender.ask(("send", to_keeper, 1), timeout=10) == 1  # queued for b, SUSPECT

    def hold_then_send() -> None:
        node_a.hold("keeper", "c", "c#1:move")  # as c's HOLD for a move of keeper would
        sender.ask(("send", to_keeper, 1, 1), timeout=10)

    ON_RESTORE.append(hold_then_send)
    try:
        _declare_down(h, "b")
        node_a.poll_directory()  # one batch: b DOWN, keeper restarted on c, other on a (its restore: the above)
    finally:
        ON_RESTORE.clear()
    assert h.cluster.where("keeper") == "c"
    held = [(item[0], node_a._loads(item[2])) for item in node_a._holding["keeper"]]
    assert held == [(wire.TELL, Msg("snd", 0)), (wire.TELL, Msg("snd", 1))]
    node_a.release("keeper", "c", "c#1:move", 1)  # as c's RELEASE once it has keeper
    h.wait(lambda: keeper.ask("count", timeout=10) >= 2)
    assert keeper.ask("log", timeout=10) == [Msg("snd", 0), Msg("snd", 1)]


class _DirectoryFailing:
    """A node's directory whose next `times` calls of `method` raise, as calls to a directory out of reach do on Ray."""

    def __init__(self, directory: Any, times: int = 1, method: str = "actor") -> None:
        self._directory = directory
        self.times = times
        self._method = method

    @property
    def failed(self) -> bool:
        return self.times == 0

    def __getattr__(self, attribute: str) -> Any:
        call = getattr(self._directory, attribute)
        if attribute != self._method:
            return call

        def failing(*args: Any) -> Any:
            if self.times > 0:
                self.times -= 1
                msg = "the directory did not answer (injected)"
                raise ConnectionError(msg)
            return call(*args)

        return failing


def test_mail_of_a_down_node_is_routed_again_even_when_its_batch_raises_midway(memory: Harness) -> None:
    """A batch that raises after b's DOWN (keeper's restart asks a directory that fails) still routes the
    mail queued for b, at once: no later batch may ever come to do it, and later mail would wait behind it."""
    h = memory
    _, node_a, sender, to_keeper = _keeper_on_b_and_sender_on_a(h)
    _suspect_b(h)
    assert sender.ask(("send", to_keeper, 1), timeout=10) == 1  # queued for b
    directory = node_a._directory
    failing = _DirectoryFailing(directory)
    node_a._directory = failing
    try:
        _declare_down(h, "b")
        with pytest.raises(ConnectionError, match="injected"):
            node_a.poll_directory()  # b DOWN, then keeper's restart on a raises
    finally:
        node_a._directory = directory
    assert failing.failed
    local = node_a.system.lookup("keeper")  # restarted by the re-route, which found it not running yet
    assert local is not None
    assert local.ask("log", timeout=10) == [Msg("snd", 0)]
    assert sender.ask(("send", to_keeper, 1, 1), timeout=10) == 1  # not stuck behind mail never routed
    assert local.ask("log", timeout=10) == [Msg("snd", 0), Msg("snd", 1)]


def test_mail_whose_routing_again_raises_fails_and_the_mail_behind_it_is_still_routed(memory: Harness) -> None:
    """The re-route of b's first item raises too (keeper's restart, once more): that tell is a dead letter,
    and the ask queued behind it is routed and answered (not stranded, not hung)."""
    h = memory
    _, node_a, sender, to_keeper = _keeper_on_b_and_sender_on_a(h)
    _suspect_b(h)
    assert sender.ask(("send", to_keeper, 1), timeout=10) == 1  # queued for b
    sender.tell(("ask_later", to_keeper, "count"))
    assert sender.ask(("send", to_keeper, 0), timeout=10) == 0  # the sender has made its ask
    assert [item[0] for item in node_a._out["b"].items] == [wire.TELL, wire.ASK]  # both queued for b, in order
    directory = node_a._directory
    failing = _DirectoryFailing(directory, times=2)  # in the batch, then in Msg0's re-route
    node_a._directory = failing
    try:
        _declare_down(h, "b")
        with pytest.raises(ConnectionError, match="injected"):
            node_a.poll_directory()
    finally:
        node_a._directory = directory
    assert failing.failed
    assert node_a.dead_letter_count("node_down") == 1  # Msg0: it never reached an actor
    assert sender.ask(("answers",), timeout=30) == [(-1, 0)]  # the ask: routed, answered by the restarted keeper
    assert node_a._rerouting == {}


def test_a_held_watch_whose_routing_again_raises_is_sent_again_to_the_actors_home_not_dropped(
    memory: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a holds keeper's mail while it fences the old home b (keeper lives on c, `_relocate`), a WATCH of
    keeper among it; b goes DOWN and the WATCH's routing again raises (its outbox append, once): it is
    settled as undeliverable, so sent again to c, and the watcher hears of keeper's stop there."""
    h = memory
    h.start("a", "b", "c")
    keeper = h.cluster.spawn(Recorder, node="c", name="keeper")
    h.cluster.spawn(Watcher, node="a", name="w")
    node_a, node_c = h.transport.node("a"), h.transport.node("c")
    watcher = node_a.system.lookup("w")
    assert watcher is not None
    to_keeper = node_a.ref("keeper", "c")
    to_keeper.tell(Msg("w", 0))  # a knows keeper on c and has an outbox to c
    h.wait(lambda: keeper.ask("count", timeout=10) == 1)
    h.transport.pause("b")  # the fence a sends b is lost: the hold lasts until b's DOWN
    node_a._relocate("keeper", "b")  # as if keeper had moved from b to c without a holding for the move
    assert watcher.ask(("watch", to_keeper), timeout=10) is True
    assert [item[0] for item in node_a._holding["keeper"]] == [wire.WATCH]  # held at a
    append = Outbox.append
    raised: list[tuple[Any, ...]] = []

    def append_raising_once(outbox: Outbox, item: tuple[Any, ...], now: float) -> bool:
        if item[0] == wire.WATCH and not raised:
            raised.append(item)
            msg = "the outbox refused the item (injected)"
            raise RuntimeError(msg)
        return append(outbox, item, now)

    monkeypatch.setattr(Outbox, "append", append_raising_once)
    _declare_down(h, "b")
    node_a.poll_directory()  # b DOWN: the hold ends, the WATCH is routed again and that raises
    assert raised
    assert node_a._holding == {}
    assert node_a._rerouting == {}
    h.wait(lambda: "a" in node_c._watchers.get("keeper", set()))  # the WATCH reached keeper's home
    assert h.cluster.stop(keeper)
    h.wait(lambda: watcher.ask("events", timeout=10) == [("keeper", None)])


def test_on_a_real_clock_a_tick_that_raises_does_not_stop_the_memory_ticker() -> None:
    """A poll that raises (as a directory call can on Ray) is logged and the ticker goes on: the nodes still
    hear of later directory events, here a node that joins (and a batch that raised still drains, above)."""
    with Cluster(MemoryTransport()) as cluster:
        cluster.start_node("a")
        node_a = cluster.transport.node("a")
        directory = node_a._directory
        failing = _DirectoryFailing(directory, method="changes")
        node_a._directory = failing
        assert cluster.wait(lambda: failing.failed, timeout=10)  # a tick's poll raised
        node_a._directory = directory
        cluster.start_node("b")
        assert cluster.wait(lambda: [p.name for p in node_a.peers()] == ["b"], timeout=10)  # a later tick polled
        assert cluster.transport._ticker.is_alive()
