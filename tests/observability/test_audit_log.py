"""JSONL audit logs (issue 15 §4): layout, fields, rotation and retention on the manual clock, bad input."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any, cast

import attrs
import pytest

from actors import (
    Actor,
    ActorSystem,
    AuditLogError,
    BoundedMailbox,
    BrokerRef,
    DeadLetterReason,
    GetCoordinationStatistics,
    ManualClock,
    MessageBroker,
    RetryPolicy,
)
from actors._core import AuditChannel, AuditRecord
from actors.observability import (
    AUDIT_STREAMS,
    DEFAULT_AUDIT_STREAMS,
    AuditLog,
    audit_log,
    disable_audit_log,
    disable_metrics,
    enable_audit_log,
    enable_metrics,
)
from actors.protocol import AgentMessage, MessageType
from actors.testing import ActorTestKit
from patterns import WorkflowClient, WorkflowOrchestrator
from patterns.workflow import RunTask, Task, Workflow
from tests.conftest import LogRecords
from tests.coordination.agents_for_tests import Echo, spawn_agent, spawn_coordinator
from tests.coordination.test_tasks import settle, submit
from tests.core.actors_for_tests import Gate
from tests.messaging.helpers import Recorder

WAIT = 10
DAY = 86400.0
COMMON = ("timestamp", "stream", "system", "event")
_MESSAGE = ("topic", "message_id", "from_agent", "to_agent", "message_type")
FIELDS = {
    "agent_activity": ("agent_id", "agent_type", "capabilities"),
    "task_history": ("task_id", "kind", "agent_id", "attempt", "duration_ms", "success", "error_type", "error"),
    "message_audit": (*_MESSAGE, "delivered", "dropped"),
    "message_audit.processed": (
        *_MESSAGE,
        "delivered",
        "dropped",
        "subscriber",
        "subscription",
        "success",
        "error_type",
        "latency_ms",
    ),
    "performance": ("metric", "value", "unit"),
    "errors": ("actor", "actor_class", "actor_urn", "error_type", "error", "message_type"),
}


def lines(log: AuditLog, stream: str, day: str | None = None) -> list[dict[str, Any]]:
    """Every event of `stream` (of `day`, default all days), in file order, each line parsed."""
    found: list[dict[str, Any]] = []
    for day_dir in sorted(p for p in log.directory.iterdir() if p.is_dir()):
        if day is not None and day_dir.name != day:
            continue
        for path in sorted(day_dir.glob(f"{stream}_*")):
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            found.extend(json.loads(line) for line in raw.decode().splitlines())
    return found


def today(log: AuditLog) -> str:
    return log.statistics().days[-1]


@pytest.fixture
def kit() -> Any:
    kit = ActorTestKit()
    yield kit
    disable_audit_log(kit.system)
    kit.shutdown()


class Crasher(Actor):
    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            msg = "it went boom"
            raise ValueError(msg)
        return message


def test_the_audit_log_is_off_by_default(system: ActorSystem) -> None:
    audit = system.audit
    assert not audit.attached
    assert not any(getattr(audit, stream) for stream in AUDIT_STREAMS)
    assert audit_log(system) is None
    assert disable_audit_log(system) is None


def test_coordinator_events_are_flat_json_lines_with_the_documented_fields(
    kit: ActorTestKit, tmp_path: Path, mode: str
) -> None:
    log = enable_audit_log(tmp_path, system=kit.system)
    coord = spawn_coordinator(kit, mode=mode)
    agent = spawn_agent(kit, Echo, "e1", coord, mode=mode)
    handle = submit(coord, payload="hello")
    assert handle.result(timeout=WAIT) == "hello"
    failing = submit(coord, payload=("fail", 99), retry=RetryPolicy(initial_delay=1, max_attempts=2))
    settle(kit, coord, agent)  # attempt 1 failed; its retry timer is armed
    kit.advance(1)
    with pytest.raises(ValueError, match="attempt 2 fails on purpose"):
        failing.result(timeout=WAIT)
    assert log.flush()

    registered = [e for e in lines(log, "agent_activity") if e["event"] == "registered"]
    assert [(e["agent_id"], e["agent_type"], e["capabilities"]) for e in registered] == [("echo/e1", "echo", "echo")]
    tasks = [e for e in lines(log, "task_history") if e["task_id"] == handle.task_id]
    assert [e["event"] for e in tasks] == ["submitted", "assigned", "completed"]
    done = tasks[-1]
    assert (done["agent_id"], done["attempt"], done["success"]) == ("echo/e1", 1, True)
    assert done["duration_ms"] >= 0
    failed = [e for e in lines(log, "task_history") if e["task_id"] == failing.task_id]
    assert [e["event"] for e in failed][-1] == "failed"
    assert (failed[-1]["success"], failed[-1]["error_type"]) == (False, "ValueError")
    assert "retrying" in [e["event"] for e in failed]

    for stream in DEFAULT_AUDIT_STREAMS:
        for event in lines(log, stream):
            assert set(COMMON) | set(FIELDS[stream]) <= set(event), (stream, event)
            assert event["stream"] == stream
            assert event["system"] == kit.system.name
            assert event["timestamp"].endswith("Z")
            assert event["timestamp"].startswith(today(log))
            assert all(not isinstance(v, dict | list) for v in event.values()), event  # flat


def test_status_changes_and_deregistration_are_agent_activity(kit: ActorTestKit, tmp_path: Path) -> None:
    log = enable_audit_log(tmp_path, system=kit.system)
    coord = spawn_coordinator(kit)
    agent = spawn_agent(kit, Echo, "e1", coord)
    submit(coord, payload="x").result(timeout=WAIT)
    agent.stop()
    coord.ask(GetCoordinationStatistics())  # the agent's Terminated was queued first (FIFO)
    assert log.flush()
    events = [(e["event"], e.get("status")) for e in lines(log, "agent_activity")]
    assert events[0] == ("registered", "idle")
    assert ("status_changed", "working") in events or ("status_changed", "busy") in events
    assert events[-1][0] == "deregistered"


def test_a_failing_actor_is_an_errors_event_with_its_name(system: ActorSystem, tmp_path: Path, mode: str) -> None:
    log = enable_audit_log(tmp_path, system=system)
    try:
        ref = system.spawn(Crasher, name="crashy", mode=mode)
        ref.tell("boom")
        ref.actor_stopped.wait(WAIT)
        assert log.flush()
        (event,) = lines(log, "errors")
        assert (event["event"], event["actor"], event["actor_class"]) == ("unhandled_exception", "crashy", "Crasher")
        assert (event["error_type"], event["error"], event["message_type"]) == ("ValueError", "it went boom", "str")
    finally:
        disable_audit_log(system)


def test_message_audit_is_opt_in_and_sampled(system: ActorSystem, tmp_path: Path) -> None:
    broker = cast("BrokerRef", system.spawn(MessageBroker))
    received: list[Any] = []
    gate = threading.Event()

    def collect(message: Any) -> None:
        received.append(message)
        if len(received) == 20:
            gate.set()

    broker.subscribe("news.*", collect)
    log = enable_audit_log(tmp_path, system=system)
    broker.publish("news.a", "not recorded: message_audit is off by default")
    disable_audit_log(system)
    log = enable_audit_log(tmp_path, system=system, streams=AUDIT_STREAMS, message_sample=5)
    for n in range(19):
        broker.publish("news.a", n)
    assert gate.wait(WAIT)
    assert log.flush()
    events = lines(log, "message_audit")
    assert len(events) == 4  # one in five of 19 publications, counted from the first: one line each
    assert all((e["event"], e["topic"], e["delivered"], e["dropped"]) == ("processed", "news.a", 1, 0) for e in events)
    assert all(e["message_type"] == "int" for e in events)
    disable_audit_log(system)


@pytest.mark.parametrize("period", [1, 2, 7, 4096, 4097, 10_000])
def test_one_message_event_in_message_sample_is_sampled_the_first_first(period: int) -> None:
    channel = AuditChannel()
    channel.attach(lambda _stream, _fields: None, ["message_audit"], message_sample=period)
    picks = [n for n in range(3 * period + 1) if channel.sampled()]
    assert picks == [0, period, 2 * period, 3 * period]
    channel.detach()


@pytest.mark.parametrize("period", [1, 3, 4096, 4097])
def test_next_of_sampling_steps_the_same_sampler_as_sampled(period: int) -> None:
    channel = AuditChannel()
    channel.attach(lambda _stream, _fields: None, ["message_audit"], message_sample=period)
    picks = [n for n in range(3 * period + 1) if (next(channel.sampling) if n % 2 else channel.sampled())]
    assert picks == [0, period, 2 * period, 3 * period]
    channel.detach()


class Subscriber(Actor):
    def __init__(self, *, touchy: bool = False) -> None:
        super().__init__()
        self.touchy = touchy

    def on_receive(self, message: Any) -> Any:
        if self.touchy and isinstance(message, AgentMessage) and message.content == "boom":
            msg = "it went boom"
            raise ValueError(msg)
        return message


def test_message_audit_writes_one_processed_line_per_hand_off_with_the_documented_fields(
    system: ActorSystem, tmp_path: Path, mode: str
) -> None:
    broker = cast("BrokerRef", system.spawn(MessageBroker))
    quiet = system.spawn(Subscriber, mode=mode, name="quiet")
    touchy = system.spawn(Subscriber, mode=mode, name="touchy", restart="permanent", touchy=True)
    broker.subscribe("news.*", quiet)
    broker.subscribe("news.*", touchy, agent="agent-7")
    log = enable_audit_log(tmp_path, system=system, streams=AUDIT_STREAMS)
    ok = AgentMessage(sender="a", recipient="b", type=MessageType.STATUS_UPDATE, content="fine")
    bad = attrs.evolve(ok, message_id="m-bad", content="boom")
    assert broker.publish("news.ok", ok) == 2
    assert broker.publish("news.bad", bad) == 2
    for ref in (quiet, touchy):  # FIFO: both publications were handled, their receipts settled
        assert ref.ask("sync", timeout=WAIT) == "sync"
    assert log.flush()
    events = lines(log, "message_audit")
    for event in events:
        assert set(event) == {*COMMON, *FIELDS["message_audit.processed"]}, event
    by = {(e["message_id"], e["subscriber"]): e for e in events}
    assert len(by) == len(events) == 2 * 2  # sent, received and processed folded: one line per hand-off
    for message in (ok, bad):
        for name in ("quiet", "agent-7"):
            processed = by[message.message_id, name]
            assert (processed["event"], processed["topic"], processed["delivered"], processed["dropped"]) == (
                "processed",
                "news.ok" if message is ok else "news.bad",
                2,
                0,
            )
            assert (processed["from_agent"], processed["to_agent"], processed["message_type"]) == (
                "a",
                "b",
                "status_update",
            )
            assert processed["latency_ms"] >= 0
            failed = message is bad and name == "agent-7"
            assert processed["success"] is not failed
            assert processed["error_type"] == ("ValueError" if failed else None)
    disable_audit_log(system)


def test_processed_lines_of_mixed_publications_through_one_subscription_each_carry_their_own_fields(
    system: ActorSystem, clock: ManualClock, tmp_path: Path, mode: str
) -> None:
    # The writer keeps each subscription's constant line text per publication kind: kinds that
    # alternate (topic, message class, sender, AgentMessage's parties and type, counts) must not mix.
    broker = cast("BrokerRef", system.spawn(MessageBroker))
    every = system.spawn(Subscriber, mode=mode, name="every")
    only_b = system.spawn(Subscriber, mode=mode, name="only-b")
    broker.subscribe("news.*", every)
    broker.subscribe("news.b", only_b)
    log = enable_audit_log(tmp_path, system=system, streams=AUDIT_STREAMS)
    expected: list[tuple[Any, ...]] = []
    for round_ in range(2):  # the second round finds every kind made already
        for topic, message, sender in [
            ("news.a", 1, None),
            ("news.c", 4, None),
            ("news.b", 2, None),
            ("news.a", "text", "agent-x"),
            ("news.a", 3, "agent-y"),
            ("news.b", AgentMessage(sender="p", recipient="q", type=MessageType.STATUS_UPDATE, content=0), None),
            ("news.b", AgentMessage(sender="p", recipient="q", type=MessageType.STATUS_UPDATE, content=1), None),
            ("news.a", AgentMessage(sender="p", recipient=None, type=MessageType.TASK_REQUEST, content=2), None),
            ("news.c", AgentMessage(sender="p", recipient=None, type=MessageType.TASK_REQUEST, content=3), None),
        ]:
            delivered = 2 if topic == "news.b" else 1
            assert broker.publish(topic, message, sender=sender) == delivered
            clock.advance(0.001 * (round_ + 1))
            ids: tuple[Any, ...]
            if isinstance(message, AgentMessage):
                ids = (message.message_id, message.sender, message.recipient, str(message.type))
            else:
                ids = (None, sender, None, type(message).__name__)
            expected.append((topic, *ids, delivered))
    for ref in (every, only_b):
        assert ref.ask("sync", timeout=WAIT) == "sync"  # FIFO: every publication handled, its line queued
    assert log.flush()
    events = lines(log, "message_audit")
    for event in events:
        assert set(event) == {*COMMON, *FIELDS["message_audit.processed"]}, event
        assert (event["event"], event["success"], event["error_type"], event["dropped"]) == ("processed", True, None, 0)
        assert event["latency_ms"] >= 0
    got = [
        (e["topic"], e["message_id"], e["from_agent"], e["to_agent"], e["message_type"], e["delivered"])
        for e in events
        if e["subscriber"] == "every"
    ]
    assert got == expected
    assert [e["topic"] for e in events if e["subscriber"] == "only-b"] == [t for t, *_ in expected if t == "news.b"]
    assert {e["subscription"] for e in events if e["subscriber"] == "every"} == {1}
    disable_audit_log(system)


def test_a_sampled_publication_without_a_hand_off_writes_its_sent_line(
    system: ActorSystem, tmp_path: Path, mode: str
) -> None:
    broker = cast("BrokerRef", system.spawn(MessageBroker))
    gate = Gate()
    held = system.spawn(_Noting, mode=mode, name="held", took=threading.Event())
    held.tell(("hold", gate))
    gate.wait_entered()
    broker.subscribe("full", held, capacity=1)
    log = enable_audit_log(tmp_path, system=system, streams=AUDIT_STREAMS)
    assert broker.publish("nobody", 0) == 0  # no subscriber: a dead letter
    assert broker.publish("full", 1) == 1  # its one place taken
    assert broker.publish("full", 2) == 0  # its buffer full: dropped
    gate.released.set()
    assert held.ask("get", timeout=WAIT) == [1]
    assert log.flush()
    events = [(e["event"], e["topic"], e["delivered"], e["dropped"]) for e in lines(log, "message_audit")]
    assert sorted(events) == [("processed", "full", 1, 0), ("sent", "full", 0, 1), ("sent", "nobody", 0, 0)]
    for event in lines(log, "message_audit"):
        key = "message_audit" if event["event"] == "sent" else "message_audit.processed"
        assert set(event) == {*COMMON, *FIELDS[key]}, event
    disable_audit_log(system)


def test_message_audit_text_with_quotes_escapes_and_non_ascii_reads_back_as_written(
    system: ActorSystem, tmp_path: Path
) -> None:
    # the broker encodes its message_audit events itself (once per publication): check its JSON
    broker = cast("BrokerRef", system.spawn(MessageBroker))
    odd = 'é "quoted" \\ back\nslash\t ✓'
    subscriber = system.spawn(Subscriber)
    broker.subscribe("news.*", subscriber, agent=odd + "?")  # not the sender: not skipped
    log = enable_audit_log(tmp_path, system=system, streams=AUDIT_STREAMS)
    message = AgentMessage(sender=odd, recipient=odd + "!", type=MessageType.STATUS_UPDATE, content="x")
    assert broker.publish("news.odd", message) == 1
    assert broker.publish("news.odd", odd) == 1  # not an AgentMessage: ids null, the class's name
    assert subscriber.ask("sync", timeout=WAIT) == "sync"  # FIFO: both handled, their lines queued
    assert log.flush()
    events = lines(log, "message_audit")
    assert [(e["from_agent"], e["to_agent"], e["subscriber"]) for e in events] == [
        (odd, odd + "!", odd + "?"),
        (None, None, odd + "?"),
    ]
    assert [(e["message_id"], e["message_type"]) for e in events] == [
        (message.message_id, "status_update"),
        (None, "str"),
    ]
    disable_audit_log(system)


class _Noting(Recorder):
    """A `Recorder` that sets `took` once it has recorded a message."""

    def __init__(self, took: threading.Event) -> None:
        super().__init__()
        self.took = took

    def on_receive(self, message: Any) -> Any:
        result = super().on_receive(message)
        if self.got:
            self.took.set()
        return result


class _Late(AuditRecord):
    """A record that is not ready until told (as a publication still being fanned out)."""

    def __init__(self) -> None:
        self.ready = False
        self.tries = 0
        self.tried_again = threading.Event()

    def render(self, head: str, reading: float, out: list[str]) -> bool:
        del reading
        self.tries += 1
        if not self.ready:
            if self.tries >= 2:  # the writer came back for it
                self.tried_again.set()
            return False
        out.append(f'{head},"event":"late"}}\n')
        return True


def test_a_record_not_ready_holds_back_what_follows_it_until_it_is(system: ActorSystem, tmp_path: Path) -> None:
    log = enable_audit_log(tmp_path, system=system, streams=["task_history"], flush_interval=0.01)
    late = _Late()
    system.audit.emit("task_history", late)
    system.audit.emit("task_history", {"event": "after"})
    assert late.tried_again.wait(WAIT)  # the writer keeps coming back for it
    assert lines(log, "task_history") == []  # and writes nothing that came after it
    late.ready = True
    assert log.flush()
    events = lines(log, "task_history")
    assert [e["event"] for e in events] == ["late", "after"]
    assert set(events[0]) == set(COMMON)
    disable_audit_log(system)


def test_message_audit_events_dropped_over_max_pending_leave_the_others_as_they_were(
    system: ActorSystem, tmp_path: Path, mode: str
) -> None:
    broker = cast("BrokerRef", system.spawn(MessageBroker))
    gate, took = Gate(), threading.Event()
    sub = system.spawn(_Noting, mode=mode, name="sub", took=took)
    broker.subscribe("t", sub)
    # A writer that sleeps until flushed, and room for one event.
    log = enable_audit_log(tmp_path, system=system, streams=AUDIT_STREAMS, max_pending=1, flush_interval=3600)
    sub.tell(("hold", gate))
    gate.wait_entered()
    system.audit.emit("task_history", {"event": "filler"})  # the one place taken
    assert broker.publish("t", 0) == 1
    gate.released.set()
    assert sub.ask("get", timeout=WAIT) == [0]  # FIFO: its receipt was settled, its line dropped
    assert log.flush()  # the filler written: room again
    assert broker.publish("t", 1) == 1
    assert sub.ask("get", timeout=WAIT) == [0, 1]
    assert log.flush()
    events = [(e["event"], e["message_type"], e["latency_ms"] >= 0) for e in lines(log, "message_audit")]
    assert events == [("processed", "int", True)]  # 1's: 0's line was dropped, nothing else of it
    assert log.statistics().dropped == 1
    disable_audit_log(system)


def test_a_hand_off_refused_by_the_subscribers_mailbox_writes_a_failed_processed_and_a_dead_letter(
    system: ActorSystem, tmp_path: Path, mode: str
) -> None:
    # The broker's buffer had room; the subscriber's own bounded mailbox then refused the tell.
    broker = cast("BrokerRef", system.spawn(MessageBroker))
    gate, took = Gate(), threading.Event()
    slow = system.spawn(_Noting, mode=mode, mailbox=BoundedMailbox(1, overflow="fail"), name="slow", took=took)
    slow.tell(("hold", gate))
    gate.wait_entered()
    broker.subscribe("t", slow)
    log = enable_audit_log(tmp_path, system=system, streams=AUDIT_STREAMS)
    assert broker.publish("t", 0) == 1
    assert broker.publish("t", 1) == 0  # slow's mailbox holds one already
    assert broker.statistics().subscribers[0].dropped == 1
    assert [d.message for d in system.dead_letters.recent() if d.reason is DeadLetterReason.MAILBOX_OVERFLOW] == [1]
    gate.released.set()
    assert took.wait(WAIT)  # it handled 0
    assert slow.ask("get", timeout=WAIT) == [0]  # its mailbox has room again; FIFO: 0's receipt is settled
    assert log.flush()
    events = [(e["event"], e["success"], e["error_type"], e["delivered"]) for e in lines(log, "message_audit")]
    assert events == [  # 1's hand-off refused at once, 0's handled after the gate opened
        ("processed", False, "MailboxFullError", 0),
        ("processed", True, None, 1),
    ]
    disable_audit_log(system)


def test_performance_samples_are_written(system: ActorSystem, tmp_path: Path) -> None:
    with enable_audit_log(tmp_path, system=system) as log:
        log.log_performance("response_time", 125.5, "ms", agent_id="agent_001")
        assert log.flush()
        (event,) = lines(log, "performance")
    assert (event["event"], event["metric"], event["value"], event["unit"], event["agent_id"]) == (
        "sample",
        "response_time",
        125.5,
        "ms",
        "agent_001",
    )
    assert audit_log(system) is None  # leaving the with block disabled it


def test_files_rotate_by_day_and_old_days_are_deleted_on_the_manual_clock(
    system: ActorSystem, clock: ManualClock, tmp_path: Path
) -> None:
    log = enable_audit_log(tmp_path, retention_days=3, system=system)
    try:
        days = []
        for n in range(5):
            system.audit.emit("task_history", {"event": "completed", "task_id": f"t{n}"})
            assert log.flush()
            days.append(today(log))
            clock.advance(DAY)
        assert len(set(days)) == 5
        for n, day in enumerate(days[:4]):
            assert [e["task_id"] for e in lines(log, "task_history", day)] == ([f"t{n}"] if n >= 2 else [])
        assert log.flush()
        stats = log.statistics()
        # Today (the 6th day) and the two before it are kept: the first three days are gone.
        assert stats.days == tuple(days[3:])
        assert set(stats.files) == {f"{d}/task_history_{d}.jsonl" for d in days[3:]}
        assert stats.written["task_history"] == 5
        assert stats.total_bytes == sum(stats.files.values()) > 0
        assert (tmp_path / days[4] / f"task_history_{days[4]}.jsonl").is_file()  # the seed's layout
    finally:
        disable_audit_log(system)


def test_a_full_day_file_rotates_by_size_and_closed_files_are_gzipped(
    system: ActorSystem, clock: ManualClock, tmp_path: Path
) -> None:
    log = enable_audit_log(tmp_path, system=system, max_bytes=2000, compression="gzip")
    try:
        day = today(log)
        for n in range(100):
            system.audit.emit("errors", {"event": "e", "actor": f"a{n}", "error": "x" * 20})
            if n % 10 == 9:
                assert log.flush()
        clock.advance(DAY)
        assert log.flush()
        names = sorted(log.statistics().files)
        assert names
        assert all(name.endswith(".jsonl.gz") for name in names if name.startswith(day)), names
        assert len([n for n in names if n.startswith(day)]) > 1, names
        assert [e["actor"] for e in lines(log, "errors", day)] == [f"a{n}" for n in range(100)]
    finally:
        disable_audit_log(system)


def test_a_directory_that_cannot_be_written_is_refused_at_enable_time(system: ActorSystem, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    before = set(threading.enumerate())
    with pytest.raises(AuditLogError, match="cannot write audit files under"):
        enable_audit_log(blocker / "logs", system=system)
    assert set(threading.enumerate()) == before  # no writer thread was started
    assert not system.audit.attached
    assert audit_log(system) is None


def test_a_full_disk_drops_the_batch_reports_it_and_the_system_runs_on(
    system: ActorSystem, tmp_path: Path, logs: LogRecords
) -> None:
    # /dev/full fails every write with ENOSPC: the kernel's own "disk full", no root needed.
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    log = enable_audit_log(tmp_path, system=system)
    try:
        day = today(log)
        target = tmp_path / day / f"errors_{day}.jsonl"
        target.symlink_to("/dev/full")
        for n in range(10):
            system.audit.emit("errors", {"event": "e", "actor": f"a{n}"})
        assert log.flush()
        stats = log.statistics()
        assert stats.dropped == 10
        assert stats.write_errors >= 1
        assert stats.last_error is not None
        assert "No space left on device" in stats.last_error
        assert stats.written["errors"] == 0
        assert any("a write failed" in m for m in logs.messages("ERROR"))
        ref = system.spawn(Crasher)
        assert ref.ask("still here", timeout=WAIT) == "still here"  # the system runs on
        target.unlink()  # the disk has room again
        system.audit.emit("errors", {"event": "e", "actor": "after"})
        assert log.flush()
        assert [e["actor"] for e in lines(log, "errors", day)] == ["after"]
        assert any("writing works again" in m for m in logs.messages("INFO"))
    finally:
        disable_audit_log(system)


def test_every_event_is_written_or_counted_as_dropped(system: ActorSystem, tmp_path: Path) -> None:
    log = enable_audit_log(tmp_path, system=system, max_pending=3)
    try:
        for n in range(50):
            system.audit.emit("errors", {"event": "e", "n": n})
        assert log.flush()
        stats = log.statistics()
        assert stats.written["errors"] + stats.dropped == 50
        assert stats.pending == 0
    finally:
        disable_audit_log(system)


def test_disable_joins_the_writer_and_a_second_enable_is_refused(system: ActorSystem, tmp_path: Path) -> None:
    log = enable_audit_log(tmp_path, system=system)
    with pytest.raises(AuditLogError, match="enabled already"):
        enable_audit_log(tmp_path, system=system)
    system.audit.emit("errors", {"event": "queued before disable"})
    stats = disable_audit_log(system)
    assert stats is not None
    assert stats.written["errors"] == 1  # disable wrote what was queued
    assert not [t for t in threading.enumerate() if t.name == f"troupe-audit-{system.name}"]
    assert not system.audit.attached
    assert disable_audit_log(system) is None  # idempotent
    system.audit.emit("errors", {"event": "after: no sink, dropped quietly"})
    assert lines(log, "errors")[-1]["event"] == "queued before disable"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"retention_days": 0}, ValueError),
        ({"retention_days": 1.5}, TypeError),
        ({"compression": "zip"}, ValueError),
        ({"streams": ("agent_activity", "gossip")}, ValueError),
        ({"message_sample": 0}, ValueError),
        ({"max_bytes": 0}, ValueError),
        ({"flush_interval": 0}, ValueError),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    system: ActorSystem, tmp_path: Path, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        enable_audit_log(tmp_path, system=system, **kwargs)
    assert not system.audit.attached
    assert audit_log(system) is None


def test_workflow_tasks_are_task_history_events(system: ActorSystem, tmp_path: Path, mode: str) -> None:
    def fail(_request: RunTask) -> Any:
        msg = "no"
        raise RuntimeError(msg)

    log = enable_audit_log(tmp_path, system=system)
    try:
        client = WorkflowClient(system.spawn(WorkflowOrchestrator, mode=mode), timeout=WAIT)
        client.define(Workflow("w", [Task("a", lambda _r: 1), Task("b", fail, depends_on=("a",))]))
        execution = client.execute("w")
        client.wait_for_completion(execution, timeout=WAIT)
        assert log.flush()
        events = [(e["task_id"], e["event"], e["success"]) for e in lines(log, "task_history")]
        assert events == [
            ("a", "started", None),
            ("a", "succeeded", True),
            ("b", "started", None),
            ("b", "failed", False),
        ]
        failed = lines(log, "task_history")[-1]
        assert (failed["kind"], failed["execution_id"], failed["error_type"]) == ("workflow", execution, "RuntimeError")
        assert set(FIELDS["task_history"]) <= set(failed)
    finally:
        disable_audit_log(system)


def test_the_metrics_are_sampled_into_performance_on_the_system_clock(
    system: ActorSystem, clock: ManualClock, tmp_path: Path
) -> None:
    enable_metrics(system)
    log = enable_audit_log(tmp_path, system=system, performance_interval=30)
    try:
        ref = system.spawn(Crasher, name="busy")
        for n in range(5):
            ref.ask(n, timeout=WAIT)
        assert log.flush()
        assert lines(log, "performance") == []  # nothing before the first interval
        clock.advance(30)
        sampler = log.sampler
        assert sampler is not None
        sampler.ask(None, timeout=WAIT)  # its tick was queued by advance(): handled before this ask (FIFO)
        assert log.flush()
        samples = {e["metric"]: e for e in lines(log, "performance")}
        assert samples["class.Crasher.messages_handled"]["value"] >= 5
        assert samples["class.Crasher.handler_seconds.sum"]["unit"] == "s"
        assert all(e["event"] == "sample" for e in samples.values())
    finally:
        disable_audit_log(system)
        disable_metrics(system)


def test_a_system_that_shuts_down_closes_its_audit_log(tmp_path: Path) -> None:
    system = ActorSystem("closing", clock=ManualClock())
    log = enable_audit_log(tmp_path, system=system)
    system.audit.emit("errors", {"event": "queued before the shutdown"})
    system.shutdown()
    assert not [t for t in threading.enumerate() if t.name == "troupe-audit-closing"]
    assert audit_log(system) is None
    assert [e["event"] for e in lines(log, "errors")] == ["queued before the shutdown"]
