"""What only the in-process transport can show deterministically: partitions, the wire, the link layer."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import ManualClock
from actors.cluster import Cluster, MemoryTransport, NodeStatus, wire
from actors.cluster.directory import ActorEntry, Directory
from actors.cluster.link import Inbox, LinkConfig, Outbox
from actors.errors import MessageNotPicklableError, MigrationError, WireVersionError
from tests.cluster.agents import BLOCKED, GATE, BadSnapshot, Msg, Recorder, Sender, Where, check_log

if TYPE_CHECKING:
    from tests.cluster.conftest import Harness


def test_a_partition_holds_traffic_back_and_healing_delivers_it_in_order(memory: Harness) -> None:
    memory.start("a", "b")
    recorder = memory.cluster.spawn(Recorder, node="b", name="rec")
    sender = memory.cluster.spawn(Sender, node="a", name="snd")
    memory.transport.faults.partition({"a"}, {"b"})
    sender.ask(("send", recorder, 50), timeout=10)  # sent (and flushed into the cut link) before it returns
    memory.transport.advance(0.3)  # under suspect_after (0.5 s): nothing crosses, nobody is suspected
    assert recorder.ask("count", timeout=10) == 0
    assert memory.cluster.status("b") is NodeStatus.UP
    memory.transport.faults.heal()
    memory.wait(lambda: recorder.ask("count", timeout=10) == 50)
    assert [m.seq for m in recorder.ask("log", timeout=10)] == list(range(50))
    assert memory.transport.node("a").statistics().retransmits >= 1  # what the partition dropped was sent again


def test_a_long_partition_makes_the_far_side_suspect_then_down(memory: Harness) -> None:
    memory.start("a", "b")
    memory.transport.faults.partition({"a"}, {"b"})
    memory.transport.advance(0.0)
    start = memory.clock.now()
    memory.wait(lambda: memory.cluster.status("b") is not NodeStatus.UP)
    suspect_at = memory.clock.now() - start
    memory.wait(lambda: memory.cluster.status("b") is NodeStatus.DOWN or memory.cluster.status("a") is NodeStatus.DOWN)
    down_at = memory.clock.now() - start
    config = memory.transport.config
    assert config.suspect_after <= suspect_at < config.down_after <= down_at < config.down_after + 0.1


def test_delayed_frames_arrive_after_the_delay_on_the_manual_clock(memory: Harness) -> None:
    memory.start("a", "b")
    recorder = memory.cluster.spawn(Recorder, node="b", name="rec")
    sender = memory.cluster.spawn(Sender, node="a", name="snd")
    memory.transport.faults.set("a", "b", delay=0.25)
    sender.ask(("send", recorder, 5), timeout=10)
    memory.transport.advance(0.2)
    assert recorder.ask("count", timeout=10) == 0
    memory.wait(lambda: recorder.ask("count", timeout=10) == 5)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 1000),
    drop=st.floats(0, 0.5),
    duplicate=st.floats(0, 0.5),
    reorder=st.floats(0, 0.5),
    rounds=st.integers(1, 4),
)
def test_every_message_arrives_once_and_in_order_whatever_the_seeded_faults(
    seed: int, drop: float, duplicate: float, reorder: float, rounds: int
) -> None:
    transport = MemoryTransport(ManualClock(), seed=seed)
    with Cluster(transport) as cluster:
        cluster.start_node("a")
        cluster.start_node("b")
        recorder = cluster.spawn(Recorder, node="b", name="rec")
        sender = cluster.spawn(Sender, node="a", name="snd")
        transport.faults.set(drop=drop, duplicate=duplicate, reorder=reorder)
        for _ in range(rounds):
            sender.tell(("send", recorder, 40))
        assert cluster.wait(lambda: recorder.ask("count", timeout=10) >= 40 * rounds, timeout=30)
        assert [m.seq for m in recorder.ask("log", timeout=10)] == list(range(40)) * rounds


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 1000),
    drop=st.floats(0, 0.4),
    duplicate=st.floats(0, 0.4),
    reorder=st.floats(0, 0.4),
    moves=st.lists(st.sampled_from("abc"), min_size=1, max_size=4),
    count=st.integers(1, 60),
)
def test_migrations_under_faults_lose_reorder_and_duplicate_nothing_from_concurrent_senders(  # noqa: PLR0917
    seed: int, drop: float, duplicate: float, reorder: float, moves: list[str], count: int
) -> None:
    transport = MemoryTransport(ManualClock(), seed=seed)
    with Cluster(transport) as cluster:
        for name in "abc":
            cluster.start_node(name)
        recorder = cluster.spawn(Recorder, node="a", name="rec")
        senders = {name: cluster.spawn(Sender, node=name, name=f"s{name}") for name in "abc"}
        transport.faults.set(drop=drop, duplicate=duplicate, reorder=reorder)
        for sender in senders.values():
            sender.tell(("mixed", recorder, count))
        where = "a"
        for to in moves:
            if to != where:
                recorder, where = cluster.migrate(recorder, to=to), to
        assert cluster.wait(lambda: recorder.ask("count", timeout=10) >= 3 * count, timeout=60)
        answers = {f"s{name}": sender.ask(("answers",), timeout=30) for name, sender in senders.items()}
        check_log(recorder.ask("log", timeout=10), answers, count)
        assert recorder.ask("count", timeout=10) == 3 * count
        assert cluster.where("rec") == where


def _fenced_waiting_for_its_take(node: Any, name: str) -> bool:
    """Node `node`'s migration of `name` has every fence and waits for its snapshot on the actor's thread."""
    m = node._migrations.get(name)
    return m is not None and m.stage == "fencing" and not m.waiting and not m.taken


def test_a_migration_ships_the_mail_not_yet_handled_instead_of_draining_it(memory: Harness) -> None:
    memory.start("a", "b")
    recorder = memory.cluster.spawn(Recorder, node="a", name="rec")
    GATE.clear()
    BLOCKED.clear()
    recorder.tell("block")  # the message in hand when the migration takes it
    assert BLOCKED.wait(10)  # in hand, not queued: else the snapshot comes first and ships it
    for i in range(10):
        recorder.tell(Msg("d", i))  # queued behind it on node a
    moved: list[object] = []
    mover = threading.Thread(target=lambda: moved.append(memory.cluster.migrate(recorder, to="b")))
    mover.start()
    source = memory.transport.node("a")
    try:
        memory.wait(lambda: _fenced_waiting_for_its_take(source, "rec"))
    finally:
        GATE.set()  # the message in hand ends; then the snapshot and the rest of the mailbox go to b
        mover.join()
    assert moved
    memory.wait(lambda: recorder.ask("count", timeout=10) == 10)
    assert recorder.ask("log", timeout=10) == [Msg("d", i) for i in range(10)]
    assert recorder.ask("moves", timeout=10) == [1] * 10  # all handled on b, after the restore


def test_a_migration_whose_snapshot_raises_leaves_the_actor_where_it_was_with_all_its_mail(memory: Harness) -> None:
    memory.start("a", "b", "c")
    recorder = memory.cluster.spawn(BadSnapshot, node="a", name="rec")
    senders = [memory.cluster.spawn(Sender, node=name, name=f"s{name}") for name in "bc"]
    for sender in senders:
        sender.tell(("mixed", recorder, 60))
    with pytest.raises(MigrationError, match=r"no snapshot today.*stays on 'a'"):
        memory.cluster.migrate(recorder, to="b")
    memory.wait(lambda: recorder.ask("count", timeout=10) == 120)
    answers = {f"s{name}": sender.ask(("answers",), timeout=30) for name, sender in zip("bc", senders, strict=True)}
    check_log(recorder.ask("log", timeout=10), answers, 60)
    assert memory.cluster.where("rec") == "a"
    assert recorder.ask("moves", timeout=10) == [0] * 120


def test_a_migration_missing_a_fence_is_given_up_and_every_held_message_is_delivered(memory: Harness) -> None:
    memory.start("a", "b", "c")
    recorder = memory.cluster.spawn(Recorder, node="a", name="rec")
    sender = memory.cluster.spawn(Sender, node="c", name="sc")
    memory.transport.faults.partition({"a", "b"}, {"c"})  # c never gets the HOLD in time
    with pytest.raises(MigrationError, match=r"fences of nodes \['c'\].*stays on 'a'"):
        memory.cluster.migrate(recorder, to="b", timeout=0.2)
    sender.tell(("mixed", recorder, 30))
    memory.transport.faults.heal()  # the HOLD, then the RELEASE, reach c in order: it holds nothing for good
    memory.wait(lambda: recorder.ask("count", timeout=10) == 30)
    check_log(recorder.ask("log", timeout=10), {"sc": sender.ask(("answers",), timeout=30)}, 30)
    assert memory.cluster.where("rec") == "a"
    assert memory.transport.node("c")._holding == {}


def test_a_late_poll_bringing_an_older_location_does_not_send_mail_back_to_the_old_home(memory: Harness) -> None:
    """Ray polls the directory without blocking and applies the answer when it comes: maybe after a RELEASE."""
    memory.start("a", "b", "c")
    recorder = memory.cluster.spawn(Recorder, node="b", name="rec")
    sender = memory.cluster.spawn(Sender, node="a", name="sa")
    node_a = memory.transport.node("a")
    recorder = memory.cluster.migrate(recorder, to="c")
    memory.wait(lambda: "rec" not in node_a._holding)  # the RELEASE (c, incarnation 1) is in
    # A poll asked before the move and answered after the RELEASE: it has the spawn's event (b, incarnation 0).
    node_a.apply(node_a.seen + 1, [("actor", "rec", "b", 0, None)])
    assert node_a._locations["rec"] == "c"
    sender.tell(("mixed", recorder, 30))
    memory.wait(lambda: recorder.ask("count", timeout=10) == 30)
    check_log(recorder.ask("log", timeout=10), {"sa": sender.ask(("answers",), timeout=30)}, 30)


def test_a_frame_of_a_newer_minor_version_is_accepted_and_an_unknown_major_refused() -> None:
    frame = wire.Frame("a", 1, "b", 1, 0, ((wire.TELL, "x", b""),))
    newer = pickle.dumps(((1, 9), "a", 1, "b", 1, 0, frame.items))
    assert wire.decode(newer).version == (1, 9)
    assert wire.decode(wire.encode(frame)) == frame
    with pytest.raises(WireVersionError, match="major version"):
        wire.decode(pickle.dumps(((2, 0), "a", 1, "b", 1, 0, ())))


def test_the_receiver_reorders_frames_and_drops_duplicates() -> None:
    out = Outbox("a", 1, "b", LinkConfig())
    frames = []
    for i in range(4):
        out.append((wire.TELL, "x", bytes([i])), 0.0)
        frames.append(wire.decode(out.take(1.0, 0) or b""))
    inbox = Inbox()
    got: list[int] = []
    for frame in (frames[2], frames[0], frames[0], frames[3], frames[1], frames[2]):
        inbox.accept(frame, lambda f: got.append(f.seq))
    assert got == [1, 2, 3, 4]
    assert inbox.duplicates == 2
    out.acked(3, 1.0)
    assert list(out.unacked) == [4]


def test_an_outbox_flushes_at_once_when_the_link_is_idle_or_all_it_sent_is_acknowledged() -> None:
    """Nagle's rule: a lone item on an idle link goes at once, a busy link batches until acknowledged."""
    config = LinkConfig(idle_after=0.5, flush_after=1.0)
    out = Outbox("a", 1, "b", config)
    assert out.append((wire.TELL, "x", b"1"), 0.0)  # nothing sent yet: idle
    assert out.take(0.0, 0, force=True) is not None
    out.sent(0.0)
    assert not out.append((wire.TELL, "x", b"2"), 0.1)  # frame 1 unacknowledged and sent 0.1 s ago: batch
    assert not out.append((wire.TELL, "x", b"3"), 0.1)  # not the first item waiting: batch
    assert out.take(0.2, 0, force=True) is not None
    out.sent(0.2)
    out.acked(2, 0.2)  # every frame acknowledged (the reply to an ask carries this)
    assert out.append((wire.TELL, "x", b"4"), 0.21)  # so the next lone item goes at once, though sent 0.01 s ago
    assert out.take(0.21, 0, force=True) is not None
    out.sent(0.21)
    assert out.append((wire.TELL, "x", b"5"), 0.9)  # unacknowledged, but idle for 0.69 s: at once


