"""The shared cluster suite: every test runs over MemoryTransport and over Ray."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

import pykka
import pytest

from actors.cluster import NodeStatus, RemoteRef
from actors.errors import (
    ActorNameTakenError,
    MessageNotPicklableError,
    MigrationError,
    NodeNameTakenError,
    UnknownNodeError,
)
from tests.cluster.agents import Blob, Echo, Msg, NoSnapshot, Recorder, Sender, Watcher, check_log

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.cluster.conftest import Harness


def seqs(log: list[Msg], sender: str) -> list[int]:
    return [m.seq for m in log if isinstance(m, Msg) and m.sender == sender]


def test_an_actor_on_another_node_answers_asks_and_proxy_calls(harness: Harness) -> None:
    harness.start("a", "b")
    echo = harness.cluster.spawn(Echo, node="b", name="echo")
    assert isinstance(echo, RemoteRef)
    assert echo.ask("hello", timeout=10) == "hello"
    assert echo.proxy().add(2, 3).get(timeout=10) == 5
    sender = harness.cluster.spawn(Sender, node="a", name="asker")
    assert sender.ask(("ask", echo, "via a"), timeout=10) == "via a"
    with pytest.raises(ValueError, match="boom"):
        echo.ask(("fail", "boom"), timeout=10)
    assert harness.cluster.lookup("echo") == echo
    assert harness.cluster.where("echo") == "b"


def test_a_message_larger_than_a_ray_call_argument_crosses_intact_both_ways(harness: Harness) -> None:
    # Over 64 KB a frame goes to Ray as parts of one call (RayTransport's _PART_BYTES): joined in order.
    harness.start("a", "b")
    echo = harness.cluster.spawn(Echo, node="b", name="echo")
    sender = harness.cluster.spawn(Sender, node="a", name="asker")
    big = bytes(range(256)) * 1201  # 307,456 bytes, 5 parts; a part out of place changes them
    assert sender.ask(("ask", echo, big), timeout=30) == big
    assert sender.ask(("ask", echo, "small"), timeout=10) == "small"
    assert sender.ask(("ask", echo, big[::-1]), timeout=30) == big[::-1]


def test_messages_from_one_sender_arrive_once_and_in_order_under_drop_duplicate_and_reorder(harness: Harness) -> None:
    harness.start("a", "b")
    recorder = harness.cluster.spawn(Recorder, node="b", name="rec")
    sender = harness.cluster.spawn(Sender, node="a", name="snd")
    harness.transport.faults.set("a", "b", drop=0.3, duplicate=0.3, reorder=0.3)
    harness.transport.faults.set("b", "a", drop=0.3, duplicate=0.3)
    for _ in range(5):
        sender.tell(("send", recorder, 100))
    harness.wait(lambda: recorder.ask("count", timeout=10) >= 500)
    assert seqs(recorder.ask("log", timeout=10), "snd") == list(range(100)) * 5 or _in_rounds(
        seqs(recorder.ask("log", timeout=10), "snd")
    )
    assert recorder.ask("count", timeout=10) == 500


def _in_rounds(seen: list[int]) -> bool:
    return seen == [i for _ in range(5) for i in range(100)]


def test_no_message_is_lost_or_reordered_across_a_migration_and_old_refs_keep_working(harness: Harness) -> None:
    harness.start("a", "b", "c")
    recorder = harness.cluster.spawn(Recorder, node="b", name="rec")
    sender = harness.cluster.spawn(Sender, node="a", name="snd")
    sender.tell(("send", recorder, 300))
    moved = harness.cluster.migrate(recorder, to="c")  # while the sender's mail is in flight
    sender.tell(("send", recorder, 300))
    harness.wait(lambda: recorder.ask("count", timeout=10) >= 600)
    log = recorder.ask("log", timeout=10)
    assert seqs(log, "snd") == list(range(300)) * 2
    assert harness.cluster.where("rec") == "c"
    assert moved.ask("count", timeout=10) == 600


def test_a_watcher_gets_terminated_when_a_remote_actor_stops(harness: Harness) -> None:
    harness.start("a", "b")
    echo = harness.cluster.spawn(Echo, node="b", name="echo")
    watcher = harness.cluster.spawn(Watcher, node="a", name="w")
    assert watcher.ask(("watch", echo), timeout=10)
    assert harness.cluster.stop(echo)
    harness.wait(lambda: watcher.ask("events", timeout=10) != [])
    assert watcher.ask("events", timeout=10) == [("echo", None)]


def test_a_crashed_node_goes_down_its_watchers_get_node_down_and_asks_to_it_fail(harness: Harness) -> None:
    harness.start("a", "b")
    recorder = harness.cluster.spawn(Recorder, node="b", name="rec")
    watcher = harness.cluster.spawn(Watcher, node="a", name="w")
    sender = harness.cluster.spawn(Sender, node="a", name="snd")
    assert watcher.ask(("watch", recorder), timeout=10)
    harness.crash("b")
    harness.wait(lambda: harness.cluster.status("b") is NodeStatus.DOWN)
    harness.wait(lambda: watcher.ask("events", timeout=10) != [])
    assert watcher.ask("events", timeout=10) == [("rec", "NodeDownError")]
    with pytest.raises(pykka.ActorDeadError):
        sender.ask(("ask", recorder, "count"), timeout=10)
    sender.ask(("send", recorder, 3), timeout=10)
    harness.wait(lambda: harness.node_call("a", "dead_letter_count", "node_down") == 3)
    with pytest.raises(UnknownNodeError, match="down"):
        harness.cluster.spawn(Echo, node="b")


def test_permanent_actors_of_a_crashed_node_come_back_elsewhere_from_their_snapshot(harness: Harness) -> None:
    harness.start("a", "b")
    keeper = harness.cluster.spawn(Recorder, node="b", name="keeper", restart="permanent")
    keeper.tell("kept")
    assert keeper.ask("count", timeout=10) == 1
    harness.node_call("b", "save_snapshots")
    harness.wait(lambda: harness.cluster.directory.actor("keeper").snapshot is not None)
    harness.crash("b")
    harness.wait(lambda: harness.cluster.where("keeper") == "a")
    # Node a has applied the failover too (it applies directory events in
    # order: b DOWN, then keeper here); an ask it relays before that is one of
    # the asks in flight at DOWN, which fail by design (at-most-once).
    harness.wait(lambda: "keeper" in harness.node_call("a", "local_names"))
    assert keeper.ask("log", timeout=10) == ["kept"]


def test_the_seed_flow_register_discover_deploy_talk_fail_and_move(harness: Harness) -> None:
    # Node A registers; node B joins and discovers A.
    harness.start("a")
    harness.start("b")
    assert [(n.name, n.status) for n in harness.cluster.nodes()] == [("a", NodeStatus.UP), ("b", NodeStatus.UP)]
    # Agent X deploys to A, agent Y to B; X and Y talk.
    x = harness.cluster.spawn(Recorder, node="a", name="X", restart="permanent")
    y = harness.cluster.spawn(Sender, node="b", name="Y")
    y.ask(("send", x, 10), timeout=10)
    harness.wait(lambda: x.ask("count", timeout=10) == 10)
    assert y.ask(("ask", x, "count"), timeout=10) == 10
    harness.node_call("a", "save_snapshots")
    harness.wait(lambda: harness.cluster.directory.actor("X").snapshot is not None)
    # A fails; X moves to B with its state; Y still reaches X through its old ref.
    harness.crash("a")
    harness.wait(lambda: harness.cluster.status("a") is NodeStatus.DOWN)
    harness.wait(lambda: harness.cluster.where("X") == "b")
    # Node B has applied the failover (it applies directory events in order: A DOWN, then X here).
    harness.wait(lambda: "X" in harness.node_call("b", "local_names"))
    assert y.ask(("ask", x, "count"), timeout=10) == 10
    y.ask(("send", x, 5), timeout=10)
    harness.wait(lambda: x.ask("count", timeout=10) == 15)
    # The system stays consistent.
    assert [(n.name, n.status) for n in harness.cluster.nodes()] == [("a", NodeStatus.DOWN), ("b", NodeStatus.UP)]
    assert {e.name: e.node for e in harness.cluster.directory.actors()} == {"X": "b", "Y": "b"}


def test_bad_input_gets_named_errors_and_the_cluster_keeps_working(harness: Harness) -> None:
    harness.start("a", "b")
    with pytest.raises(UnknownNodeError, match="zz"):
        harness.cluster.spawn(Echo, node="zz")
    with pytest.raises(NodeNameTakenError):
        harness.cluster.start_node("a")
    with pytest.raises(MessageNotPicklableError, match="constructor"):
        harness.cluster.spawn(Blob, lambda: 1, node="a")
    echo = harness.cluster.spawn(Echo, node="a", name="echo")
    with pytest.raises(ActorNameTakenError):
        harness.cluster.spawn(Echo, node="b", name="echo")
    with pytest.raises(MessageNotPicklableError, match="message to 'echo'"):
        echo.tell(lambda: 1)
    plain = harness.cluster.spawn(NoSnapshot, node="a", name="plain")
    with pytest.raises(MigrationError, match="snapshot"):
        harness.cluster.migrate(plain, to="b")
    with pytest.raises(MigrationError, match="already there"):
        harness.cluster.migrate(echo, to="a")
    blob = harness.cluster.spawn(Blob, 3, node="a", name="blob")
    with pytest.raises(UnknownNodeError, match="'zz' is unknown"):
        harness.cluster.migrate(blob, to="zz")
    assert blob.ask("size", timeout=10) == 3  # it stays where it was, and answers
    assert echo.ask("still here", timeout=10) == "still here"


def test_concurrent_senders_on_several_nodes_lose_and_reorder_nothing_across_migrations(harness: Harness) -> None:
    harness.start("a", "b", "c")
    recorder = harness.cluster.spawn(Recorder, node="a", name="rec")
    senders = {name: harness.cluster.spawn(Sender, node=name, name=f"s{name}") for name in ("a", "b", "c")}
    for sender in senders.values():
        sender.tell(("mixed", recorder, 150))  # tells and asks, in flight during the migrations
    for to in ("b", "c", "a"):
        recorder = harness.cluster.migrate(recorder, to=to)
    harness.wait(lambda: recorder.ask("count", timeout=10) >= 450)
    answers = {f"s{name}": sender.ask(("answers",), timeout=30) for name, sender in senders.items()}
    check_log(recorder.ask("log", timeout=10), answers, 150)
    assert recorder.ask("count", timeout=10) == 450
    assert harness.cluster.where("rec") == "a"
    assert harness.cluster.lookup("rec").address.incarnation == 3  # type: ignore[union-attr]


def test_an_ask_its_dead_node_may_have_handled_fails_and_is_not_run_again(harness: Harness) -> None:
    harness.start("a", "b")
    keeper = harness.cluster.spawn(Recorder, node="b", name="keeper", restart="permanent")
    sender = harness.cluster.spawn(Sender, node="a", name="snd")
    keeper.tell("kept")
    assert keeper.ask("count", timeout=10) == 1
    harness.node_call("b", "save_snapshots")
    harness.wait(lambda: harness.cluster.directory.actor("keeper").snapshot is not None)
    harness.transport.faults.set("b", "a", drop=1.0)  # b handles the ask; its answer never comes
    sender.tell(("ask_later", keeper, Msg("snd", 0)))
    harness.wait(lambda: keeper.ask("count", timeout=10) == 2)  # the driver's asks take another path
    harness.crash("b")
    harness.wait(lambda: "keeper" in harness.node_call("a", "local_names"))
    assert sender.ask(("answers",), timeout=30) == [(-1, "ActorDeadError")]
    assert keeper.ask("log", timeout=10) == ["kept"]  # from its snapshot; the ask was not run again


def test_mail_sent_while_its_node_is_suspect_reaches_the_permanent_actor_restarted_elsewhere(harness: Harness) -> None:
    harness.start("a", "b")
    keeper = harness.cluster.spawn(Recorder, node="b", name="keeper", restart="permanent")
    temp = harness.cluster.spawn(Recorder, node="b", name="temp")
    sender = harness.cluster.spawn(Sender, node="a", name="snd")
    keeper.tell("kept")
    assert keeper.ask("count", timeout=10) == 1
    assert temp.ask("count", timeout=10) == 0
    harness.node_call("b", "save_snapshots")
    harness.wait(lambda: harness.cluster.directory.actor("keeper").snapshot is not None)
    harness.crash("b")
    harness.wait(lambda: harness.cluster.status("b") is not NodeStatus.UP)
    # The sender's node must see it too: mail sent while a still holds b UP may have reached b (at most once).
    harness.wait(lambda: all(p.status is not NodeStatus.UP for p in harness.node_call("a", "peers") if p.name == "b"))
    # Sent in the failover window (b SUSPECT: nothing flushed to it; or DOWN already): they wait for the
    # new incarnation of the permanent actor; those to the temporary one fail as before.
    sender.tell(("send", keeper, 3))
    sender.tell(("ask_later", keeper, "count"))
    sender.tell(("ask_later", temp, "count"))
    assert sender.ask(("answers",), timeout=30) == [(-1, 4), (-1, "ActorDeadError")]
    assert keeper.ask("log", timeout=10) == ["kept", Msg("snd", 0), Msg("snd", 1), Msg("snd", 2)]
    assert harness.cluster.where("keeper") == "a"


def test_mail_sent_after_the_directory_failed_over_a_suspect_node_does_not_pass_mail_queued_for_it(
    memory: Harness,
) -> None:
    """The window the Ray test above hits by chance, forced: a holds b SUSPECT with Msg0 queued for it; the
    directory declares b DOWN and restarts the actor on a before a polls; Msg1 must still come after Msg0."""
    h = memory
    h.start("a", "b")
    keeper = h.cluster.spawn(Recorder, node="b", name="keeper", restart="permanent")
    sender = h.cluster.spawn(Sender, node="a", name="snd")
    h.node_call("b", "save_snapshots")
    h.transport.pause("b")
    h.wait(lambda: [p.status for p in h.node_call("a", "peers") if p.name == "b"] == [NodeStatus.SUSPECT])
    assert sender.ask(("send", keeper, 1), timeout=10) == 1  # queued for b, SUSPECT: nothing flushed to it
    epoch = next(info.epoch for info in h.cluster.nodes() if info.name == "b")
    assert h.cluster.directory.report("b", epoch, NodeStatus.DOWN)  # a learns it only at its next poll
    assert h.cluster.where("keeper") == "a"
    assert sender.ask(("send", keeper, 1, 1), timeout=10) == 1  # the directory has the actor on a already
    h.wait(lambda: keeper.ask("count", timeout=10) >= 2)
    assert keeper.ask("log", timeout=10) == [Msg("snd", 0), Msg("snd", 1)]


@contextlib.contextmanager
def _move_held_by_a_lost_fence(h: Harness, ref: RemoteRef, name: str) -> Iterator[list[RemoteRef]]:
    """Move `ref` (on node a) to b on a thread, held open while the block runs; yield what migrate returns.

    c's fence is lost (and sent again later), so the move waits for it; on
    leaving the block c's fence gets through, the move ends and is joined.
    """
    h.transport.faults.set("c", "a", drop=1.0)
    moved: list[RemoteRef] = []
    mover = threading.Thread(target=lambda: moved.append(h.cluster.migrate(ref, to="b")))
    mover.start()
    try:
        h.wait(lambda: name in h.node_call("a", "migrations"))  # begun: a node that joins now gets no HOLD
        yield moved
    finally:
        h.transport.faults.set("c", "a")
        mover.join()


def test_a_node_that_joins_during_a_migration_loses_and_reorders_nothing_it_sends(patient: Harness) -> None:
    """Node d gets no HOLD (it joined after the move began): its mail to the old home must still come first."""
    h = patient
    h.start("a", "b", "c")
    recorder = h.cluster.spawn(Recorder, node="a", name="rec")
    with _move_held_by_a_lost_fence(h, recorder, "rec") as moved:
        h.start("d")
        sender = h.cluster.spawn(Sender, node="d", name="sd")
        # What d sends the old home arrives after the move (seconds of the node clock: a real one on Ray).
        h.transport.faults.set("d", "a", delay=5.0 if h.kind == "ray" else 0.5)
        sender.ask(("send", recorder, 50), timeout=10)  # to node a, where the directory has it still
    assert moved
    h.wait(lambda: h.node_call("d", "location", "rec") != "a")  # d has seen the move
    sender.ask(("send", recorder, 50, 50), timeout=10)
    h.wait(lambda: recorder.ask("count", timeout=10) >= 100)
    assert seqs(recorder.ask("log", timeout=10), "sd") == list(range(100))
    assert h.cluster.where("rec") == "b"


def test_an_ask_from_a_third_node_shipped_with_a_migrated_actor_fails_when_its_new_home_dies(patient: Harness) -> None:
    """c's ask reaches a mid-move and goes to b with the actor; b dies before its answer reaches c: it must fail.

    c's pending ask pointed at a, where it sent it; nothing failed it when b went
    DOWN, so it hung until its timeout. At most once: `ActorDeadError`, promptly.
    """
    h = patient
    h.start("a", "b", "c")
    keeper = h.cluster.spawn(Recorder, node="a", name="keeper")
    sender = h.cluster.spawn(Sender, node="c", name="sc")
    assert sender.ask(("ask", keeper, "count"), timeout=10) == 0  # c locates it on a
    h.transport.faults.set("c", "a", delay=5.0 if h.kind == "ray" else 0.5)  # c's ask reaches a mid-move
    h.transport.faults.set("b", "c", drop=1.0)  # b handles it; its answer never reaches c
    sender.ask(("ask_later", keeper, Msg("sc", 0)), timeout=10)  # sent to a before a's HOLD can reach c
    keeper = h.cluster.migrate(keeper, to="b")  # c's fence follows its ask: parked on a, shipped to b
    assert h.cluster.where("keeper") == "b"  # the move is in the directory
    h.wait(lambda: keeper.ask("count", timeout=10) == 1)  # b has handled it
    h.crash("b")
    h.wait(lambda: all(p.status is NodeStatus.DOWN for p in h.node_call("c", "peers") if p.name == "b"))
    assert sender.ask(("answers",), timeout=60) == [(-1, "ActorDeadError")]  # not "Timeout" after 30 s


def test_an_ask_the_old_home_forwards_after_the_move_fails_when_the_new_home_dies(patient: Harness) -> None:
    """d joined mid-move (no HOLD): its ask reaches a after the move, a forwards it to b; b dies unanswered.

    It waits for the move's end, not for time: d's frames to a are lost until
    the move has ended, then sent again by d's link layer (a delay of 5 s did
    not order it on Ray under load, and on memory cost `wait` 5,000 ticks); the
    detection bound is let pass with `elapse` (under load 25-45 the two waits
    on the manual clock ran out of their 30 s).
    """
    h = patient
    h.start("a", "b", "c")
    keeper = h.cluster.spawn(Recorder, node="a", name="keeper")
    with _move_held_by_a_lost_fence(h, keeper, "keeper") as moved:
        h.start("d")
        h.transport.faults.set("b", "d", drop=1.0)  # b's answer never reaches d
        sender = h.cluster.spawn(Sender, node="d", name="sd")
        h.transport.faults.set("d", "a", drop=1.0)  # d's ask reaches a after the move (sent again): a straggler
        sender.ask(("ask_later", keeper, Msg("sd", 0)), timeout=10)  # to a, where the directory has it still
    assert moved
    h.transport.faults.set("d", "a")  # the move has ended: d's frames get through now
    h.wait(lambda: moved[0].ask("count", timeout=10) == 1)  # a forwarded it; b has handled it
    assert h.node_call("a", "forwarding") == {"keeper": "b"}  # by the old home's forward, not a directory lookup
    h.crash("b")
    h.elapse(h.transport.config.down_after)
    h.wait(lambda: all(p.status is NodeStatus.DOWN for p in h.node_call("d", "peers") if p.name == "b"))
    assert sender.ask(("answers",), timeout=60) == [(-1, "ActorDeadError")]  # not "Timeout" after 30 s


def test_an_ask_passed_on_twice_whose_repoints_arrive_reordered_fails_when_its_last_home_dies(patient: Harness) -> None:
    """d's ask reaches a after a move a->b and is forwarded to b, mid-move b->c: shipped on to c. c dies unanswered.

    Two REPOINTs tell d who holds its ask: a's (b) and b's (c), from two nodes.
    a's is held back until b's has come; applied last, it left d's entry pointing
    at b, which lives, so c's DOWN failed nothing and the ask hung until its timeout.

    Each step waits for an event, not for time. With delays instead (10 s on d->a,
    4 s on a->d) it failed 2 runs in 12 on Ray under load: d had not seen the first
    move yet when b's HOLD came, so it sent its fence for the second move to a,
    behind its delayed ask (a peer fences down the link it sends the actor's mail
    on), not into its cut link to b. The second move then ended when the delay did,
    racing the cut of c's answer; and d, silent towards b for about `suspect_after`,
    was suspected, so the driver's asks to d went by way of a and both delays.
    """
    h = patient
    h.start("a", "b", "c")
    keeper = h.cluster.spawn(Recorder, node="a", name="keeper")
    # Markers: a tell that arrives after an earlier item on the same link shows that item has arrived.
    pa = h.cluster.spawn(Recorder, node="a", name="pa")
    pb = h.cluster.spawn(Recorder, node="b", name="pb")
    relay = h.cluster.spawn(Sender, node="a", name="relay")
    relay_b = h.cluster.spawn(Sender, node="b", name="relay_b")
    with _move_held_by_a_lost_fence(h, keeper, "keeper") as moved:
        h.start("d")  # no HOLD for it: its ask will be a straggler at a
        pd = h.cluster.spawn(Recorder, node="d", name="pd")
        sender = h.cluster.spawn(Sender, node="d", name="sd")
        h.transport.faults.set("d", "a", drop=1.0)  # d's ask reaches a once b has begun the next move (sent again)
        sender.ask(("ask_later", keeper, Msg("sd", 0)), timeout=10)  # to a, where the directory has it still
        sender.ask(("send", pa, 1), timeout=10)  # behind it
    assert moved
    h.wait(lambda: h.node_call("d", "location", "keeper") != "a")  # d has seen the move: it fences on its link to b
    h.transport.faults.set("d", "b", drop=1.0)  # d's fence for the next move is lost: b parks what comes
    h.transport.faults.set("a", "d", drop=1.0)  # a's REPOINT is held back (sent again) until b's has come
    second: list[RemoteRef] = []
    mover = threading.Thread(target=lambda: second.append(h.cluster.migrate(moved[0], to="c")))
    mover.start()
    try:
        h.wait(lambda: "keeper" in h.node_call("b", "migrations"))  # b parks what comes for it from now on
        h.transport.faults.set("d", "a")  # d's ask gets to a now
        h.wait(lambda: pa.ask("count", timeout=10) == 1)  # a has had d's ask: forwarded to b, REPOINT to d
        relay.ask(("send", pb, 1), timeout=10)  # a to b, behind the forwarded ask
        h.wait(lambda: pb.ask("count", timeout=10) == 1)  # the ask is parked on b, to go to c with the actor
        relay.ask(("send", pd, 1), timeout=10)  # a to d, behind a's REPOINT
        h.transport.faults.set("c", "d", drop=1.0)  # c handles the ask; its answer never reaches d
    finally:
        h.transport.faults.set("d", "b")
        h.transport.faults.set("d", "a")
        mover.join()
    assert second
    assert h.cluster.where("keeper") == "c"
    # b sent its REPOINT when MOVED came, before the driver's migrate returned: this tell follows it.
    relay_b.ask(("send", pd, 1), timeout=10)
    h.wait(lambda: pd.ask("count", timeout=10) == 1)  # b's REPOINT has reached d (a's is held back still)
    h.transport.faults.set("a", "d")
    h.wait(lambda: pd.ask("count", timeout=10) == 2)  # a's REPOINT has reached d, after b's
    h.wait(lambda: second[0].ask("count", timeout=10) == 1)  # c has handled it
    h.crash("c")
    h.wait(lambda: all(p.status is NodeStatus.DOWN for p in h.node_call("d", "peers") if p.name == "c"))
    assert sender.ask(("answers",), timeout=60) == [(-1, "ActorDeadError")]  # not "Timeout" after 30 s


@pytest.mark.parametrize("old_home_dies", [False, True], ids=["old-home-up", "old-home-down"])
def test_a_watch_the_old_home_forwards_registers_the_real_watcher(patient: Harness, old_home_dies: bool) -> None:  # noqa: FBT001
    """d's WATCH reaches a after the move and is forwarded to b; the actor stops (a dead first, or not): d is told.

    b registered a (the node the WATCH came from) as the watcher: its Terminated
    went to a, which has no watch of it, and once a was DOWN to nobody; and d,
    seeing a DOWN with its WATCH unacknowledged, reported the actor's node DOWN.
    """
    h = patient
    h.start("a", "b", "c")
    keeper = h.cluster.spawn(Recorder, node="a", name="keeper")
    pa = h.cluster.spawn(Recorder, node="a", name="pa")  # markers, as in the test above
    pb = h.cluster.spawn(Recorder, node="b", name="pb")
    relay = h.cluster.spawn(Sender, node="a", name="relay")
    with _move_held_by_a_lost_fence(h, keeper, "keeper") as moved:
        h.start("d")  # no HOLD for it: its WATCH will be a straggler at a
        watcher = h.cluster.spawn(Watcher, node="d", name="wd")
        sender = h.cluster.spawn(Sender, node="d", name="sd")
        h.transport.faults.set("d", "a", drop=1.0)  # d's WATCH reaches a after the move (sent again)
        watcher.ask(("watch", keeper), timeout=10)  # to a, where the directory has it still
        sender.ask(("send", pa, 1), timeout=10)  # behind it
    assert moved
    h.transport.faults.set("d", "a")  # the move has ended: d's frames get through now
    h.wait(lambda: pa.ask("count", timeout=10) == 1)  # a has had d's WATCH: forwarded to b
    assert h.node_call("a", "forwarding") == {"keeper": "b"}  # by the old home's forward
    relay.ask(("send", pb, 1), timeout=10)  # a to b, behind the forwarded WATCH
    h.wait(lambda: pb.ask("count", timeout=10) == 1)  # b has it
    if old_home_dies:
        h.crash("a")
        h.elapse(h.transport.config.down_after)
        h.wait(lambda: all(p.status is NodeStatus.DOWN for p in h.node_call("b", "peers") if p.name == "a"))
        h.wait(lambda: all(p.status is NodeStatus.DOWN for p in h.node_call("d", "peers") if p.name == "a"))
    assert watcher.ask("events", timeout=10) == []  # the actor lives, on b
    assert moved[0].stop(timeout=10)
    h.wait(lambda: watcher.ask("events", timeout=10) == [("keeper", None)])


def test_a_state_sent_ahead_of_a_move_whose_source_dies_is_dropped_by_the_target(patient: Harness) -> None:
    """a sends keeper's state ahead to b, then dies mid-move: neither the MOVE nor the drop notice will come.

    b kept the state (the actor's whole snapshot) for good: only a MOVE or the
    source's drop notice (a given-up move) removed it, and both died with a.
    """
    h = patient
    h.start("a", "b", "c")
    keeper = h.cluster.spawn(Recorder, node="a", name="keeper", restart="permanent")
    keeper.tell(Msg("driver", 0))
    assert keeper.ask("count", timeout=10) == 1
    h.transport.faults.set("c", "a", drop=1.0)  # c's fence never reaches a: the move waits, its state on b
    failed: list[BaseException] = []

    def move() -> None:
        try:
            h.cluster.migrate(keeper, to="b", timeout=60.0)
        except Exception as exc:  # noqa: BLE001 - the source died under it: it cannot end well
            failed.append(exc)

    mover = threading.Thread(target=move)
    mover.start()
    try:
        h.wait(lambda: h.node_call("b", "held_states") == ["keeper"])
        h.crash("a")
        h.wait(lambda: all(p.status is NodeStatus.DOWN for p in h.node_call("b", "peers") if p.name == "a"))
        h.wait(lambda: h.node_call("b", "held_states") == [])
    finally:
        h.transport.faults.set("c", "a")
        mover.join()
    assert failed
    h.wait(lambda: h.cluster.where("keeper") in {"b", "c"})  # the failover restarted it (from its snapshot)
