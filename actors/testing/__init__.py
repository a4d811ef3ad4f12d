"""A test kit for people who write actors and agents, after Akka's TestKit.

::

    def test_my_agent_answers(actor_testkit):          # the pytest fixture (entry point)
        agent = actor_testkit.spawn(MyAgent, "a1")
        done = actor_testkit.run_task(agent, "summarize", "long text")
        assert done.error is None and done.value == "long"

- `ActorTestKit`: an `ActorSystem` on a `ManualClock`; `shutdown` stops it
  and fails if a thread it started is still alive.
- `TestProbe`: an actor that records what it is sent, with `expect_message`,
  `expect_no_message`, `reply_with`, `watch` and `expect_terminated`.
- Agent helpers: `run_task` hands an agent a task as the coordinator would
  and returns its `TaskFinished`; `expect_heartbeats` advances the clock by
  heartbeat intervals and collects the beats.

Time: ``within`` is manual-clock time the kit advances itself; ``timeout``
is a real-time hang guard (a test that passes never waits for it).
"""

from actors.testing.kit import ActorTestKit, TestProbe

__all__ = ["ActorTestKit", "TestProbe"]