def test_an_outbox_counts_idle_time_from_the_end_of_its_last_send() -> None:
    """A send slower than `idle_after` (a Ray call) does not make the next item of a stream look idle."""
    out = Outbox("a", 1, "b", LinkConfig(idle_after=0.5, flush_after=1.0))
    out.append((wire.TELL, "x", b"1"), 0.0)
    assert out.take(0.0, 0, force=True) is not None
    out.sent(0.8)  # the transport took 0.8 s to take the frame
    assert not out.append((wire.TELL, "x", b"2"), 0.81)  # frame 1 in flight, last send ended 0.01 s ago: batch
    assert out.take(0.9, 0) is None  # and the tick leaves it for `flush_after`
    assert out.take(1.81, 0) is not None


def test_an_outbox_sends_nothing_again_while_the_acks_advance() -> None:
    """A receiver that is behind but acknowledging gets no retransmits; one whose acks stop gets them."""
    out = Outbox("a", 1, "b", LinkConfig(retransmit_after=0.2))
    for i in range(3):
        out.append((wire.TELL, "x", bytes([i])), i * 0.1)
        assert out.take(i * 0.1, 0, force=True) is not None
    out.acked(1, 0.25)  # frame 1 reached it: the link makes progress
    assert out.due_again(0.3) == []  # frames 2 and 3 are old, but acks came 0.05 s ago
    assert out.retransmits == 0
    assert len(out.due_again(0.45)) == 2  # no ack for 0.2 s: both sent again
    assert out.due_again(0.5) == []  # and not again before their own `retransmit_after`
    assert out.retransmits == 2


