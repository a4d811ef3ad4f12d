"""Hypothesis stateful models of the registry and of the resource manager, on the manual clock."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors import (
    Acquire,
    ActorSystem,
    Agent,
    AgentDescriptor,
    AgentHeartbeat,
    AgentId,
    AgentStatus,
    Coordinator,
    Deregister,
    FindAgents,
    GetResourceStatistics,
    LeaseNotHeldError,
    ManualClock,
    Register,
    Release,
    ResourceDeadlockError,
    ResourceManager,
    ResourceWaitTimeoutError,
    StaleFencingTokenError,
    ValidateLease,
)

CAPS = ["a", "b", "c"]
KEYS = [f"k{i}" for i in range(6)]
TIMEOUT = 60.0  # twice the registered heartbeat interval


class Quiet(Agent):
    """An agent with no coordinator of its own: the model registers it and beats for it."""


class RegistryModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.system = ActorSystem("registry-model", clock=self.clock, dispatchers=2)
        self.coord = self.system.spawn(Coordinator)
        self.coord.ask(FindAgents())
        # key -> (ref, caps, last_heard)
        self.model: dict[str, list[Any]] = {}

    def teardown(self) -> None:
        self.system.shutdown()

    @rule(key=st.sampled_from(KEYS), caps=st.frozensets(st.sampled_from(CAPS)))
    def register(self, key: str, caps: frozenset[str]) -> None:
        if key in self.model:
            return
        ref = self.system.spawn(Quiet, key)
        result = self.coord.ask(Register(ref, AgentDescriptor(AgentId("agent", key), caps), heartbeat_interval=30))
        assert not result.replaced
        self.model[key] = [ref, caps, self.clock.now()]

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def die(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        self.model.pop(key)[0].stop()

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def deregister(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        ref = self.model.pop(key)[0]
        assert self.coord.ask(Deregister(f"agent/{key}")) is True
        ref.stop()

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        self.coord.tell(AgentHeartbeat(AgentId("agent", key)))
        self.model[key][2] = self.clock.now()

    @rule(seconds=st.sampled_from([1, 5, 30, 59, 61]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)  # integral: at least one sweep runs, at the new time

    @invariant()
    def queries_match_the_model(self) -> None:
        now = self.clock.now()
        for caps in [frozenset(), frozenset({"a"}), frozenset({"a", "b"}), frozenset({"c"})]:
            found = {str(a.id): a.status for a in self.coord.ask(FindAgents(all_of=caps))}
            expected = {
                f"agent/{key}": AgentStatus.OFFLINE if now - heard >= TIMEOUT else AgentStatus.IDLE
                for key, (_, have, heard) in self.model.items()
                if caps <= have
            }
            assert found == expected
        offline = {str(a.id) for a in self.coord.ask(FindAgents(status=AgentStatus.OFFLINE, none_of={"b"}))}
        assert offline == {
            f"agent/{k}" for k, (_, have, heard) in self.model.items() if now - heard >= TIMEOUT and "b" not in have
        }


TestRegistryModel = RegistryModel.TestCase
TestRegistryModel.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

CAPACITY = {"gpu": 3, "api": 5}
BUNDLES = st.dictionaries(st.sampled_from(sorted(CAPACITY)), st.integers(1, 3), min_size=1).map(
    lambda b: {k: min(v, CAPACITY[k]) for k, v in b.items()}
)


class ResourceModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.system = ActorSystem("resource-model", clock=self.clock, dispatchers=2)
        self.rm = self.system.spawn(ResourceManager, CAPACITY)
        self.requests: list[tuple[str, Any]] = []  # (owner, LeaseRequest), in submission order
        self.untimed: set[int] = set()  # request ids asked without a timeout (only those can deadlock)
        self.held: dict[str, Any] = {}  # lease_id -> Lease
        self.preemptible: dict[str, int] = {}  # lease_id -> priority, of the leases granted as preemptible
        self.priorities: dict[int, tuple[int, bool]] = {}  # request id -> (priority, preemptible)
        self.preempted = 0
        self.deadlocks = 0
        self.released: set[str] = set()
        self.last_token = 0
        self.owners = 0

    def teardown(self) -> None:
        try:
            self._collect()
            while self.held:  # a release may grant a waiting request: release that too
                lease = self.held.pop(next(iter(self.held)))
                self.rm.ask(Release(lease.lease_id, lease.owner))
                self._collect()
            assert not self.requests, "with everything released, every request was granted or timed out"
            stats = self.rm.ask(GetResourceStatistics())
            assert all(usage.in_use == 0 for usage in stats.resources.values()), "every grant is released"
        finally:
            self.system.shutdown()

    def _collect(self) -> None:
        """Take the grants made since the last step, in token order: tokens only increase."""
        granted = []
        victims = []
        for owner, request in list(self.requests):
            if request.future.done():
                self.requests.remove((owner, request))
                try:
                    lease = request.future.get(timeout=0)
                except ResourceWaitTimeoutError:  # timed out in the queue: not a grant
                    continue
                except ResourceDeadlockError as error:
                    victims.append((owner, request.request_id, str(error)))
                    continue
                granted.append((lease, request.request_id))
        for lease, rid in sorted(granted, key=lambda pair: pair[0].fencing_token):
            assert lease.fencing_token > self.last_token
            self.last_token = lease.fencing_token
            self.held[lease.lease_id] = lease
            priority, preemptible = self.priorities[rid]
            if preemptible:
                self.preemptible[lease.lease_id] = priority
        if granted:  # a preemption is followed by the grant it was for, in the same pass
            self._find_preempted(below=max(self.priorities[rid][0] for _, rid in granted))
        for owner, rid, why in victims:
            # Only an untimed request closes a cycle, and only one whose owner holds something.
            assert rid in self.untimed, why
            assert any(lease.owner == owner for lease in self.held.values()), (why, self.held)
            self.deadlocks += 1

    def _find_preempted(self, *, below: int) -> None:
        """Drop the leases the manager preempted: only preemptible ones, of a priority below a request's."""
        for lease_id, priority in list(self.preemptible.items()):
            lease = self.held.get(lease_id)
            if lease is None:
                del self.preemptible[lease_id]
                continue
            try:
                self.rm.ask(ValidateLease(lease_id, lease.fencing_token))
            except StaleFencingTokenError:
                if lease.expires_at is not None and lease.expires_at <= self.clock.now():
                    continue  # expired, and dropped by `advance`
                assert priority < below, "a lease is preempted only by a request of a higher priority"
                del self.held[lease_id]
                del self.preemptible[lease_id]
                self.preempted += 1

    @rule(
        bundle=BUNDLES,
        priority=st.integers(0, 2),
        ttl=st.sampled_from([None, 5.0]),
        timeout=st.sampled_from([None, 3.0]),
        preemptible=st.booleans(),
        again=st.sampled_from([None, "o1", "o2"]),
    )
    def acquire(  # noqa: PLR0917 - hypothesis passes the drawn values by keyword
        self,
        bundle: dict[str, int],
        priority: int,
        ttl: float | None,
        timeout: float | None,
        preemptible: bool,  # noqa: FBT001 - a drawn flag
        again: str | None,
    ) -> None:
        """Ask as a new owner, or as o1 or o2 again: an owner that holds and asks for more can deadlock."""
        owner = again
        if owner is None or any(lease.owner == owner and dict(lease.bundle) == bundle for lease in self.held.values()):
            self.owners += 1
            owner = f"n{self.owners}"  # the same bundle again would be a reentrant hold: not what this draws
        message = Acquire(owner, bundle, priority=priority, ttl=ttl, timeout=timeout, preemptible=preemptible)
        request = self.rm.ask(message)
        self.priorities[request.request_id] = (priority, preemptible)
        if timeout is None:
            self.untimed.add(request.request_id)
        self.requests.append((owner, request))
        self._collect()

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        lease_id = data.draw(st.sampled_from(sorted(self.held)))
        lease = self.held.pop(lease_id)
        try:
            self.rm.ask(Release(lease_id, lease.owner))
        except LeaseNotHeldError:
            assert lease.expires_at is not None, "only an expired lease is gone"
            assert lease.expires_at <= self.clock.now(), "only an expired lease is gone"
        self._collect()

    @rule(seconds=st.sampled_from([1.0, 3.0, 6.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        now = self.clock.now()
        for lease_id, lease in list(self.held.items()):
            if lease.expires_at is not None and lease.expires_at <= now:
                del self.held[lease_id]  # expired: freed by the manager
        self.rm.ask(GetResourceStatistics())
        self._collect()

    @invariant()
    def capacity_is_never_exceeded_and_use_matches_the_live_leases(self) -> None:
        stats = self.rm.ask(GetResourceStatistics())
        self._collect()
        for name, usage in stats.resources.items():
            assert 0 <= usage.in_use <= usage.capacity
            assert usage.in_use == sum(lease.bundle.get(name, 0) for lease in self.held.values())
        assert (stats.preempted, stats.deadlocks) == (self.preempted, self.deadlocks)


TestResourceModel = ResourceModel.TestCase
TestResourceModel.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
