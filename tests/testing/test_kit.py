"""The test kit: probes, expectations on the manual clock, leak checks, and the pytest fixture."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from actors import Actor, Agent, ExpectationError, Task
from actors.testing import ActorTestKit, TestProbe


class Forwarder(Actor):
    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target

    def on_receive(self, message: Any) -> Any:
        if message == "later":
            self.timers.start_single_timer("k", "ding", 5.0)
        else:
            self.target.tell(message)
        return None


def test_a_probe_expects_messages_in_order_by_type_or_value(
    actor_testkit: ActorTestKit, test_probe: TestProbe, mode: str
) -> None:
    forwarder = actor_testkit.spawn(Forwarder, test_probe.ref, mode=mode)
    forwarder.tell("a")
    forwarder.tell(2)
    assert test_probe.expect_message("a") == "a"
    assert test_probe.expect_message(int) == 2
    forwarder.tell("b")
    with pytest.raises(ExpectationError, match="expected 'c', got 'b'"):
        test_probe.expect_message("c")


def test_within_advances_the_manual_clock_so_timers_fire(actor_testkit: ActorTestKit, mode: str) -> None:
    probe = actor_testkit.probe()
    forwarder = actor_testkit.spawn(Forwarder, probe.ref, mode=mode)
    forwarder.ask("later")
    probe.expect_no_message(within=4.9)
    assert probe.expect_message("ding", within=0.1) == "ding"
    assert actor_testkit.clock.now() == pytest.approx(5.0)


def test_expect_no_message_fails_when_one_is_there(actor_testkit: ActorTestKit) -> None:
    probe = actor_testkit.probe()
    probe.ref.tell("surprise")
    with pytest.raises(ExpectationError, match="expected no message, got 'surprise'"):
        probe.expect_no_message()


def test_a_missing_message_fails_after_the_hang_guard(actor_testkit: ActorTestKit) -> None:
    with pytest.raises(ExpectationError, match="nothing arrived"):
        actor_testkit.probe().expect_message(timeout=0.05)


def test_a_probe_replies_to_asks_and_watches_for_termination(actor_testkit: ActorTestKit, mode: str) -> None:
    probe = actor_testkit.probe()
    probe.reply_with(lambda message: message * 2)
    assert probe.ref.ask(21) == 42
    assert probe.expect_message(21) == 21
    target = actor_testkit.spawn(Forwarder, probe.ref, mode=mode)
    probe.watch(target)
    target.stop()
    assert probe.expect_terminated(target).ref == target


def test_the_kit_fails_a_test_that_leaves_a_thread_running() -> None:
    kit = ActorTestKit()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="left-behind")
    thread.start()
    try:
        with pytest.raises(ExpectationError, match="left-behind"):
            kit.shutdown(timeout=5, grace=0.05)
    finally:
        stop.set()
        thread.join()


# The README's example: a custom agent tested in a dozen lines.
class Summarizer(Agent):
    agent_type = "summarizer"
    capabilities = frozenset({"summarize"})

    def handle_task(self, task: Task) -> str:
        return str(task.payload).split(".")[0]


def test_a_custom_agent_summarizes_and_heartbeats(actor_testkit: ActorTestKit, test_probe: TestProbe) -> None:
    agent = actor_testkit.spawn(Summarizer, "s1", coordinator=test_probe.ref)
    test_probe.expect_message()  # its registration
    done = actor_testkit.run_task(agent, "summarize", "First. Second.")
    assert (done.value, done.error) == ("First", None)
    assert len(actor_testkit.expect_heartbeats(test_probe, 2)) == 2  # every 30 s on the manual clock