def test_a_message_that_does_not_pickle_fails_the_tell_naming_it(memory: Harness) -> None:
    memory.start("a")
    recorder = memory.cluster.spawn(Recorder, node="a", name="rec")
    with pytest.raises(MessageNotPicklableError, match=r"message to 'rec'.*does not pickle"):
        recorder.tell(lambda: None)


def test_importing_actors_and_actors_cluster_does_not_import_ray() -> None:
    code = "import sys, actors, actors.cluster; assert 'ray' not in sys.modules, 'ray was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_ray_asking_for_the_ray_transport_raises_cluster_unavailable_naming_the_extra() -> None:
    """`actors.cluster.RayTransport` on a machine without Ray: `ClusterUnavailableError`, which says what to install.

    Run in a fresh interpreter where ``import ray`` fails (a None entry in
    `sys.modules` is how Python marks a module as unimportable).
    """
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import actors.cluster\n"
        "from actors.errors import ClusterUnavailableError\n"
        "try:\n"
        "    actors.cluster.RayTransport\n"
        "except ClusterUnavailableError as exc:\n"
        "    assert isinstance(exc, ConnectionError), type(exc).__mro__\n"
        "    assert \"pip install 'troupe-actors[ray]'\" in str(exc), str(exc)\n"
        "    assert 'MemoryTransport' in str(exc), str(exc)\n"
        "    assert isinstance(exc.__cause__, ImportError), repr(exc.__cause__)\n"
        "else:\n"
        "    raise SystemExit('no ClusterUnavailableError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_migration_target_that_dies_after_handling_the_shipped_mail_does_not_have_it_run_again_at_the_source(
    memory: Harness,
) -> None:
    """At most once: b ran the shipped mail, then died before its MOVED reached a; a restarts it from the snapshot."""
    memory.start("a", "b")
    keeper = memory.cluster.spawn(Recorder, node="a", name="keeper", restart="permanent")
    keeper.tell("kept")
    assert keeper.ask("count", timeout=10) == 1
    GATE.clear()
    BLOCKED.clear()
    keeper.tell("block")  # the message in hand: the five behind it are shipped with the actor
    assert BLOCKED.wait(10)  # in hand, not queued: else the snapshot comes first and ships it
    for i in range(5):
        keeper.tell(Msg("d", i))
    errors: list[Exception] = []

    def move() -> None:
        try:
            memory.cluster.migrate(keeper, to="b")
        except MigrationError as exc:
            errors.append(exc)

    mover = threading.Thread(target=move)
    mover.start()
    source, target = memory.transport.node("a"), memory.transport.node("b")
    try:
        memory.wait(lambda: _fenced_waiting_for_its_take(source, "keeper"))
        memory.transport.faults.set("b", "a", drop=1.0)  # b's MOVED (and every ack) never reaches a
    finally:
        GATE.set()
    try:

        def handled_there() -> bool:
            moved = target.system.lookup("keeper")
            return moved is not None and moved.ask("count", timeout=10) == 6

        memory.wait(handled_there)
    finally:
        memory.cluster.crash_node("b")
        mover.join()
    assert len(errors) == 1
    assert "DOWN" in str(errors[0])
    assert "at most once" in str(errors[0])
    memory.wait(lambda: "keeper" in source.running_names())
    assert memory.cluster.where("keeper") == "a"
    assert keeper.ask("log", timeout=10) == ["kept"]  # not the five b handled: they are not run twice
    assert source.dead_letter_count("node_down") == 5


