"""Routing: the `Router` actor, its strategies and the `Pool` that owns its routees.

Built on the core's named seams only (`actors._core`). Everything public here
is also exported from `actors`. The modules, from the bottom up:

- `messages`: the management messages and the statistics snapshots;
- `fanout`: the state of asks that go to several routees;
- `strategies`: how a router picks routees;
- `admission`: `Admission` limits and the control that keeps them;
- `table`: `Routee`, the tracked futures and `RoutingTable` (membership,
  sending, accounting);
- `ref`: `RouterRef`, the hot path (routing on the sender's thread);
- `router`: the `Router` actor; `pool`: the `Pool`, a router that owns its routees.
"""

from actors.routing.admission import Admission
from actors.routing.messages import (
    AddRoutee,
    Broadcast,
    GetRoutees,
    GetStatistics,
    RemoveRoutee,
    RouteeStatistics,
    RouterStatistics,
)
from actors.routing.pool import AwaitStarted, Drain, DrainResult, Pool, PoolConfig, PoolStatistics, Resizer
from actors.routing.ref import RouterRef
from actors.routing.router import Router
from actors.routing.strategies import (
    STRATEGIES,
    BroadcastRouting,
    ConsistentHashRouting,
    FastestResponseRouting,
    LeastConnectionsRouting,
    RandomRouting,
    RoundRobinRouting,
    RoutingStrategy,
    ScatterGatherFirstRouting,
    SmallestMailboxRouting,
    TailChoppingRouting,
    WeightedCapabilitiesRouting,
    routing_strategy,
)
from actors.routing.table import Routee

__all__ = [
    "STRATEGIES",
    "AddRoutee",
    "Admission",
    "AwaitStarted",
    "Broadcast",
    "BroadcastRouting",
    "ConsistentHashRouting",
    "Drain",
    "DrainResult",
    "FastestResponseRouting",
    "GetRoutees",
    "GetStatistics",
    "LeastConnectionsRouting",
    "Pool",
    "PoolConfig",
    "PoolStatistics",
    "RandomRouting",
    "RemoveRoutee",
    "Resizer",
    "RoundRobinRouting",
    "Routee",
    "RouteeStatistics",
    "Router",
    "RouterRef",
    "RouterStatistics",
    "RoutingStrategy",
    "ScatterGatherFirstRouting",
    "SmallestMailboxRouting",
    "TailChoppingRouting",
    "WeightedCapabilitiesRouting",
    "routing_strategy",
]
