"""`ResourceManager`: named resources with capacities, granted as all-or-nothing bundles under leases.

::

    rm = system.spawn(ResourceManager, {"gpu": 4, "llm-api": 100})
    request = rm.ask(Acquire("planner", {"gpu": 1, "llm-api": 10}, holder=planner_ref, ttl=30))
    lease = request.future.get(timeout=5)        # a Lease, with a fencing token
    ...
    rm.ask(Release(lease.lease_id, "planner"))

Semantics:

- A bundle is granted whole or not at all, so no holder ever waits while
  holding part of what it needs (no deadlock by hold-and-wait; Ray's
  placement groups).
- A request that can never be granted (an unknown resource, more units than
  the capacity, zero or negative units) is rejected at once with
  `ResourceRequestError`; the others wait.
- Waiting requests are served by priority (higher first), FIFO within a
  priority. A request waits only behind earlier (or higher) requests that
  want one of the same resources: a big GPU request does not hold up an
  ``llm-api`` one, and cannot be overtaken by later GPU requests (no
  starvation). A request with a ``timeout`` that is not granted in time fails
  with `ResourceWaitTimeoutError`.
- A lease with a ``ttl`` expires unless kept alive (`KeepAlive`); a lease
  whose holder actor stops is released (death watch), within one turn.
- Leases are reentrant per owner: the same owner acquiring the same bundle
  while it holds it gets the same lease back (``holds`` + 1, TTL renewed);
  it is freed when released as many times.
- Every grant carries a fencing token, increasing across the manager. A
  resource that must not be used on a stale grant checks it with
  `ValidateLease` (or compares tokens: a newer grant has a larger one).
- A lease released twice, by another owner, or after it ended raises
  `LeaseNotHeldError`; the manager keeps serving.
- Preemption, by priority, only of what was granted as preemptible
  (``Acquire(..., preemptible=True)``): a waiting request that does not fit,
  and that no earlier request holds up, revokes preemptible leases of a
  strictly lower priority (the lowest first, then the newest) when, and only
  when, what they free makes its bundle fit. The preempted lease ends at once
  (its fencing token goes stale, `Release` and `KeepAlive` raise
  `LeaseNotHeldError`) and its holder actor, if it named one, is told
  `LeasePreempted`; an agent that opts in must handle that message.
- Wait-for cycles. Bundles stop hold-and-wait inside one request, but an owner
  may hold a lease and ask for more. After each change to the queue the
  manager looks for a cycle in the wait-for graph: an owner waits for each of
  its waiting requests; a request waits for each earlier waiting request it
  is queued behind (they share a resource) and for each owner whose units it
  needs whoever else releases. Requests with a ``timeout`` and leases with a
  ``ttl`` end by themselves and are left out: only a wait that nothing would
  ever end counts. The youngest request of an owner on the cycle (one that
  holds and waits) fails with `ResourceDeadlockError`, which names the
  cycle; the others go on. The model: an owner with a waiting request
  releases nothing until it is granted.

Threading: every handler runs on the manager's turn; request futures are
settled there. `Lease` and the statistics are frozen.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
import pykka
from loguru import logger

from actors._core import Actor, DeadLetterReason, FrozenDict, Future, Terminated
from actors.coordination.statistics import percentile
from actors.errors import (
    CoordinationStoppedError,
    LeaseNotHeldError,
    MessageNotUnderstoodError,
    ResourceDeadlockError,
    ResourceRequestError,
    ResourceWaitTimeoutError,
    StaleFencingTokenError,
    TroupeError,
)

__all__ = [
    "Acquire",
    "CancelRequest",
    "GetResourceStatistics",
    "KeepAlive",
    "Lease",
    "LeasePreempted",
    "LeaseRequest",
    "Release",
    "ResourceManager",
    "ResourceStatistics",
    "ResourceUsage",
    "ValidateLease",
]


def _bundle(value: Mapping[str, int]) -> FrozenDict[str, int]:
    return value if isinstance(value, FrozenDict) else FrozenDict(value)


# Not slotted: a frozen attrs class with slots sets each field through `object.__setattr__`, a
# call with an argument tuple each; without slots attrs writes the instance dict. Made once per
# grant: 7 fields, 0.61 -> 0.39 µs (timeit, min of 5). Its `__init__` is written out (the same
# signature as attrs' own, which `attrs.evolve` calls): attrs' frozen `__init__` first binds
# `object.__setattr__` to the instance, a method-wrapper made and freed per call that a class
# without slots never uses: 6,000 -> 4,900 instructions a lease (callgrind).
@attrs.frozen(slots=False, init=False)
class Lease:
    """A grant: `bundle` is held by `owner` until released, expired or its holder stops."""

    lease_id: str
    owner: str
    bundle: FrozenDict[str, int]
    fencing_token: int
    granted_at: float
    expires_at: float | None
    holds: int = 1

    def __init__(  # noqa: PLR0917 - attrs' own signature, the fields in order
        self,
        lease_id: str,
        owner: str,
        bundle: FrozenDict[str, int],
        fencing_token: int,
        granted_at: float,
        expires_at: float | None,
        holds: int = 1,
    ) -> None:
        fields = self.__dict__
        fields["lease_id"] = lease_id
        fields["owner"] = owner
        fields["bundle"] = bundle
        fields["fencing_token"] = fencing_token
        fields["granted_at"] = granted_at
        fields["expires_at"] = expires_at
        fields["holds"] = holds


@attrs.frozen
class Acquire:
    """Ask for a bundle; answers a `LeaseRequest` whose future resolves to the `Lease`.

    ``holder``: the actor the lease dies with (watched). ``timeout``: seconds
    to wait in the queue (None: as long as it takes). ``ttl``: the lease's
    time to live, renewed by `KeepAlive` (None: until released).
    ``preemptible``: a waiting request of a higher priority may revoke the
    lease (the holder is told `LeasePreempted`); default False: never.
    """

    owner: str
    bundle: FrozenDict[str, int] = attrs.field(converter=_bundle)
    holder: pykka.ActorRef[Any] | None = attrs.field(default=None, eq=False)
    priority: int = 0
    timeout: float | None = None
    ttl: float | None = None
    preemptible: bool = False
    units: tuple[tuple[str, int], ...] = attrs.field(init=False, repr=False, eq=False)
    """The bundle's (name, units) pairs sorted by name, read once: a `FrozenDict`'s items view iterates
    in Python. Equal bundles have equal `units`, so the manager keys reentry on them (a tuple hashes in
    C, a `FrozenDict` in Python)."""

    def __attrs_post_init__(self) -> None:
        try:
            units = tuple(sorted(self.bundle.items()))
        except TypeError:  # names that do not sort (not all strings): rejected by the manager anyway
            units = tuple(self.bundle.items())
        object.__setattr__(self, "units", units)


@attrs.frozen
class LeasePreempted:
    """Told to a preemptible lease's holder when a higher-priority request revoked it: stop using it now."""

    lease: Lease
    by_owner: str
    """The owner of the request the units went to."""
    priority: int
    """That request's priority."""