def test_an_actor_migrated_to_a_node_already_down_is_placed_again_from_the_snapshot_saved_before_the_move() -> None:
    """The source records the move after its target died: the entry must not stay on a DOWN node, stateless."""
    directory = Directory()
    directory.register("a")
    b = directory.register("b")
    directory.register("c")
    directory.add_actor(ActorEntry("keeper", "a", 0, b"spec", "permanent"))
    directory.save_snapshot("keeper", 0, b"state")
    assert directory.report("b", b, NodeStatus.DOWN)
    directory.add_actor(ActorEntry("keeper", "b", 1, b"spec", "permanent"))  # the move to b, finished late
    entry = directory.actor("keeper")
    assert entry is not None
    assert (entry.node in {"a", "c"}, entry.incarnation, entry.snapshot) == (True, 2, b"state")
    assert directory.changes(0)[1][-1] == ("actor", "keeper", entry.node, 2, "restart")


def test_an_old_home_forwards_stragglers_for_the_grace_period_then_sends_them_where_the_directory_says(
    memory: Harness,
) -> None:
    memory.start("a", "b")
    recorder = memory.cluster.migrate(memory.cluster.spawn(Recorder, node="a", name="rec"), to="b")
    old = memory.transport.node("a")
    assert old.forwarding() == {"rec": "b"}
    ends = memory.clock.now() + memory.transport.config.forward_for  # the move ended before `migrate` returned
    while memory.clock.now() < ends - 0.2:  # in steps: one 10 s jump would look like silence to the detector
        memory.transport.advance(0.1)
    assert old.forwarding() == {"rec": "b"}
    memory.transport.advance(0.1)
    memory.transport.advance(0.1)
    assert old.forwarding() == {}
    # A straggler from a node whose view lagged, arriving at the old home after the grace period.
    epoch = memory.cluster.directory.register("z")
    old.poll_directory()
    stale = Outbox("z", epoch, "a", LinkConfig())
    stale.append((wire.TELL, "rec", pickle.dumps("straggler")), memory.clock.now())
    old.receive(stale.take(memory.clock.now(), 0, force=True) or b"")
    memory.wait(lambda: recorder.ask("count", timeout=10) == 1)
    assert recorder.ask("log", timeout=10) == ["straggler"]
    assert old.forwarding() == {}


