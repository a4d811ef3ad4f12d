"""Routing: the `Router` actor, its strategies and the `Pool` that owns its routees.

Built on the core's named seams only (`actors._core`). Everything public here
is also exported from `actors`.
"""

from actors.routing.pool import AwaitStarted, Drain, DrainResult, Pool, PoolConfig, PoolStatistics, Resizer
from actors.routing.router import (
    AddRoutee,
    Admission,
    Broadcast,
    GetRoutees,
    GetStatistics,
    RemoveRoutee,
    Routee,
    RouteeStatistics,
    Router,
    RouterRef,
    RouterStatistics,
)
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
