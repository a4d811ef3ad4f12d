"""Pipeline: ordered output, bounded memory under a slow stage, error channel or failure, bad input."""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any

import pytest

from actors import ChildSpec, CoordinationInputError, PipelineItemError, Pool, PoolConfig
from patterns.pipeline import Stage, pipeline
from tests.core.actors_for_tests import WAIT, Gate
from tests.patterns.agents import Echo

if TYPE_CHECKING:
    from collections.abc import Iterator

    from actors import ActorRef, ActorSystem


@pytest.fixture
def gates() -> Iterator[list[Gate]]:
    made: list[Gate] = []
    yield made
    for g in made:
        g.released.set()


class FnStage(Stage):
    """A `Stage` (the tell hand-off) applying `fn`."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def process(self, item: Any) -> Any:
        return self.fn(item)


@pytest.fixture(params=["ask", "tell"])
def kind(request: pytest.FixtureRequest) -> str:
    """The hand-off: plain actors asked per item, or `Stage` actors told batches with credit."""
    return str(request.param)


def stage(system: ActorSystem, mode: str, fn: Any, kind: str = "ask") -> ActorRef[Any]:
    if kind == "tell":
        return system.spawn(FnStage, fn, mode=mode)
    return system.spawn(Echo, fn, None, mode=mode)


def test_items_pass_every_stage_in_order(system: ActorSystem, mode: str, kind: str) -> None:
    stages = [stage(system, mode, f, kind) for f in (lambda x: x + 1, lambda x: x * 2, lambda x: x - 3, str)]
    result = pipeline(stages, range(50), buffer=4).get(timeout=WAIT)
    assert result.outputs == tuple(str((x + 1) * 2 - 3) for x in range(50))
    assert result.count == 50
    assert result.high_water <= 16


def test_output_keeps_input_order_when_a_parallel_stage_finishes_out_of_order(
    system: ActorSystem, mode: str, gates: list[Gate]
) -> None:
    first = Gate()
    gates.append(first)
    seen_later: list[int] = []
    passed = threading.Event()

    def watch(x: int) -> int:
        if x > 0:
            seen_later.append(x)
        if len(seen_later) == 3:
            passed.set()
        return x

    # Item 0 is held by one routee of the first stage; the items behind it overtake it on the others.
    out: queue.Queue[int] = queue.Queue()
    parallel = system.spawn(Pool, _spec(mode, {0: first}), config=PoolConfig(min_size=3, max_size=3, overflow="queue"))
    future = pipeline([parallel, stage(system, mode, watch)], range(4), buffer=3, sink=out.put)
    assert passed.wait(WAIT)  # items 1..3 went through both stages while 0 is held
    assert out.empty()  # ...but none is emitted before item 0
    first.released.set()
    assert future.get(timeout=WAIT).count == 4
    assert [out.get_nowait() for _ in range(4)] == [0, 1, 2, 3]


def _spec(mode: str, gates: dict[Any, Gate]) -> Any:
    return ChildSpec(Echo, args=(None, gates), mode=mode)


def test_unordered_output_emits_in_completion_order(system: ActorSystem, mode: str, gates: list[Gate]) -> None:
    first = Gate()
    gates.append(first)
    out: queue.Queue[int] = queue.Queue()
    slow_first = system.spawn(
        Pool, _spec(mode, {0: first}), config=PoolConfig(min_size=2, max_size=2, overflow="queue")
    )
    future = pipeline([slow_first], range(3), buffer=2, ordered=False, sink=out.put)
    assert out.get(timeout=WAIT) == 1  # it overtook the held item 0
    first.released.set()
    assert future.get(timeout=WAIT).count == 3
    assert sorted([1, out.get_nowait(), out.get_nowait()]) == [0, 1, 2]


def test_a_slow_last_stage_slows_the_source_instead_of_growing_memory(
    system: ActorSystem, mode: str, kind: str
) -> None:
    pulled = [0]
    emitted = [0]
    worst = [0]
    lock = threading.Lock()
    release = threading.Semaphore(0)

    def source() -> Iterator[int]:
        for i in range(200):
            with lock:
                pulled[0] += 1
                worst[0] = max(worst[0], pulled[0] - emitted[0])
            yield i

    def slow(x: int) -> int:
        assert release.acquire(timeout=WAIT)
        return x

    def count(_x: int) -> None:
        with lock:
            emitted[0] += 1

    caps = [2, 3, 2, 1]
    stages = [stage(system, mode, lambda x: x, kind) for _ in range(3)]
    stages.append(stage(system, "thread", slow, kind))  # blocks on its own thread
    future = pipeline(stages, source(), buffer=caps, sink=count)
    for _ in range(200):
        release.release()
    result = future.get(timeout=WAIT)
    assert result.count == 200
    assert worst[0] <= sum(caps)
    assert result.high_water <= sum(caps)


def test_a_failing_item_goes_to_the_error_channel_and_the_rest_flow_on(
    system: ActorSystem, mode: str, kind: str
) -> None:
    def picky(x: int) -> int:
        if x % 5 == 3:
            msg = f"no {x}"
            raise ValueError(msg)
        return x

    stages = [stage(system, mode, lambda x: x, kind), stage(system, mode, picky, kind), stage(system, mode, str, kind)]
    result = pipeline(stages, range(12), on_error="channel").get(timeout=WAIT)
    assert result.outputs == tuple(str(x) for x in range(12) if x % 5 != 3)
    assert [(e.index, e.stage) for e in result.errors] == [(3, 1), (8, 1)]
    assert all(isinstance(e.__cause__, ValueError) for e in result.errors)


def test_a_failing_item_fails_the_pipeline_by_default(system: ActorSystem, mode: str, kind: str) -> None:
    stages = [stage(system, mode, lambda x: x, kind), stage(system, mode, lambda x: 1 // (x - 4), kind)]
    with pytest.raises(PipelineItemError, match="item 4 failed in stage 1") as caught:
        pipeline(stages, range(10)).get(timeout=WAIT)
    assert (caught.value.index, caught.value.stage) == (4, 1)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_a_source_that_raises_fails_the_pipeline(system: ActorSystem, mode: str, kind: str) -> None:
    def broken() -> Iterator[int]:
        yield 1
        msg = "source broke"
        raise OSError(msg)

    with pytest.raises(OSError, match="source broke"):
        pipeline([stage(system, mode, lambda x: x, kind)], broken()).get(timeout=WAIT)


def test_one_stage_serves_two_pipelines_at_once(system: ActorSystem, mode: str) -> None:
    shared = stage(system, mode, lambda x: x * 10, "tell")
    first = pipeline([stage(system, mode, lambda x: x + 1, "tell"), shared], range(100), buffer=3)
    second = pipeline([shared, stage(system, mode, lambda x: -x, "tell")], range(100), buffer=5)
    assert first.get(timeout=WAIT).outputs == tuple((x + 1) * 10 for x in range(100))
    assert second.get(timeout=WAIT).outputs == tuple(-x * 10 for x in range(100))


def test_one_stage_actor_can_be_two_stages_of_one_pipeline(system: ActorSystem, mode: str) -> None:
    twice = stage(system, mode, lambda x: x * 2, "tell")
    result = pipeline([twice, stage(system, mode, lambda x: x + 1, "tell"), twice], range(60), buffer=2)
    assert result.get(timeout=WAIT).outputs == tuple((x * 2 + 1) * 2 for x in range(60))


def test_unordered_tell_pipeline_emits_every_item(system: ActorSystem, mode: str) -> None:
    stages = [stage(system, mode, lambda x: x + 1, "tell") for _ in range(3)]
    result = pipeline(stages, range(300), buffer=[4, 1, 7], ordered=False).get(timeout=WAIT)
    assert sorted(result.outputs) == list(range(3, 303))
    assert result.high_water <= 12


def test_a_stopped_stage_fails_the_tell_pipeline_with_a_named_error(system: ActorSystem, mode: str) -> None:
    first, second = stage(system, mode, lambda x: x, "tell"), stage(system, mode, lambda x: x, "tell")
    second.stop()
    with pytest.raises(PipelineItemError, match=r"stage 1 .* stopped"):
        pipeline([first, second], range(10)).get(timeout=WAIT)
    assert first.ask(41) == 41  # the first stage goes on serving


def test_a_stage_asked_directly_replies_with_its_process(system: ActorSystem, mode: str) -> None:
    assert stage(system, mode, lambda x: x * 3, "tell").ask(7, timeout=WAIT) == 21


def test_bad_pipelines_are_named(system: ActorSystem) -> None:
    ref = stage(system, "pooled", lambda x: x)
    with pytest.raises(CoordinationInputError, match="at least one stage"):
        pipeline([], range(3))
    with pytest.raises(CoordinationInputError, match="stage 1 must be an actor ref"):
        pipeline([ref, print], range(3))  # type: ignore[list-item]
    with pytest.raises(CoordinationInputError, match="buffer must be an int >= 1"):
        pipeline([ref], range(3), buffer=0)
    with pytest.raises(CoordinationInputError, match="one per stage"):
        pipeline([ref], range(3), buffer=[1, 2])
    with pytest.raises(CoordinationInputError, match="on_error"):
        pipeline([ref], range(3), on_error="ignore")  # type: ignore[arg-type]