def test_a_node_holding_for_a_move_it_saw_in_the_directory_lets_go_when_the_new_home_dies(memory: Harness) -> None:
    """d joined mid-move, fenced its mail to the old home, and waits for the new home's RELEASE: b dies first."""
    memory.start("a", "b", "c")
    keeper = memory.cluster.spawn(Recorder, node="a", name="keeper", restart="permanent")
    memory.transport.faults.set("c", "a", drop=1.0)  # the move waits for c's fence
    mover = threading.Thread(target=lambda: memory.cluster.migrate(keeper, to="b"))
    mover.start()
    try:
        memory.wait(lambda: "keeper" in memory.transport.node("a")._migrations)  # d is not among its peers
        memory.start("d")
        sender = memory.cluster.spawn(Sender, node="d", name="sd")
        memory.transport.faults.set("d", "a", delay=1.0)  # d's fence reaches a after b is gone
        sender.ask(("send", keeper, 1), timeout=10)  # d locates it on a
    finally:
        memory.transport.faults.set("c", "a")
        mover.join()
    node_d = memory.transport.node("d")
    memory.wait(lambda: "keeper" in node_d._holding)  # d saw the move: it holds, its fence is on the way
    memory.cluster.crash_node("b")  # before it could answer the fence
    sender.ask(("send", keeper, 5, 1), timeout=10)  # held at d
    memory.wait(lambda: memory.cluster.where("keeper") in {"a", "c", "d"})
    memory.wait(lambda: node_d._holding == {})  # its RELEASE will never come: b's DOWN ends the hold
    memory.wait(lambda: [m.seq for m in keeper.ask("log", timeout=10) if m.seq > 0] == [1, 2, 3, 4, 5])


