"""The coordinator's registry: registration, death watch, discovery and watches, in every mode."""

from __future__ import annotations

from typing import Any

import pytest

from actors import (
    AgentDescriptor,
    AgentId,
    AgentRegistrationError,
    AgentStatus,
    Coordinator,
    DeadLetterReason,
    Deregister,
    FindAgents,
    GetAgent,
    GetCoordinationStatistics,
    Health,
    ListAgentTypes,
    ListCapabilities,
    Register,
    RegistrationResult,
    RegistryEvent,
    RegistryEventKind,
    RegistrySnapshot,
    UnwatchRegistry,
    WatchRegistry,
)
from actors.testing import ActorTestKit
from tests.coordination.agents_for_tests import Echo, info, spawn_agent, spawn_coordinator
from tests.core.actors_for_tests import WAIT, Gate


class Planner(Echo):
    agent_type = "planner"
    capabilities = frozenset({"plan", "search"})


def test_an_agent_given_a_coordinator_registers_itself_with_its_descriptor(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode, attributes={"model": "m1"}, max_concurrent_tasks=3)
    found = info(coord, "echo/e1")
    assert found.id == AgentId("echo", "e1")
    assert str(found.id) == "echo/e1"
    assert found.capabilities == {"echo"}
    assert found.attributes["model"] == "m1"
    assert found.max_concurrent_tasks == 3
    assert found.status is AgentStatus.IDLE
    assert found.health is Health.HEALTHY


def test_an_agent_that_stops_leaves_the_registry_by_itself(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit, mode=mode)
    ref = spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    assert coord.ask(GetAgent("echo/e1")) is not None
    ref.stop()
    # Terminated is queued for the coordinator before stop() returns: the next ask sees it handled.
    assert coord.ask(GetAgent("echo/e1")) is None
    assert coord.ask(FindAgents()) == ()