@attrs.frozen(eq=False, slots=False, init=False)  # made once per request: as `Lease`, `__init__` and all
class LeaseRequest:
    """What `Acquire` answers: the request's id (for `CancelRequest`) and the future of its `Lease`."""

    request_id: int
    future: Future[Lease]

    def __init__(self, request_id: int, future: Future[Lease]) -> None:
        fields = self.__dict__
        fields["request_id"] = request_id
        fields["future"] = future


@attrs.frozen
class Release:
    """Release one hold of a lease; answers the units still held by that lease (0 when freed)."""

    lease_id: str
    owner: str


@attrs.frozen
class KeepAlive:
    """Renew a lease's TTL; answers the renewed `Lease` (raises `LeaseNotHeldError` if it ended)."""

    lease_id: str
    owner: str


@attrs.frozen
class ValidateLease:
    """Answer the `Lease` if it is still held with this token; raise `StaleFencingTokenError` if not."""

    lease_id: str
    fencing_token: int


@attrs.frozen
class CancelRequest:
    """Withdraw a waiting request; answers whether it was still waiting (its future gets `LeaseNotHeldError`)."""

    request_id: int


@attrs.frozen
class GetResourceStatistics:
    """Answer a `ResourceStatistics` snapshot."""


@attrs.frozen
class ResourceUsage:
    """One resource's capacity and use."""

    capacity: int
    in_use: int
    peak: int
    last_fencing_token: int

    @property
    def utilization(self) -> float:
        """In use over capacity."""
        return self.in_use / self.capacity


@attrs.frozen
class ResourceStatistics:
    """A snapshot of a `ResourceManager`."""

    resources: FrozenDict[str, ResourceUsage]
    leases: int
    waiting: int
    granted: int
    released: int
    expired: int
    revoked: int
    """Leases released because their holder stopped."""
    timed_out: int
    rejected: int
    wait_p50: float | None
    wait_p95: float | None
    preempted: int = 0
    """Leases revoked for a higher-priority request."""
    deadlocks: int = 0
    """Requests failed with `ResourceDeadlockError` (a wait-for cycle)."""


@attrs.frozen
class _Expire:
    kind: str  # "wait" (key: the request id) or "ttl" (the leases' one timer, no key)
    key: Any


