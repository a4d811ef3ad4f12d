"""The history: streams and seqs, group commit, acknowledged = committed, queries, paging, retention."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pykka import ActorDeadError

from actors import ActorSystem, DeadLetterReason, ManualClock
from actors.errors import HistoryPayloadError, HistoryQueryError
from actors.messaging import HistoryRetention, MessageBroker, MessageHistory, spawn_service
from actors.messaging.history import Append
from actors.protocol import AgentMessage, MessageType
from tests.messaging.helpers import Recorder

if TYPE_CHECKING:
    from pathlib import Path


def _message(sender: str, recipient: str | None, n: int, correlation: str | None = None) -> AgentMessage:
    return AgentMessage(
        sender=sender, recipient=recipient, type=MessageType.TASK_REQUEST, content={"n": n}, correlation_id=correlation
    )


def test_each_stream_numbers_its_entries_from_one_in_append_order(system: ActorSystem, tmp_path: Path) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db")
    acks = [history.append("topic:a" if i % 2 else "topic:b", i, topic="a" if i % 2 else "b") for i in range(6)]
    assert [ack.get(timeout=5) for ack in acks] == [1, 1, 2, 2, 3, 3]
    page = history.query(stream="topic:a")
    assert [(e.seq, e.message) for e in page.entries] == [(1, 1), (2, 3), (3, 5)]


def test_appends_that_arrive_together_share_a_commit(system: ActorSystem, tmp_path: Path) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db")
    acks = [history.append("s", i) for i in range(2000)]
    assert acks[-1].get(timeout=10) == 2000
    stats = history.statistics()
    assert stats.appended == 2000
    assert stats.commits < 2000
    assert stats.largest_batch > 1


def test_the_broker_records_every_publication_and_an_acked_one_is_committed(
    system: ActorSystem, tmp_path: Path
) -> None:
    path = tmp_path / "h.db"
    history = spawn_service(system, MessageHistory, path)
    broker = spawn_service(system, MessageBroker, history=history)
    sink = system.spawn(Recorder)
    broker.subscribe("tasks.*", sink)
    broker.publish("tasks.a", _message("planner", None, 1))
    assert broker.publish_acked("tasks.b", _message("planner", None, 2)).get(timeout=5) == 1
    with sqlite3.connect(path) as other:  # another connection sees it: committed
        assert other.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 2
    assert [e.topic for e in history.query(agent="planner").entries] == ["tasks.a", "tasks.b"]


def test_a_non_json_payload_is_refused_before_delivery_when_history_is_on(system: ActorSystem, tmp_path: Path) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db")
    broker = spawn_service(system, MessageBroker, history=history)
    sink = system.spawn(Recorder)
    broker.subscribe("t", sink)
    with pytest.raises(HistoryPayloadError, match="JSON"):
        broker.publish("t", object())
    ack = history.append("t", [1, {2}])  # passes the top-level check, fails to encode
    with pytest.raises(HistoryPayloadError):
        ack.get(timeout=5)
    assert broker.publish("t", "fine") == 1
    assert sink.ask("get") == ["fine"]
    assert [d.reason for d in system.dead_letters.recent()] == [DeadLetterReason.REJECTED]


def test_queries_filter_by_agent_session_topic_type_correlation_and_time(system: ActorSystem, tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    history = spawn_service(system, MessageHistory, tmp_path / "h.db", now=clock.now)
    history.append("direct:a:b", _message("a", "b", 1, "c1"), sender="a", recipient="b").get(timeout=5)
    clock.advance(10)
    history.append("session:s", _message("b", None, 2), sender="b", session="s").get(timeout=5)
    clock.advance(10)
    history.append("topic:t", "plain", sender="c", topic="t").get(timeout=5)

    def contents(**filters: Any) -> list[Any]:
        return [e.message if e.kind == "json" else e.message.content["n"] for e in history.query(**filters).entries]

    assert contents(agent="b") == [1, 2]
    assert contents(sender="a") == [1]
    assert contents(recipient="b") == [1]
    assert contents(session="s") == [2]
    assert contents(topic="t") == ["plain"]
    assert contents(message_type="task_request") == [1, 2]
    assert contents(correlation_id="c1") == [1]
    assert contents(since=1005.0, until=1015.0) == [2]
    assert contents(agent="nobody") == []


def test_paging_walks_every_entry_once_in_order(system: ActorSystem, tmp_path: Path) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db")
    for i in range(25):
        history.append("s", i)
    seen: list[int] = []
    cursor = None
    while True:
        page = history.query(stream="s", limit=10, after=cursor)
        seen.extend(e.message for e in page.entries)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(range(25))


@pytest.mark.parametrize(
    ("filters", "match"),
    [({"since": 5.0, "until": 1.0}, "inverted"), ({"limit": -1}, "limit"), ({"after": "x"}, "cursor")],
)
def test_malformed_queries_are_refused_and_the_history_keeps_serving(
    system: ActorSystem, tmp_path: Path, filters: dict[str, Any], match: str
) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db")
    with pytest.raises(HistoryQueryError, match=match):
        history.query(**filters)
    assert history.append("s", 1).get(timeout=5) == 1


def test_retention_deletes_by_age_on_the_system_clock_timer(
    system: ActorSystem, clock: ManualClock, tmp_path: Path
) -> None:
    history = spawn_service(
        system,
        MessageHistory,
        tmp_path / "h.db",
        now=clock.now,
        retention=HistoryRetention(max_age=100.0, interval=10.0),
    )
    history.append("s", "old").get(timeout=5)
    clock.advance(95)
    history.append("s", "new").get(timeout=5)
    clock.advance(10)  # the old one is now 105 s old; the retention timer fires
    history.flush()
    assert [e.message for e in history.query(stream="s").entries] == ["new"]
    assert history.statistics().deleted == 1
    assert history.append("s", "next").get(timeout=5) == 3  # numbering carries on


def test_the_default_retention_is_thirty_days(system: ActorSystem, tmp_path: Path) -> None:
    clock = ManualClock(0.0)
    history = spawn_service(system, MessageHistory, tmp_path / "h.db", now=clock.now)
    history.append("s", 1).get(timeout=5)
    clock.advance(30 * 24 * 3600 - 1)
    assert history.enforce_retention() == 0
    clock.advance(2)
    assert history.enforce_retention() == 1


def test_retention_by_row_count_keeps_the_newest(system: ActorSystem, tmp_path: Path) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db", retention=HistoryRetention(max_rows=3))
    for i in range(10):
        history.append("s", i)
    assert history.enforce_retention() == 7
    assert [e.message for e in history.query(stream="s").entries] == [7, 8, 9]


def test_a_reopened_history_continues_every_stream_numbering(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with ActorSystem("one") as first:
        history = spawn_service(first, MessageHistory, path)
        history.append("s", 1)
        history.append("s", 2)
    with ActorSystem("two") as second:
        history = spawn_service(second, MessageHistory, path)
        assert history.append("s", 3).get(timeout=5) == 3
        assert [e.message for e in history.query(stream="s").entries] == [1, 2, 3]


def test_a_query_by_topic_finds_its_stream_and_the_entries_told_with_another_stream_in_log_order(
    system: ActorSystem, tmp_path: Path
) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db")
    told = [
        ("topic:t", "t", 1),
        ("custom", "t", 2),  # its topic is not its stream's: found through entries_topic_apart
        ("topic:t", None, 3),  # in the topic's stream without the topic: not the topic's
        ("topic:t", "t", 4),
        ("topic:u", "t", 5),
        ("topic:t", "t", 6),
    ]
    for stream, topic, n in told:
        history.append(stream, n, topic=topic)
    assert [e.message for e in history.query(topic="t").entries] == [1, 2, 4, 5, 6]
    first = history.query(topic="t", limit=2)
    assert [e.message for e in first.entries] == [1, 2]
    assert [e.message for e in history.query(topic="t", after=first.next_cursor).entries] == [4, 5, 6]
    assert [e.message for e in history.query(topic="t", stream="topic:t").entries] == [1, 4, 6]
    only_its_stream = spawn_service(system, MessageHistory, tmp_path / "plain.db")
    for n in range(3):
        only_its_stream.append("topic:v", n, topic="v")
    assert [e.message for e in only_its_stream.query(topic="v", limit=2).entries] == [0, 1]


def test_a_second_history_on_the_same_file_fails_its_commit_instead_of_numbering_a_stream_again(
    system: ActorSystem, tmp_path: Path
) -> None:
    path = tmp_path / "h.db"
    first = spawn_service(system, MessageHistory, path)
    assert first.append("s", 1).get(timeout=5) == 1
    second = spawn_service(system, MessageHistory, path)  # reads s at 1
    assert first.append("s", 2).get(timeout=5) == 2
    with pytest.raises(sqlite3.IntegrityError, match="another writer"):
        second.append("s", "again 2").get(timeout=5)
    assert first.append("new", 1).get(timeout=5) == 1
    with pytest.raises(sqlite3.IntegrityError):  # a stream new to it, which the first one made meanwhile
        second.append("new", "again 1").get(timeout=5)
    assert [(e.seq, e.message) for e in first.query(stream="s").entries] == [(1, 1), (2, 2)]


def test_a_file_made_with_the_former_schema_is_read_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # the schema before the stream index replaced UNIQUE and the topic index
        old.executescript(
            """
            CREATE TABLE entries (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL,
                ts REAL NOT NULL, kind TEXT NOT NULL, sender TEXT, recipient TEXT, topic TEXT, session TEXT,
                message_type TEXT, correlation_id TEXT, message_id TEXT, payload TEXT NOT NULL, UNIQUE (stream, seq));
            CREATE TABLE streams (stream TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
            CREATE INDEX entries_topic ON entries (topic, id) WHERE topic IS NOT NULL;
            INSERT INTO entries (stream, seq, ts, kind, topic, payload)
                VALUES ('topic:t', 1, 5.0, 'json', 't', '"old"');
            INSERT INTO streams VALUES ('topic:t', 1);
            """
        )
    with ActorSystem("reopened") as system:
        history = spawn_service(system, MessageHistory, path)
        assert history.append("topic:t", "new", topic="t").get(timeout=5) == 2
        assert [(e.seq, e.message) for e in history.query(topic="t").entries] == [(1, "old"), (2, "new")]
    with sqlite3.connect(path) as reopened:
        indexes = {row[0] for row in reopened.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "entries_stream" in indexes
        assert "entries_topic" not in indexes
        assert reopened.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_with_its_history_stopped_the_broker_keeps_delivering_and_acked_publications_fail(
    system: ActorSystem, tmp_path: Path
) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db")
    broker = spawn_service(system, MessageBroker, history=history)
    sink = system.spawn(Recorder)
    broker.subscribe("t", sink)
    history.stop()
    assert broker.publish("t", 1) == 1
    with pytest.raises(ActorDeadError):
        broker.publish_acked("t", 2).get(timeout=5)
    assert sink.ask("get") == [1, 2]
    assert [d.reason for d in system.dead_letters.recent()] == [DeadLetterReason.RECIPIENT_STOPPED] * 2


def test_a_clock_stepped_back_repeats_its_last_reading_so_time_bounds_stay_exact(tmp_path: Path) -> None:
    readings = iter([10.0, 20.0, 15.0, 30.0])
    with ActorSystem("clocked") as system:
        history = spawn_service(system, MessageHistory, tmp_path / "h.db", now=lambda: next(readings))
        for i in range(4):
            history.append("s", i).get(timeout=5)
        page = history.query(stream="s")
        assert [e.timestamp for e in page.entries] == [10.0, 20.0, 20.0, 30.0]
        assert [e.message for e in history.query(since=20.0, until=20.0).entries] == [1, 2]


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]), min_size=0, max_size=30),
    since=st.one_of(st.none(), st.floats(-1, 20)),
    until=st.one_of(st.none(), st.floats(-1, 20)),
)
def test_time_range_queries_match_a_scan_of_the_log(
    tmp_path_factory: pytest.TempPathFactory, steps: list[float], since: float | None, until: float | None
) -> None:
    if since is not None and until is not None and since > until:
        since, until = until, since
    clock = ManualClock(0.0)
    with ActorSystem("ranges") as system:
        history = spawn_service(system, MessageHistory, tmp_path_factory.mktemp("h") / "h.db", now=clock.now)
        for i, step in enumerate(steps):
            if step >= 0:
                clock.advance(step)
            history.append("s", i)
        stamps = [e.timestamp for e in history.query(stream="s", limit=100).entries]
        expected = [
            i for i, ts in enumerate(stamps) if (since is None or ts >= since) and (until is None or ts <= until)
        ]
        got = [e.message for e in history.query(since=since, until=until, limit=100).entries]
        assert got == expected


def test_entries_nobody_awaits_commit_together_once_the_commit_delay_passes(
    system: ActorSystem, clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "h.db"
    history = spawn_service(system, MessageHistory, path, commit_delay=0.005)
    for i in range(10):
        history.tell(Append("s", i))
    assert clock.wait_for_timers(2, timeout=5)  # the retention timer, then the commit timer
    with sqlite3.connect(path) as other:  # nothing commits before the delay (or another request)
        assert other.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 0
    clock.advance(0.005)
    stats = history.statistics()  # handled after the timer's commit (mailboxes are FIFO)
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 10
    assert (stats.appended, stats.commits) == (10, 1)


def test_an_entry_that_cannot_be_encoded_is_rejected_and_the_rest_of_its_run_commit_without_a_gap(
    system: ActorSystem, tmp_path: Path
) -> None:
    history = spawn_service(system, MessageHistory, tmp_path / "h.db", commit_delay=60.0)
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    # Lists at the top (check_payload lets them by), not JSON inside: an object, a cycle, too deep.
    for message in (0, 1, [object()], 3, cyclic, deep, 5):
        history.tell(Append("topic:t", message, topic="t"))
    history.flush()  # one commit, one run of the seven
    page = history.query(stream="topic:t")
    assert [(e.seq, e.message) for e in page.entries] == [(1, 0), (2, 1), (3, 3), (4, 5)]
    assert history.statistics().rejected == 3
    letters = system.dead_letters.recent()
    assert [letter.reason for letter in letters] == [DeadLetterReason.REJECTED] * 3
    assert all(isinstance(letter.exception, HistoryPayloadError) for letter in letters)
    assert "Circular reference" in str(letters[1].exception)
    assert history.append("topic:t", 6, topic="t").get(timeout=5) == 5


_AWKWARD = [
    'say "hi"\\n \u00e9 \u2603 \U0001f600',
    "",
    0,
    -(2**70),
    0.1 + 0.2,
    1e-300,
    -2.5e300,
    True,
    False,
    None,
    [],
    {},
    {"a": [1, 2.25, None, {"b": "\u00e9"}], "": True},
    [[[]], [1, "2"]],
]


@pytest.mark.parametrize("legacy", [False, True], ids=["arrows", "json_extract"])
def test_every_kind_of_message_is_stored_and_read_back_exactly_by_either_sql_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, legacy: bool
) -> None:
    """A run's rows travel as one JSON array; SQLite before 3.38 reads it with json_extract instead of -> / ->>."""
    import actors.messaging.history as module  # noqa: PLC0415

    monkeypatch.setattr(module, "_ARROWS", not legacy)
    stamps = iter([1.5, 0.1 + 0.2, 1e9 + 1 / 3, 1733155555.1234567] + [2e9 + i / 7 for i in range(100)])
    agents = [_message("a", "b", 1), _message("a", None, 2, correlation="c-1"), _message("b", "a", 3)]
    with ActorSystem("paths") as system:
        history = spawn_service(system, MessageHistory, tmp_path / "h.db", now=lambda: next(stamps), commit_delay=60)
        told = [*_AWKWARD, *agents, *_AWKWARD[:3]]
        for message in told:
            sender = message.sender if isinstance(message, AgentMessage) else None
            history.tell(Append("topic:t", message, sender=sender, topic="t"))
        history.flush()
        entries = history.query(stream="topic:t", limit=100).entries
    assert [e.seq for e in entries] == list(range(1, len(told) + 1))
    assert [e.kind for e in entries] == ["agent" if isinstance(m, AgentMessage) else "json" for m in told]
    expected = [m if isinstance(m, AgentMessage) else module._frozen_message(m) for m in told]
    assert [e.message for e in entries] == expected
    stamps_back = [e.timestamp for e in entries]
    assert stamps_back[:4] == [1.5, 1.5, 1e9 + 1 / 3, 1733155555.1234567]  # 0.1 + 0.2 < 1.5: repeated
    assert stamps_back[4:] == [2e9 + i / 7 for i in range(len(told) - 4)]
    assert [e.correlation_id for e in entries if e.kind == "agent"] == [None, "c-1", None]
    assert [e.message_type for e in entries if e.kind == "agent"] == ["task_request"] * 3


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=20))
def test_a_runs_timestamps_in_whole_ticks_or_as_floats_give_back_every_stamp_exactly(stamps: list[float]) -> None:
    import actors.messaging.history as module  # noqa: PLC0415

    stamps.sort()  # a run's stamps never decrease
    written, origin, unit = module._times(stamps)
    assert [(value + origin) * unit for value in written] == stamps  # as SQLite computes it, int64 then REAL
    if unit != 1.0:
        assert all(type(value) is int and -(2**63) < value + origin < 2**63 for value in written)
    else:
        assert origin == 0
    wall_clock = [1.7e9 + i / 3 for i in range(5)]
    assert module._times(wall_clock)[1:] == (round(1.7e9 * 2**22), 2.0**-22)