def test_registering_the_same_agent_twice_is_a_documented_no_op(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    ref = actor_testkit.spawn(Echo, "e1")
    descriptor = AgentDescriptor("echo/e1", {"echo"})
    first = coord.ask(Register(ref, descriptor))
    again = coord.ask(Register(ref, descriptor))
    assert (first.replaced, first.already_registered) == (False, False)
    assert (again.replaced, again.already_registered) == (False, True)


def test_a_registration_under_a_taken_id_replaces_the_stale_entry_and_says_so(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    old = actor_testkit.spawn(Echo, "old")
    new = actor_testkit.spawn(Echo, "new")
    coord.ask(Register(old, AgentDescriptor("echo/x", {"echo"})))
    result = coord.ask(Register(new, AgentDescriptor("echo/x", {"echo", "extra"})))
    assert result.replaced is True
    assert info(coord, "echo/x").capabilities == {"echo", "extra"}
    old.stop()  # the stale entry's death no longer touches the new one
    assert info(coord, "echo/x").capabilities == {"echo", "extra"}


def test_one_actor_cannot_hold_two_agent_ids_and_the_coordinator_keeps_serving(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    ref = actor_testkit.spawn(Echo, "e1")
    coord.ask(Register(ref, AgentDescriptor("echo/a")))
    with pytest.raises(AgentRegistrationError, match="already registered as echo/a"):
        coord.ask(Register(ref, AgentDescriptor("echo/b")))
    assert info(coord, "echo/a").id == AgentId("echo", "a")


def test_bad_descriptors_are_refused_where_they_are_built() -> None:
    with pytest.raises(AgentRegistrationError, match="max_concurrent_tasks"):
        AgentDescriptor("t/k", max_concurrent_tasks=0)
    with pytest.raises(AgentRegistrationError, match="type/key"):
        AgentId.parse("nokey")
    with pytest.raises(AgentRegistrationError, match="capability"):
        AgentDescriptor("t/k", {""})
    assert AgentId.parse("t/k/with/slashes") == AgentId("t", "k/with/slashes")


def test_deregistering_removes_the_agent_and_answers_whether_it_was_there(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, Echo, "e1", coord)
    assert coord.ask(Deregister("echo/e1")) is True
    assert coord.ask(Deregister("echo/e1")) is False
    assert coord.ask(GetAgent("echo/e1")) is None


def _ids(found: tuple[Any, ...]) -> list[str]:
    return [str(a.id) for a in found]


def test_discovery_filters_by_capabilities_types_attributes_and_predicates(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    for key, caps, region in [("a", {"x", "y"}, "eu"), ("b", {"x"}, "us"), ("c", {"y", "z"}, "eu")]:
        ref = actor_testkit.spawn(Echo, key)
        coord.ask(Register(ref, AgentDescriptor(f"echo/{key}", caps, {"region": region, "v": ord(key)})))
    planner = actor_testkit.spawn(Planner, "p")
    coord.ask(Register(planner, AgentDescriptor("planner/p", {"plan"})))
    assert _ids(coord.ask(FindAgents(all_of={"x", "y"}))) == ["echo/a"]
    assert _ids(coord.ask(FindAgents(any_of={"z", "plan"}))) == ["echo/c", "planner/p"]
    assert _ids(coord.ask(FindAgents(all_of={"y"}, none_of={"z"}))) == ["echo/a"]
    assert _ids(coord.ask(FindAgents(types="planner"))) == ["planner/p"]
    assert _ids(coord.ask(FindAgents(attributes={"region": "eu"}))) == ["echo/a", "echo/c"]
    assert _ids(coord.ask(FindAgents(where=lambda attrs: attrs.get("v", 0) > ord("a")))) == ["echo/b", "echo/c"]
    assert _ids(coord.ask(FindAgents(status=AgentStatus.IDLE, limit=2))) == ["echo/a", "echo/b"]
    assert _ids(coord.ask(FindAgents(health=Health.UNHEALTHY))) == []
    assert coord.ask(FindAgents(all_of={"nobody-has-this"})) == ()  # an empty result, not an error
    assert dict(coord.ask(ListAgentTypes())) == {"echo": 3, "planner": 1}
    assert dict(coord.ask(ListCapabilities())) == {"plan": 1, "x": 2, "y": 2, "z": 1}


def test_a_watcher_gets_a_snapshot_then_every_change_numbered_without_gaps(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, Echo, "before", coord, mode=mode)
    probe = actor_testkit.probe()
    seq = coord.ask(WatchRegistry(probe.ref))
    snapshot = probe.expect_message(RegistrySnapshot)
    assert snapshot.seq == seq
    assert _ids(snapshot.agents) == ["echo/before"]
    late = spawn_agent(actor_testkit, Echo, "late", coord, mode=mode)
    registered = probe.expect_message(RegistryEvent)
    assert (registered.kind, str(registered.agent.id), registered.seq) == (
        RegistryEventKind.REGISTERED,
        "echo/late",
        seq + 1,
    )
    assert registered.status_change.seq == 1
    late.stop()
    deregistered = probe.expect_message(RegistryEvent)
    assert (deregistered.kind, deregistered.seq) == (RegistryEventKind.DEREGISTERED, seq + 2)
    assert deregistered.status_change.new is AgentStatus.OFFLINE
    assert coord.ask(UnwatchRegistry(probe.ref)) is True
    spawn_agent(actor_testkit, Echo, "unseen", coord, mode=mode)
    probe.expect_no_message()


def test_a_dead_watcher_is_dropped_and_the_others_keep_their_stream(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    dead, alive = actor_testkit.probe(), actor_testkit.probe()
    coord.ask(WatchRegistry(dead.ref))
    coord.ask(WatchRegistry(alive.ref))
    dead.ref.stop()
    spawn_agent(actor_testkit, Echo, "e1", coord)
    alive.expect_message(RegistrySnapshot)
    assert alive.expect_message(RegistryEvent).kind is RegistryEventKind.REGISTERED
    assert coord.ask(GetCoordinationStatistics()).watchers == 1


class _GatedCoordinator(Coordinator):
    """A coordinator that a `Gate` holds, so that what is sent next queues up behind it."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Gate):
            return message.hold_then(lambda: None)
        return super().on_receive(message)


def test_registrations_told_in_a_burst_are_taken_in_one_turn_and_a_refused_one_is_a_dead_letter(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = actor_testkit.spawn(_GatedCoordinator, mode=mode)
    refs = {key: actor_testkit.spawn(Echo, key, mode=mode) for key in ("a", "b", "c", "d")}
    gate = Gate()
    coord.tell(gate)
    gate.wait_entered()
    first = coord.ask(Register(refs["a"], AgentDescriptor("echo/a", {"echo"})), block=False)
    coord.tell(Register(refs["b"], AgentDescriptor("echo/b", {"echo"})))
    refused = Register(refs["b"], AgentDescriptor("echo/other", {"echo"}))  # b is registered as echo/b
    coord.tell(refused)
    coord.tell(Register(refs["c"], AgentDescriptor("echo/c", {"echo", "x"})))
    last = coord.ask(Register(refs["d"], AgentDescriptor("echo/d", {"echo"})), block=False)  # an ask: its own turn
    gate.released.set()
    assert first.get(timeout=WAIT) == RegistrationResult(AgentId("echo", "a"), replaced=False)
    assert last.get(timeout=WAIT) == RegistrationResult(AgentId("echo", "d"), replaced=False)
    assert [str(found.id) for found in coord.ask(FindAgents(all_of={"echo"}))] == [
        "echo/a",
        "echo/b",
        "echo/c",
        "echo/d",
    ]
    assert coord.ask(GetAgent("echo/other")) is None
    letters = [letter for letter in actor_testkit.system.dead_letters.recent() if letter.message is refused]
    assert [letter.reason for letter in letters] == [DeadLetterReason.REJECTED]
    assert isinstance(letters[0].exception, AgentRegistrationError)
    # Each batched registration is watched: an agent registered in the batch that stops leaves.
    refs["c"].stop()
    assert coord.ask(GetAgent("echo/c")) is None
    assert coord.ask(GetCoordinationStatistics()).agents == 3