def test_a_repoint_naming_an_older_incarnation_is_ignored_and_one_from_a_1_2_node_applies(memory: Harness) -> None:
    """The asker side of REPOINT (wire 1.3): of two notices for one ask, the one naming the newer incarnation wins."""
    h = memory
    h.start("a", "b", "c", "d")
    h.cluster.spawn(Recorder, node="b", name="far")
    a = h.transport.node("a")
    h.transport.faults.set("a", "b", drop=1.0)  # the ask stays pending
    future = a.ref("far", "b").ask("hello", block=False)
    (corr,) = [c for c, (f, _) in a._pending.items() if f is future]
    repoint = a._handle_migration
    repoint((wire.REPOINT, corr, "d", 2), "c")  # from the second hop, first
    repoint((wire.REPOINT, corr, "c", 1), "b")  # from the first hop, late: stale
    assert a._pending[corr][1] == "d"
    repoint((wire.REPOINT, corr, "c"), "b")  # a 1.2 node's, without the incarnation: applied as before
    assert a._pending[corr][1] == "c"
    h.transport.faults.set("a", "b")


def test_on_a_real_clock_an_untimed_cross_node_ask_may_run_on_its_askers_thread_and_keeps_the_order() -> None:
    """The memory transport on a real clock delivers a frame on the thread that sends it when it can.

    Then an untimed ask to an idle pooled actor runs its handler on the asker's
    thread, after the delivery (the core's inline ask, across nodes: no thread
    hand-off). A timed one never does (a running handler cannot be abandoned).
    Either way the sender's earlier tells come first, and a handler running
    inline may ask another node in turn.
    """
    with Cluster(MemoryTransport()) as cluster:
        for node in ("a", "b", "c"):
            cluster.start_node(node)
        far = cluster.spawn(Where, node="b", name="far")
        third = cluster.spawn(Where, node="c", name="third")
        asker = cluster.spawn(Where, node="a", name="asker")
        untimed = [asker.ask(("ask", far, i), timeout=10) for i in range(50)]
        assert [reply[0] for reply, _ in untimed] == list(range(50))
        # Inline unless the ticker held the delivery at that moment (then it goes the pool's way).
        assert any(handler == thread for (_, handler), thread in untimed)
        timed = [asker.ask(("ask_timed", far, i), timeout=10) for i in range(20)]
        assert [reply[0] for reply, _ in timed] == list(range(20))
        assert all(handler != thread for (_, handler), thread in timed)
        (nested, _), _ = asker.ask(("ask", far, ("ask", third, "deep")), timeout=10)
        assert nested[0] == "deep"
        recorder = cluster.spawn(Recorder, node="b", name="rec")
        sender = cluster.spawn(Sender, node="a", name="snd")
        log = sender.ask(("send_then_ask", recorder, 200), timeout=30)
        assert [m.seq for m in log] == list(range(200))


