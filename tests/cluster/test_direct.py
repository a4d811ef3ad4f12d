"""The Ray transport's direct data plane: frames by socket node to node, Ray calls as the fallback.

Ray only (the memory transport has no sockets); the shared suite runs over
it too, since it is on by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.cluster import NodeStatus
from tests.cluster.agents import Recorder, Sender

if TYPE_CHECKING:
    from tests.cluster.conftest import Harness


def test_on_ray_frames_go_by_socket_and_a_cut_socket_loses_and_reorders_nothing(ray_harness: Harness) -> None:
    h = ray_harness
    h.start("a", "b")
    rec = h.cluster.spawn(Recorder, node="b", name="rec")
    snd = h.cluster.spawn(Sender, node="a", name="snd")
    assert snd.ask(("ask", rec, "count"), timeout=10) == 0
    h.wait(lambda: "b" in h.transport.node_call("a", "data_plane")["connected"])
    before = h.transport.node_call("a", "data_plane")
    snd.tell(("send", rec, 300, 0))  # under way (or sent) when the socket is cut
    assert h.transport.node_call("a", "break_data_plane") == 1
    assert snd.ask(("send", rec, 300, 300), timeout=30) == 300  # its first write finds the socket cut
    h.wait(lambda: rec.ask("count", timeout=10) == 600)
    assert [m.seq for m in rec.ask("log", timeout=10)] == list(range(600))
    assert before["sent_direct"] > 0
    assert h.transport.node_call("a", "data_plane")["broken"] > before["broken"]  # its write, or b's reader
    # Ray carried the frames meanwhile, the probes; once one got through, a socket is dialed again.
    h.wait(lambda: h.transport.node_call("a", "data_plane")["probing"] == [])
    h.wait(lambda: "b" in h.transport.node_call("a", "data_plane")["connected"])
    h.wait(lambda: [n.status for n in h.cluster.nodes()] == [NodeStatus.UP, NodeStatus.UP])
    redialed = h.transport.node_call("a", "data_plane")
    assert snd.ask(("ask", rec, "count"), timeout=10) == 600
    after = h.transport.node_call("a", "data_plane")
    assert after["sent_ray"] > before["sent_ray"]
    assert after["sent_direct"] > redialed["sent_direct"]


def test_on_ray_without_the_direct_plane_every_frame_is_a_ray_call(ray_pool: object) -> None:
    from actors.cluster import Cluster, LinkConfig  # noqa: PLC0415
    from actors.cluster.ray import RayTransport  # noqa: PLC0415 - imports ray
    from tests.cluster.conftest import Harness  # noqa: PLC0415

    h = Harness("ray", ray_pool)  # type: ignore[arg-type]
    h.transport = RayTransport(
        namespace=f"{h.transport.namespace}-ray-only",
        config=LinkConfig(suspect_after=1.0, down_after=2.0, join_grace=30.0),
        direct=False,
    )
    h.cluster = Cluster(h.transport, name=f"{h.cluster.name}r")
    try:
        h.start("a", "b")
        rec = h.cluster.spawn(Recorder, node="b", name="rec")
        snd = h.cluster.spawn(Sender, node="a", name="snd")
        assert snd.ask(("send", rec, 200), timeout=30) == 200
        h.wait(lambda: rec.ask("count", timeout=10) == 200)
        assert [m.seq for m in rec.ask("log", timeout=10)] == list(range(200))
        plane = h.transport.node_call("a", "data_plane")
        assert plane["sent_direct"] == 0
        assert plane["sent_ray"] > 0
        assert plane["connected"] == []
    finally:
        h.close()
