"""Membership: the split-brain rule (keep-majority with the directory as a witness), self-downing, fencing.

A node that hears from no majority of the voters (the members not DOWN and
the directory) for `down_after` less a heartbeat downs itself: its actors
stop before the others declare it DOWN and start its permanent actors
elsewhere. A node on the minority side downs nobody. Frames from an
incarnation the directory declared DOWN are refused, even by a node whose
view has not caught up.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from actors.cluster import Cluster, NodeStatus, wire
from actors.cluster.faults import DIRECTORY
from actors.cluster.link import LinkConfig, Outbox
from tests.cluster.agents import Echo, Recorder, Sender

if TYPE_CHECKING:
    from tests.cluster.conftest import Harness


def _keeper_on(harness: Harness, node: str) -> Any:
    keeper = harness.cluster.spawn(Recorder, node=node, name="keeper", restart="permanent")
    keeper.tell("kept")
    assert keeper.ask("count", timeout=10) == 1
    harness.node_call(node, "save_snapshots")
    harness.wait(lambda: harness.cluster.directory.actor("keeper").snapshot is not None)
    return keeper


def _running(harness: Harness, node: str) -> list[str]:
    return list(harness.node_call(node, "running_names"))


def test_a_node_cut_off_from_the_majority_and_the_directory_downs_itself_before_its_actors_start_elsewhere(
    harness: Harness,
) -> None:
    _minority_downs_itself(harness, {"a", "b", DIRECTORY})


def test_a_node_cut_off_from_the_majority_but_not_the_directory_downs_itself_too(memory: Harness) -> None:
    """The directory is one vote of four: with it, node c still hears no majority."""
    _minority_downs_itself(memory, {"a", "b"})


def _minority_downs_itself(harness: Harness, majority: set[str]) -> None:
    harness.start("a", "b", "c")
    keeper = _keeper_on(harness, "c")
    harness.transport.faults.partition(majority, {"c"})
    twice: list[str] = []

    def restarted() -> bool:
        where = [n for n in "abc" if "keeper" in _running(harness, n)]
        if len(where) > 1:
            twice.append(",".join(where))
        return harness.cluster.where("keeper") in {"a", "b"} and len(where) == 1 and where[0] != "c"

    harness.wait(restarted)
    assert twice == [], f"two incarnations of keeper ran at once, on {twice}"
    assert harness.node_call("c", "down_reason") is not None
    assert [(n.name, n.status) for n in harness.cluster.nodes()] == [
        ("a", NodeStatus.UP),
        ("b", NodeStatus.UP),
        ("c", NodeStatus.DOWN),
    ]
    harness.transport.faults.heal()
    assert keeper.ask("log", timeout=10) == ["kept"]


def test_of_two_nodes_cut_apart_that_both_reach_the_directory_exactly_one_survives(memory: Harness) -> None:
    memory.start("a", "b")
    memory.transport.faults.partition({"a"}, {"b"})
    memory.wait(lambda: NodeStatus.DOWN in {n.status for n in memory.cluster.nodes()})
    statuses = {n.name: n.status for n in memory.cluster.nodes()}
    assert sorted(statuses.values()) == [NodeStatus.DOWN, NodeStatus.UP]
    loser = next(name for name, status in statuses.items() if status is NodeStatus.DOWN)
    memory.wait(lambda: memory.transport.node(loser).down_reason() is not None)
    memory.transport.faults.heal()
    memory.transport.advance(3.0)  # the loser's report against the winner was refused: it stays UP
    assert {n.name: n.status for n in memory.cluster.nodes()} == statuses


def test_a_node_that_loses_only_the_directory_keeps_running_on_its_peers_quorum(memory: Harness) -> None:
    memory.start("a", "b")
    recorder = memory.cluster.spawn(Recorder, node="b", name="rec")
    memory.wait(lambda: [p.name for p in memory.transport.node("a").peers()] == ["b"])
    memory.transport.faults.partition({"a"}, {DIRECTORY})
    for _ in range(40):  # 4 s of the manual clock, past every bound
        memory.transport.advance(0.1)
    assert memory.transport.node("a").down_reason() is None
    assert memory.transport.node("a").quorum_silence(memory.clock.now()) < memory.transport.config.suspect_after
    assert {n.name: n.status for n in memory.cluster.nodes()} == {"a": NodeStatus.UP, "b": NodeStatus.UP}
    memory.transport.node("a").ref("rec", "b").tell("still")
    memory.wait(lambda: recorder.ask("count", timeout=10) == 1)


def test_a_lone_node_cut_off_from_the_directory_downs_itself(memory: Harness) -> None:
    memory.start("a")
    memory.transport.faults.partition({"a"}, {DIRECTORY})
    node = memory.transport.node("a")
    memory.wait(lambda: node.down_reason() is not None)
    config = memory.transport.config
    assert node.quorum_silence(memory.clock.now()) >= config.down_after - config.heartbeat_every


def test_a_hung_node_is_declared_down_and_when_it_resumes_it_downs_itself(harness: Harness) -> None:
    harness.start("a", "b", "c")
    keeper = _keeper_on(harness, "c")
    rec = harness.cluster.spawn(Recorder, node="a", name="rec")
    harness.transport.pause("c")  # Ray: SIGSTOP of the node's process, which Ray still reports alive
    try:
        harness.wait(lambda: harness.cluster.status("c") is NodeStatus.DOWN)
        harness.wait(lambda: any("keeper" in _running(harness, n) for n in "ab"))
        assert keeper.ask("log", timeout=10) == ["kept"]
    finally:
        harness.transport.resume("c")
    harness.wait(lambda: harness.node_call("c", "down_reason") is not None)
    harness.wait(lambda: _running(harness, "c") == [])
    assert rec.ask("count", timeout=10) == 0


def test_a_frame_from_an_incarnation_declared_down_is_refused_by_a_node_whose_view_lags(memory: Harness) -> None:
    memory.start("a", "c")
    rec = memory.cluster.spawn(Recorder, node="a", name="rec")
    c_epoch = memory.cluster.directory.node("c").epoch
    memory.wait(lambda: [p.name for p in memory.transport.node("a").peers()] == ["c"])
    memory.transport.pause("c")
    memory.clock.advance(2.0)  # c is silent; node a has not ticked, so its view still has c UP
    assert memory.cluster.directory.report("c", c_epoch, NodeStatus.DOWN)  # as another node would
    stale = Outbox("c", c_epoch, "a", LinkConfig())
    stale.append((wire.TELL, "rec", pickle.dumps("from a stale incarnation")), memory.clock.now())
    memory.transport.node("a").receive(stale.take(memory.clock.now(), 0, force=True) or b"")
    memory.transport.advance(0.01)
    assert rec.ask("log", timeout=10) == []


def test_a_report_from_a_node_the_directory_holds_down_is_refused(memory: Harness) -> None:
    memory.start("a", "b")
    directory = memory.cluster.directory
    a, b = directory.node("a").epoch, directory.node("b").epoch
    assert directory.report("b", b, NodeStatus.DOWN, by=("a", a))
    assert not directory.report("a", a, NodeStatus.DOWN, by=("b", b))
    assert not directory.report("a", a, NodeStatus.SUSPECT, by=("b", b + 100))
    assert directory.node("a").status is NodeStatus.UP


def test_on_ray_a_lone_node_whose_ray_node_dies_is_down_by_rays_node_table(ray_harness: Harness) -> None:
    """No peer sends to it, so no call fails and no heartbeat is missed: only ``ray.nodes()`` can tell."""
    ray_harness.start("a")
    ray_harness.crash("a")  # remove_node(allow_graceful=False) of its Ray node
    ray_harness.wait(lambda: ray_harness.cluster.status("a") is NodeStatus.DOWN)
    assert ray_harness.cluster.nodes()[0].ray_node is not None


def test_on_ray_a_second_driver_attaches_as_a_client_and_its_shutdown_stops_nothing_it_did_not_start(
    ray_harness: Harness,
) -> None:
    from actors.cluster.ray import RayTransport  # noqa: PLC0415 - imports ray

    ray_harness.start("a", "b")
    echo = ray_harness.cluster.spawn(Echo, node="b", name="echo")
    first = ray_harness.transport
    other = Cluster(RayTransport(namespace=first.namespace, config=first.config), name=ray_harness.cluster.name)
    try:
        assert [(n.name, n.status) for n in other.nodes()] == [("a", NodeStatus.UP), ("b", NodeStatus.UP)]
        found = other.lookup("echo")
        assert found is not None
        assert found.ask("from another driver", timeout=10) == "from another driver"
        sender = other.spawn(Sender, node="a", name="snd")  # on a node the other driver started
        assert sender.ask(("ask", found, "node to node"), timeout=10) == "node to node"
    finally:
        other.shutdown()
    assert echo.ask("still here", timeout=10) == "still here"
    assert [n.status for n in ray_harness.cluster.nodes()] == [NodeStatus.UP, NodeStatus.UP]


def test_a_node_whose_calls_fail_as_unavailable_is_suspect_gets_no_new_traffic_and_is_up_once_they_succeed(
    harness: Harness,
) -> None:
    """Tier 1: b still sends to a (a hears it), but a's calls to b fail; SUSPECT must hold until one succeeds."""
    harness.start("a", "b", "c")
    recorder = harness.cluster.spawn(Recorder, node="b", name="rec")
    sender = harness.cluster.spawn(Sender, node="a", name="snd")
    assert sender.ask(("ask", recorder, "count"), timeout=10) == 0  # a has a link to b
    harness.transport.faults.set("a", "b", unavailable=True)
    harness.wait(lambda: harness.cluster.status("b") is NodeStatus.SUSPECT)
    sender.ask(("send", recorder, 20), timeout=10)  # no new traffic to b: it waits in a's outbox
    local = harness.transport.node("b").system.lookup("rec") if harness.kind == "memory" else None
    for _ in range(10):  # a keeps hearing from b meanwhile, which must not make b UP again
        if local is not None:
            harness.transport.advance(0.02)
            assert local.ask("count", timeout=10) == 0
        assert harness.cluster.status("b") is NodeStatus.SUSPECT
    harness.transport.faults.set("a", "b")  # calls succeed again: the next one (a heartbeat) ends the suspicion
    harness.wait(lambda: harness.cluster.status("b") is NodeStatus.UP)
    harness.wait(lambda: recorder.ask("count", timeout=10) == 20)
    assert [m.seq for m in recorder.ask("log", timeout=10)] == list(range(20))
    assert {n.name: n.status for n in harness.cluster.nodes()} == dict.fromkeys("abc", NodeStatus.UP)