def test_a_node_is_idle_only_while_no_tick_is_due_soon(memory: Harness) -> None:
    """`Node.idle`, which lets the real-clock ticker wait long: mail waiting in an outbox or a delayed frame is work."""
    memory.start("a", "b")
    recorder = memory.cluster.spawn(Recorder, node="b", name="rec")
    sender = memory.cluster.spawn(Sender, node="a", name="snd")
    node = memory.transport.node("a")
    memory.wait(node.idle)
    sender.ask(("send", recorder, 3), timeout=10)  # the first is flushed at once; the others wait behind its ack
    assert not node.idle()
    memory.wait(lambda: recorder.ask("count", timeout=10) == 3)
    assert node.idle()  # frames sent and not yet acknowledged are no reason to tick sooner
    memory.transport.faults.set("a", "b", delay=0.25)
    sender.ask(("send", recorder, 1, 3), timeout=10)
    memory.transport.advance(0.0)
    assert not node.idle()  # a delayed frame is sent by a tick
    memory.wait(lambda: recorder.ask("count", timeout=10) == 4)
    memory.transport.faults.set("a", "b")
    memory.transport.advance(0.3)  # the frames (heartbeats) delayed before the fault was cleared go out
    assert node.idle()


def test_on_a_real_clock_the_idle_ticker_waits_long_and_mail_left_for_it_wakes_it() -> None:
    """An idle cluster's ticker waits a quarter of a heartbeat, not a tick; a send leaving mail for it wakes it.

    The heartbeat here is an hour long, so the ticker's idle wait is 15
    minutes: the tells that wait in the outbox behind the first one's ack
    arrive only because the send that queued them woke the ticker.
    """
    hour = 3600.0
    config = LinkConfig(heartbeat_every=hour, retransmit_after=hour, suspect_after=hour, down_after=2 * hour)
    transport = MemoryTransport(config=config)
    with Cluster(transport) as cluster:
        cluster.start_node("a")
        cluster.start_node("b")
        recorder = cluster.spawn(Recorder, node="b", name="rec")
        sender = cluster.spawn(Sender, node="a", name="snd")
        assert cluster.wait(lambda: transport._wait.idle, timeout=10), "the idle ticker should wait long"
        for first in (0, 300):
            sender.ask(("send", recorder, 300, first), timeout=10)
            expected = first + 300
            assert cluster.wait(lambda: recorder.ask("count", timeout=10) == expected, timeout=30)  # noqa: B023
            assert cluster.wait(lambda: transport._wait.idle, timeout=10)  # idle again once it is all sent
        assert [m.seq for m in recorder.ask("log", timeout=10)] == list(range(600))


_PLACEMENTS = pytest.mark.parametrize("colocate", [True, False], ids=["one-cpu", "os-placed"])


