"""The Ray node's ticker and its news of the directory: slow while idle, woken by work, told of changes at once.

Ray only: the memory transport's ticker has its own test (test_memory.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.cluster import LinkConfig, NodeStatus
from tests.cluster.agents import Echo, Recorder, Sender, Watcher

if TYPE_CHECKING:
    from tests.cluster.conftest import RayPool

_HOUR = 3600.0


def test_on_ray_an_idle_node_ticks_slowly_mail_left_for_its_tick_wakes_it_and_news_reaches_it(
    ray_pool: RayPool,
) -> None:
    """Heartbeats, retransmits and the silence detector an hour apart: the idle ticker waits 15 minutes.

    The tells queued behind the first one's acknowledgement arrive only
    because the send that queued them woke the ticker. A crashed node is
    then seen by the directory (Ray's node table) alone, no heartbeat being
    due for an hour: its watcher on a hears of it through the node's poll of
    the directory's news, while a's ticker waits long.
    """
    from tests.cluster.conftest import Harness  # noqa: PLC0415

    config = LinkConfig(
        heartbeat_every=_HOUR, retransmit_after=_HOUR, suspect_after=_HOUR, down_after=2 * _HOUR, join_grace=30.0
    )
    h = Harness("ray", ray_pool, config)
    try:
        h.start("a", "b", "c")
        recorder = h.cluster.spawn(Recorder, node="b", name="rec")
        sender = h.cluster.spawn(Sender, node="a", name="snd")
        watcher = h.cluster.spawn(Watcher, node="a", name="w")
        victim = h.cluster.spawn(Echo, node="c", name="victim")

        def idle() -> bool:
            return bool(h.transport.node_call("a", "ticker")["idle"])

        h.wait(idle)
        for first in (0, 300):
            sender.ask(("send", recorder, 300, first), timeout=10)
            expected = first + 300
            h.wait(lambda: recorder.ask("count", timeout=10) == expected)  # noqa: B023
            h.wait(idle)  # idle again once it is all sent
        assert [m.seq for m in recorder.ask("log", timeout=10)] == list(range(600))

        assert watcher.ask(("watch", victim), timeout=10)
        h.wait(idle)
        news = h.transport.node_call("a", "ticker")["news"]
        h.crash("c")
        h.wait(lambda: h.cluster.status("c") is NodeStatus.DOWN)
        h.wait(lambda: watcher.ask("events", timeout=10) != [])
        assert watcher.ask("events", timeout=10) == [("victim", "NodeDownError")]
        assert h.transport.node_call("a", "ticker")["news"] > news
    finally:
        h.close()