class _Waiting:
    __slots__ = ("future", "holder_urn", "id", "message", "queued_at", "sort")

    def __init__(self, rid: int, message: Acquire, now: float, holder_urn: str | None) -> None:
        self.id = rid
        self.message = message
        self.future: Future[Lease] = Future()
        self.queued_at = now
        self.sort = (-message.priority, rid)
        self.holder_urn = holder_urn

    def __lt__(self, other: _Waiting) -> bool:
        return self.sort < other.sort


class _Held:
    __slots__ = ("expires_version", "holder_urn", "lease", "preemptible", "priority", "ttl", "units")

    def __init__(self, lease: Lease, holder_urn: str | None, message: Acquire) -> None:
        self.lease = lease
        self.units = message.units
        self.priority = message.priority
        self.preemptible = message.preemptible
        self.holder_urn = holder_urn
        self.ttl: float | None = None
        # Invariant: only the `_deadlines` entry carrying this version may expire the lease.
        self.expires_version = 0


_IDLE_WATCHES = 1024
"""Holders with nothing held or waiting that stay watched (see `ResourceManager._idle_watches`)."""


def _check_seconds(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
        msg = f"Acquire.{name} must be > 0 seconds (or None), got {value!r}"
        raise ResourceRequestError(msg)


class ResourceManager(Actor):
    """Named resources with capacities, granted as leases on bundles (see the module docstring).

    Args:
        capacities: resource name -> units (ints > 0).
    """

    refusals: ClassVar[tuple[type[BaseException], ...]] = (TroupeError,)
    """A shared service: a told request it refuses is a ``REJECTED`` dead letter, not its failure (README)."""

    def __init__(self, capacities: Mapping[str, int]) -> None:
        super().__init__()
        if not isinstance(capacities, Mapping):
            msg = f"ResourceManager capacities must be a mapping of names to ints > 0, got {capacities!r}"
            raise TypeError(msg)
        for name, units in capacities.items():
            if (
                not isinstance(name, str)
                or not name
                or isinstance(units, bool)
                or not isinstance(units, int)
                or units <= 0
            ):
                msg = f"ResourceManager capacities must map names to ints > 0, got {name!r}: {units!r}"
                raise ResourceRequestError(msg)
        self._capacity: dict[str, int] = dict(capacities)
        self._free: dict[str, int] = dict(capacities)
        # The fewest units each resource had free since the start: its peak use is the capacity less this.
        self._least_free: dict[str, int] = dict(capacities)
        self._last_token: dict[str, int] = dict.fromkeys(capacities, 0)
        self._clock = self.actor_system.clock
        # The real clock's `now` is `time.monotonic` itself (`MonotonicClock`): a C call a reading.
        self._now: Callable[[], float] = self._clock.now
        # Invariant: sorted by (-priority, request id): FIFO within a priority.
        self._queue: list[_Waiting] = []
        self._waiting: dict[int, _Waiting] = {}
        self._leases: dict[str, _Held] = {}
        # For reentry: owner -> its one lease, or, once it holds two or more, a dict of them by
        # bundle (`Acquire.units`). By owner first, so a request of an owner that holds nothing
        # is looked up by its string alone; and no dict is made for an owner's only lease.
        self._owned: dict[str, _Held | dict[tuple[tuple[str, int], ...], _Held]] = {}
        self._watched: dict[str, list[Any]] = {}  # urn -> [ref, users]: each holder watched once
        # Holders watched while they hold and wait for nothing (users 0), oldest first: a holder
        # that acquires and releases in turn keeps its watch, not a watch and an unwatch each
        # time (a request+grant+release with a holder: 9.3 -> 8.1 µs). At most `_IDLE_WATCHES`.
        self._idle_watches: dict[str, None] = {}
        self._rids = itertools.count(1)
        self._tokens = itertools.count(1)
        # Leases granted are not counted: each one is held (`_leases`) or ended once, as released,
        # expired, revoked or preempted, so `_on_statistics` adds those up (a count less per grant).
        # Invariant: granted == len(_leases) + released + expired + revoked + preempted.
        self._counts = dict.fromkeys(
            ("released", "expired", "revoked", "timed_out", "rejected", "preempted", "deadlocks"), 0
        )
        self._checking = False  # a deadlock pass is running (its own grants do not start another)
        self._waits: deque[float] = deque(maxlen=4096)
        # The leases' TTLs, under one timer ("ttl", armed for the earliest deadline) rather than a
        # timer each: arming and cancelling a runtime timer per lease was about half the CPU of a
        # grant with a TTL, and a cancelled timer stays in the runtime's heap until its deadline.
        # Invariant: a heap of (deadline, fencing token, version, lease); an entry is live while
        # its lease is held with that `expires_version` (a release or a renewal leaves it stale:
        # skipped when popped, dropped when stale ones outnumber the live ones).
        self._deadlines: list[tuple[float, int, int, _Held]] = []
        self._ttl_leases = 0  # held leases with a TTL: the live entries of `_deadlines`
        self._ttl_armed: float | None = None  # the deadline the "ttl" timer is armed for, if any
        self._handlers: dict[type, Callable[[Any], Any]] = {
            Acquire: self._on_acquire,
            Release: self._on_release,
            KeepAlive: self._on_keep_alive,
            ValidateLease: self._on_validate,
            CancelRequest: self._on_cancel,
            GetResourceStatistics: self._on_statistics,
        }

    def on_failure(self, *_exc_info: object) -> None:
        """The manager itself failed (a bug of its own): its waiting askers still get an answer."""
        self.on_stop()

    def on_stop(self) -> None:
        """Fail every waiting request: no asker waits forever."""
        for waiting in self._queue:
            error = CoordinationStoppedError(f"{self} stopped before granting request {waiting.id}")
            waiting.future.set_exception((type(error), error, None))
        self._queue.clear()

    def on_receive(self, message: Any) -> Any:
        """Answer a request (its errors reach the asker); timers and `Terminated` never fail the manager."""
        handler = self._handlers.get(message.__class__)
        if handler is not None:
            return handler(message)
        if not isinstance(message, (_Expire, Terminated)):
            self._on_unknown(message)  # refused: an error to an asker, a REJECTED dead letter if told
        try:
            if isinstance(message, _Expire):
                self._on_expire(message)
            else:
                self._on_terminated(message)
        except Exception as error:  # noqa: BLE001 - a bad tell must not stop the service
            logger.opt(exception=True).warning("{}: dropped {!r}", self, message)
            self.actor_system.dead_letters.record(message, self.actor_ref, DeadLetterReason.HANDLER_FAILED, error)
        return None

    def _on_unknown(self, message: Any) -> None:
        msg = f"{self} does not understand {message!r}; send Acquire, Release, KeepAlive, ValidateLease, ..."
        raise MessageNotUnderstoodError(msg)

    # -- requests ------------------------------------------------------------------------

    def _on_acquire(self, message: Acquire) -> LeaseRequest:
        # The hot path (benchmarks/coordination.py, resources): one test a resource both checks
        # the common request (known resources, plain ints) and finds that it fits now: a resource
        # never has more free than its capacity, so 0 < n <= free is in range. Anything else
        # (a request that must wait, int subclasses, timeouts) goes through `_validate`, which
        # accepts what this does not look at or says what is wrong.
        units = message.units
        free = self._free
        fits = units != () and message.timeout is None and message.ttl is None
        if fits:
            for name, n in units:
                left = free.get(name)
                if left is None or n.__class__ is not int or not 0 < n <= left:
                    fits = False
                    break
        if not fits:
            self._validate(message)
            fits = all(free[name] >= n for name, n in units)
        now = self._now()
        owned = self._owned.get(message.owner)
        if owned is not None:
            held = owned.get(units) if isinstance(owned, dict) else owned if owned.units == units else None
            if held is not None:  # reentry: the same lease, one more hold
                lease = held.lease = attrs.evolve(
                    held.lease, holds=held.lease.holds + 1, expires_at=self._renew(held, message.ttl, now)
                )
                future: Future[Lease] = Future()
                future.set(lease)
                return LeaseRequest(0, future)
        rid = next(self._rids)
        holder_urn = None
        if message.holder is not None:
            holder_urn = self._watch(message.holder)
        if fits and not self._queue:
            # Nobody waits and it fits: grant at once (the queue pass would grant it first
            # anyway), without the waiting record a queued request needs.
            # `_grant_to` written out: one call less on the hot path.
            token = next(self._tokens)
            least, last_token = self._least_free, self._last_token
            for name, n in units:
                left = free[name] - n
                free[name] = left
                if left < least[name]:  # noqa: PLR1730 - min() is one more call per resource
                    least[name] = left
                last_token[name] = token
            lease_id = f"lease-{token}"
            owner = message.owner
            ttl = message.ttl
            lease = Lease(lease_id, owner, message.bundle, token, now, None if ttl is None else now + ttl)
            held = _Held(lease, holder_urn, message)
            self._leases[lease_id] = held
            if owned is None:
                self._owned[owner] = held
            else:
                self._index(held)
            if ttl is not None:
                self._renew(held, ttl, now)
            self._waits.append(0.0)
            future = Future()
            future.set(lease)
            return LeaseRequest(rid, future)
        waiting = _Waiting(rid, message, now, holder_urn)
        self._waiting[rid] = waiting
        bisect.insort(self._queue, waiting)
        self._grant_waiting()
        if not waiting.future.done() and message.timeout is not None:
            self.timers.start_single_timer(("wait", waiting.id), _Expire("wait", waiting.id), message.timeout)
        return LeaseRequest(waiting.id, waiting.future)

    def _validate(self, message: Acquire) -> None:
        problem = None
        if not message.bundle:
            problem = "the bundle is empty"
        for name, units in message.units:
            if name not in self._capacity:
                problem = f"there is no resource {name!r} (known: {sorted(self._capacity)})"
            elif isinstance(units, bool) or not isinstance(units, int) or units <= 0:
                problem = f"{name!r} asks for {units!r} units; ask for an int > 0"
            elif units > self._capacity[name]:
                problem = f"{name!r} asks for {units} units, more than its capacity of {self._capacity[name]}"
            if problem:
                break
        if problem is None:
            try:
                _check_seconds("timeout", message.timeout)
                _check_seconds("ttl", message.ttl)
            except ResourceRequestError:
                self._counts["rejected"] += 1
                raise
            return
        self._counts["rejected"] += 1
        msg = f"{self}: request of {message.owner!r} for {dict(message.bundle)} can never be granted: {problem}"
        raise ResourceRequestError(msg)

    def _grant_waiting(self) -> None:
        """Grant waiting requests in queue order; a request that does not fit blocks its resources for later ones."""
        if not self._queue:
            return
        free = self._free
        blocked: set[str] = set()
        granted = []
        for waiting in self._queue:
            bundle = waiting.message.bundle
            if blocked and not blocked.isdisjoint(bundle):
                continue
            if not all(free[name] >= units for name, units in waiting.message.units):
                victims = self._preemption_victims(waiting)
                if victims:
                    for held in victims:
                        self._preempt(held, waiting)
            if all(free[name] >= units for name, units in waiting.message.units):
                granted.append(waiting)
                for name, units in waiting.message.units:
                    free[name] -= units
            else:
                blocked.update(bundle)
                if len(blocked) == len(free):
                    break
        if granted:
            now = self._now()
            gone = {w.id for w in granted}
            self._queue = [w for w in self._queue if w.id not in gone]
            for waiting in granted:
                self._grant(waiting, now)
        if self._queue:
            self._break_deadlocks()

    # -- preemption ---------------------------------------------------------------------------

    def _preemption_victims(self, waiting: _Waiting) -> list[_Held] | None:
        """Return the preemptible leases whose units make `waiting` fit (fewest, lowest priority first), or None."""
        message = waiting.message
        free = self._free
        short = {name: units - free[name] for name, units in message.units if free[name] < units}
        candidates = [
            held
            for held in self._leases.values()
            if held.preemptible
            and held.priority < message.priority
            and held.lease.owner != message.owner
            and any(name in short for name, _ in held.units)
        ]
        if not candidates:
            return None
        candidates.sort(key=lambda held: (held.priority, -held.lease.fencing_token))  # lowest, then newest
        victims = []
        for held in candidates:
            victims.append(held)
            for name, units in held.units:
                if name in short:
                    short[name] -= units
                    if short[name] <= 0:
                        del short[name]
            if not short:
                return victims
        return None  # even all of them would not do: revoke nothing

    def _preempt(self, held: _Held, waiting: _Waiting) -> None:
        lease = held.lease
        logger.info(
            "{}: lease {} of {!r} (priority {}) preempted by request {} of {!r} (priority {})",
            self,
            lease.lease_id,
            lease.owner,
            held.priority,
            waiting.id,
            waiting.message.owner,
            waiting.message.priority,
        )
        entry = self._watched.get(held.holder_urn) if held.holder_urn is not None else None
        self._free_lease(held, "preempted", grant=False)
        if entry is not None:
            with contextlib.suppress(pykka.ActorDeadError):  # its Terminated is on the way: nothing to tell
                entry[0].tell(LeasePreempted(lease, waiting.message.owner, waiting.message.priority))

    # -- wait-for cycles ----------------------------------------------------------------------

    def _break_deadlocks(self) -> None:
        """Fail one request of each wait-for cycle (see the module docstring) until none is left."""
        if self._checking:
            return
        self._checking = True
        try:
            while self._queue:
                cycle = self._find_cycle()
                if cycle is None:
                    return
                self._fail_deadlocked(cycle)
        finally:
            self._checking = False

    def _wait_for_graph(self) -> dict[Any, list[Any]]:
        """Edges: ("o", owner) -> its waiting requests; ("r", id) -> requests ahead of it and owners it needs."""
        free = self._free
        graph: dict[Any, list[Any]] = {}
        holders: dict[str, dict[str, int]] = {}  # resource -> owner -> units, of leases without a TTL
        held_by_ttl: dict[str, int] = {}
        for held in self._leases.values():
            for name, units in held.units:
                if held.ttl is None:
                    owners = holders.setdefault(name, {})
                    owners[held.lease.owner] = owners.get(held.lease.owner, 0) + units
                else:
                    held_by_ttl[name] = held_by_ttl.get(name, 0) + units
        last_on: dict[str, Any] = {}  # resource -> the latest request queued for it (queue order is wait order)
        for waiting in self._queue:
            message = waiting.message
            if message.timeout is not None:
                continue  # no node: it ends by itself, so what waits on it does not wait for ever
            node = ("r", waiting.id)
            edges = graph.setdefault(node, [])
            graph.setdefault(("o", message.owner), []).append(node)
            for name, units in message.units:
                earlier = last_on.get(name)
                if earlier is not None:
                    edges.append(earlier)  # and, through it, every earlier one on this resource
                last_on[name] = node
                owners = holders.get(name, {})
                released = free[name] + held_by_ttl.get(name, 0) + sum(owners.values())
                for owner, own in owners.items():
                    if released - own < units:  # even if everyone else released, it needs this owner's units
                        edges.append(("o", owner))
        return graph

    def _find_cycle(self) -> list[Any] | None:
        """Return the nodes of one cycle of the wait-for graph, or None (an iterative depth-first search)."""
        graph = self._wait_for_graph()
        state: dict[Any, int] = {}  # 1: on the current path, 2: done
        for root in graph:
            if root in state:
                continue
            path: list[Any] = [root]
            state[root] = 1
            stack = [iter(graph.get(root, ()))]
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    stack.pop()
                    continue
                seen = state.get(nxt)
                if seen == 1:
                    return path[path.index(nxt) :]
                if seen is None:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(graph.get(nxt, ())))
        return None

    def _fail_deadlocked(self, cycle: list[Any]) -> None:
        # The victim: the youngest request of an owner on the cycle, one that holds and waits.
        # (Any cycle holds an owner: edges between requests only point back in queue order.)
        # A request on the cycle only because it is queued behind one is innocent: failing it
        # would leave the cycle in place.
        holding = [self._waiting[cycle[(i + 1) % len(cycle)][1]] for i, (kind, _) in enumerate(cycle) if kind == "o"]
        victim = max(holding, key=lambda w: w.id)
        steps = []
        for kind, key in cycle:
            if kind == "o":
                steps.append(f"owner {key!r}")
            else:
                w = self._waiting[key]
                steps.append(f"request {key} of {w.message.owner!r} for {dict(w.message.bundle)}")
        msg = (
            f"{self}: request {victim.id} of {victim.message.owner!r} for {dict(victim.message.bundle)} "
            f"would wait for ever: a wait-for cycle {' -> '.join(steps)} -> back to the start. "
            "Release what you hold before asking for more, ask for everything in one bundle, "
            "or give the request a timeout"
        )
        self._waiting.pop(victim.id)
        self._queue.remove(victim)
        if victim.message.timeout is not None:
            self.timers.cancel(("wait", victim.id))
        if victim.holder_urn is not None:
            self._unwatch(victim.holder_urn)
        self._counts["deadlocks"] += 1
        logger.warning("{}", msg)
        error = ResourceDeadlockError(msg)
        victim.future.set_exception((type(error), error, None))

    def _grant(self, waiting: _Waiting, now: float) -> None:
        message = waiting.message
        del self._waiting[waiting.id]
        if message.timeout is not None:
            self.timers.cancel(("wait", waiting.id))
        token = next(self._tokens)
        free, least, last_token = self._free, self._least_free, self._last_token
        for name, _ in message.units:  # taken from `free` by the queue pass already
            if free[name] < least[name]:  # noqa: PLR1730 - min() is one more call per resource
                least[name] = free[name]
            last_token[name] = token
        self._grant_to(message, waiting.future, waiting.holder_urn, token, waiting.queued_at, now)

    def _grant_to(  # noqa: PLR0917 - the hot path: no record made to carry them
        self,
        message: Acquire,
        future: Future[Lease],
        holder_urn: str | None,
        token: int,
        queued_at: float,
        now: float,
    ) -> None:
        """Make the lease of `message` with fencing `token`; its units are taken (and counted) already."""
        ttl = message.ttl
        lease_id = f"lease-{token}"
        owner, bundle = message.owner, message.bundle
        lease = Lease(lease_id, owner, bundle, token, now, None if ttl is None else now + ttl)
        held = _Held(lease, holder_urn, message)
        self._leases[lease_id] = held
        self._index(held)
        if ttl is not None:
            self._renew(held, ttl, now)
        self._waits.append(now - queued_at)
        future.set(lease)

    def _index(self, held: _Held) -> None:
        """Make `held` its owner's lease of its bundle in `_owned` (replacing one granted before)."""
        owner = held.lease.owner
        owned = self._owned.get(owner)
        if isinstance(owned, dict):
            owned[held.units] = held
        elif owned is None or owned.units == held.units:
            self._owned[owner] = held
        else:
            self._owned[owner] = {owned.units: owned, held.units: held}

    def _unindex(self, held: _Held) -> None:
        """Take `held` out of `_owned`, if it is there.

        It is not when two queued requests of one owner for one bundle were both granted and
        the later lease took the entry: it stays for that one.
        """
        owner = held.lease.owner
        owned = self._owned.get(owner)
        if owned is held:
            del self._owned[owner]
        elif isinstance(owned, dict) and owned.get(held.units) is held:
            del owned[held.units]
            if not owned:
                del self._owned[owner]

    def _renew(self, held: _Held, ttl: float | None, now: float) -> float | None:
        """Restart the lease's TTL (`ttl`, or the one it was granted with); return the new expiry."""
        if ttl is None:
            ttl = held.ttl
            if ttl is None:
                return None
        if held.ttl is None:
            self._ttl_leases += 1
        held.ttl = ttl
        held.expires_version += 1
        deadline = now + ttl
        deadlines = self._deadlines
        heapq.heappush(deadlines, (deadline, held.lease.fencing_token, held.expires_version, held))
        if len(deadlines) > 2 * self._ttl_leases + 1024:  # mostly stale: keep the live entries
            self._deadlines = [entry for entry in deadlines if self._live(entry)]
            heapq.heapify(self._deadlines)
        if self._ttl_armed is None or deadline < self._ttl_armed:
            self._arm_ttl(deadline, now)
        return deadline

    def _live(self, entry: tuple[float, int, int, _Held]) -> bool:
        held = entry[3]
        return held.expires_version == entry[2] and self._leases.get(held.lease.lease_id) is held

    def _arm_ttl(self, deadline: float, now: float) -> None:
        self._ttl_armed = deadline
        self.timers.start_single_timer("ttl", _Expire("ttl", None), max(deadline - now, 0.0))

    def _expire_leases(self) -> None:
        """The "ttl" timer fired: free every lease whose deadline has come, and arm it for the next."""
        now = self._now()
        # The deadline it was armed for has come, whatever the clock's rounding says.
        limit = now if self._ttl_armed is None else max(now, self._ttl_armed)
        self._ttl_armed = None
        deadlines = self._deadlines
        freed = False
        while deadlines and (deadlines[0][0] <= limit or not self._live(deadlines[0])):
            entry = heapq.heappop(deadlines)
            if self._live(entry):
                held = entry[3]
                logger.info("{}: lease {} of {!r} expired", self, held.lease.lease_id, held.lease.owner)
                # Every lease due now is freed before anyone waiting is granted: a grant after the
                # first would preempt a preemptible lease due at the same instant (the resource
                # model found it: an expiry counted as a preemption).
                self._free_lease(held, "expired", grant=False)
                freed = True
        if freed and self._queue:
            self._grant_waiting()
            deadlines = self._deadlines  # a grant it made may have compacted them
        if deadlines:
            self._arm_ttl(deadlines[0][0], now)

    def _held(self, lease_id: str, owner: str, what: str) -> _Held:
        held = self._leases.get(lease_id)
        if held is None:
            msg = f"{self}: cannot {what} lease {lease_id!r}: it is not held (released already, expired or revoked)"
            raise LeaseNotHeldError(msg)
        if held.lease.owner != owner:
            msg = f"{self}: cannot {what} lease {lease_id!r} as {owner!r}: it is held by {held.lease.owner!r}"
            raise LeaseNotHeldError(msg)
        return held

    def _on_release(self, message: Release) -> int:
        held = self._leases.get(message.lease_id)
        if held is None or held.lease.owner != message.owner:
            held = self._held(message.lease_id, message.owner, "release")  # raises
        lease = held.lease
        if lease.holds > 1:
            held.lease = attrs.evolve(lease, holds=lease.holds - 1)
            return sum(lease.bundle.values())
        if held.ttl is not None or held.holder_urn is not None or self._queue:
            self._free_lease(held, "released")
            return 0
        # `_free_lease` written out for the common lease (no TTL, no holder, nobody waiting).
        del self._leases[message.lease_id]
        if self._owned.get(lease.owner) is held:
            del self._owned[lease.owner]
        else:
            self._unindex(held)
        free = self._free
        for name, units in held.units:
            free[name] += units
        self._counts["released"] += 1
        return 0

    def _free_lease(self, held: _Held, why: str, *, grant: bool = True) -> None:
        lease = held.lease
        del self._leases[lease.lease_id]
        self._unindex(held)
        if held.ttl is not None:
            self._ttl_leases -= 1  # its `_deadlines` entry is stale now
        free = self._free
        for name, units in held.units:
            free[name] += units
        self._counts[why] += 1
        if held.holder_urn is not None:
            self._unwatch(held.holder_urn)
        if grant and self._queue:
            self._grant_waiting()

    def _on_keep_alive(self, message: KeepAlive) -> Lease:
        held = self._held(message.lease_id, message.owner, "keep alive")
        if held.ttl is not None:
            held.lease = attrs.evolve(held.lease, expires_at=self._renew(held, None, self._now()))
        return held.lease

    def _on_validate(self, message: ValidateLease) -> Lease:
        held = self._leases.get(message.lease_id)
        if held is None or held.lease.fencing_token != message.fencing_token:
            msg = (
                f"{self}: fencing token {message.fencing_token} of lease {message.lease_id!r} is stale: the lease "
                "ended (released, expired or revoked); acquire the resources again before acting"
            )
            raise StaleFencingTokenError(msg)
        return held.lease

    def _on_cancel(self, message: CancelRequest) -> bool:
        waiting = self._waiting.pop(message.request_id, None)
        if waiting is None:
            return False
        self._queue.remove(waiting)
        self.timers.cancel(("wait", waiting.id))
        if waiting.holder_urn is not None:
            self._unwatch(waiting.holder_urn)
        error = LeaseNotHeldError(f"{self}: request {waiting.id} of {waiting.message.owner!r} was cancelled")
        waiting.future.set_exception((type(error), error, None))
        self._grant_waiting()
        return True

    def _on_statistics(self, _message: GetResourceStatistics) -> ResourceStatistics:
        resources = FrozenDict(
            {
                name: ResourceUsage(cap, cap - self._free[name], cap - self._least_free[name], self._last_token[name])
                for name, cap in sorted(self._capacity.items())
            }
        )
        waits = list(self._waits)
        c = self._counts
        return ResourceStatistics(
            resources,
            len(self._leases),
            len(self._queue),
            len(self._leases) + c["released"] + c["expired"] + c["revoked"] + c["preempted"],
            c["released"],
            c["expired"],
            c["revoked"],
            c["timed_out"],
            c["rejected"],
            percentile(waits, 0.5),
            percentile(waits, 0.95),
            c["preempted"],
            c["deadlocks"],
        )

    # -- timers, death watch ----------------------------------------------------------------

    def _on_expire(self, message: _Expire) -> None:
        if message.kind == "wait":
            waiting = self._waiting.pop(message.key, None)
            if waiting is None:
                return
            self._queue.remove(waiting)
            self._counts["timed_out"] += 1
            if waiting.holder_urn is not None:
                self._unwatch(waiting.holder_urn)
            error = ResourceWaitTimeoutError(
                f"{self}: request {waiting.id} of {waiting.message.owner!r} for {dict(waiting.message.bundle)} "
                f"was not granted within {waiting.message.timeout} s; free: {self._free}. Retry later or ask for less"
            )
            waiting.future.set_exception((type(error), error, None))
            self._grant_waiting()
            return
        self._expire_leases()

    def _watch(self, ref: pykka.ActorRef[Any]) -> str:
        """Count one more use of `ref`'s watch (watching it if it is not yet); return its URN."""
        urn = ref.actor_urn
        entry = self._watched.get(urn)
        if entry is None:
            self._watched[urn] = [ref, 1]
            self.watch(ref)
        else:
            if not entry[1]:
                del self._idle_watches[urn]
            entry[1] += 1
        return urn

    def _unwatch(self, urn: str) -> None:
        """Count one use less; a holder left with none stays watched, among the newest idle ones."""
        entry = self._watched.get(urn)
        if entry is None:
            return
        entry[1] -= 1
        if not entry[1]:
            idle = self._idle_watches
            idle[urn] = None
            if len(idle) > _IDLE_WATCHES:
                oldest = next(iter(idle))
                del idle[oldest]
                self.unwatch(self._watched.pop(oldest)[0])

    def _on_terminated(self, message: Terminated) -> None:
        urn = message.ref.actor_urn
        if self._watched.pop(urn, None) is None:
            return
        self._idle_watches.pop(urn, None)
        for waiting in [w for w in self._queue if w.holder_urn == urn]:
            self._waiting.pop(waiting.id, None)
            self._queue.remove(waiting)
            self.timers.cancel(("wait", waiting.id))
            error = pykka.ActorDeadError(f"{self}: request {waiting.id} withdrawn: its holder {message.ref} stopped")
            waiting.future.set_exception((type(error), error, None))
        for held in [h for h in self._leases.values() if h.holder_urn == urn]:
            held.holder_urn = None  # its watch is gone already
            logger.info("{}: lease {} released: its holder {} stopped", self, held.lease.lease_id, message.ref)
            self._free_lease(held, "revoked")