@_PLACEMENTS
def test_on_a_real_clock_the_threads_a_memory_transport_starts_share_one_cpu_and_the_callers_placement_is_kept(
    colocate: bool,  # noqa: FBT001 - the parameter
) -> None:
    """`MemoryTransport(colocate=True)`: the ticker and each node's dispatchers and timer thread run on one CPU.

    The caller's own affinity is put back once the node has started; with
    ``colocate=False``, or on a `ManualClock`, nothing is placed.
    """
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else set()
    if len(allowed) < 2:
        pytest.skip("placement needs os.sched_setaffinity and two CPUs this process may use")
    assert MemoryTransport(ManualClock()).cpu is None
    transport = MemoryTransport(colocate=colocate)
    assert transport.cpu == (min(allowed) if colocate else None)
    with Cluster(transport) as cluster:
        cluster.start_node("pa")
        cluster.start_node("pb")
        assert os.sched_getaffinity(0) == allowed
        ours = ("troupe-pa-", "troupe-pb-", "troupe-timers-pa", "troupe-timers-pb", "troupe-memory-ticker")
        threads = [t for t in threading.enumerate() if t.name.startswith(ours)]
        assert len(threads) == 7  # the ticker, two dispatchers and a timer thread a node
        expected = {transport.cpu} if colocate else allowed
        assert {t.name: os.sched_getaffinity(t.native_id or 0) for t in threads} == dict.fromkeys(
            [t.name for t in threads], expected
        )


@_PLACEMENTS
def test_on_a_real_clock_a_timed_cross_node_ask_times_out_while_its_handler_blocks_and_the_actor_answers_after(
    colocate: bool,  # noqa: FBT001 - the parameter
) -> None:
    """pykka's contract for ``ask(timeout=t)``: `Timeout` after ~t even if the handler blocks (never run inline)."""
    with Cluster(MemoryTransport(colocate=colocate)) as cluster:
        cluster.start_node("a")
        cluster.start_node("b")
        recorder = cluster.spawn(Recorder, node="b", name="rec")
        sender = cluster.spawn(Sender, node="a", name="snd")
        assert sender.ask(("ask_within", recorder, "count", 10), timeout=30) == 0
        GATE.clear()
        BLOCKED.clear()
        try:
            assert sender.ask(("ask_within", recorder, "block", 0.2), timeout=30) == "Timeout"
            assert BLOCKED.wait(10)  # the ask reached the handler, which held it
        finally:
            GATE.set()
        assert sender.ask(("ask_within", recorder, Msg("snd", 0), 10), timeout=30) == 1


@_PLACEMENTS
@pytest.mark.parametrize("end", ["stop", "crash"])
def test_on_a_real_clock_a_timed_cross_node_ask_whose_reply_is_lost_fails_when_the_callee_node_ends(
    colocate: bool,  # noqa: FBT001 - the parameter
    end: str,
) -> None:
    """The callee node stops or crashes while the reply is in flight: the ask fails with `ActorDeadError`, no hang."""
    with Cluster(MemoryTransport(colocate=colocate)) as cluster:
        cluster.start_node("a")
        cluster.start_node("b")
        recorder = cluster.spawn(Recorder, node="b", name="rec")
        sender = cluster.spawn(Sender, node="a", name="snd")
        assert sender.ask(("ask_within", recorder, "count", 10), timeout=30) == 0
        cluster.transport.faults.set("b", "a", drop=1.0)  # the reply (and b's heartbeats) never reach a
        sender.ask(("ask_later", recorder, Msg("snd", 0)), timeout=30)
        assert cluster.wait(lambda: recorder.ask("count", timeout=10) == 1, timeout=30)  # b has answered it
        if end == "stop":
            cluster.stop_node("b")
        else:
            cluster.crash_node("b")
        assert sender.ask(("answers",), timeout=60) == [(-1, "ActorDeadError")]  # not "Timeout" after 30 s
