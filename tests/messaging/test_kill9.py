"""kill -9 of a child process mid-storm: every acknowledged entry is there, and the database is intact."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from actors import ActorSystem
from actors.messaging import ConsumerController, ProducerController, spawn_service
from actors.messaging.reliable import GetStatistics
from tests.messaging.helpers import Recorder

_ROOT = Path(__file__).resolve().parents[2]


def _storm_then_kill(kind: str, path: Path, acknowledged: int) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.messaging._storm", kind, str(path)],
        cwd=_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            seen.append(line.strip())
            if len(seen) >= acknowledged:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert len(seen) >= acknowledged, "the child stopped before acknowledging enough"
    return seen


@pytest.mark.parametrize("kind", ["history", "inbox"])
def test_kill_9_during_a_storm_loses_no_acknowledged_entry_and_leaves_the_database_intact(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{kind}.db"
    acknowledged = _storm_then_kill(kind, path, 300 if kind == "history" else 100)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if kind == "history":
            stored = {int(row[0]) for row in db.execute("SELECT json_extract(payload, '$.n') FROM entries")}
            assert {int(n) for n in acknowledged} <= stored
            seqs = [row[0] for row in db.execute("SELECT seq FROM entries WHERE stream = 'topic:storm.x' ORDER BY id")]
            assert seqs == list(range(1, len(seqs) + 1))
        else:
            stored_ids = {row[0] for row in db.execute("SELECT message_id FROM inbox")}
            assert set(acknowledged) <= stored_ids


def test_what_a_killed_producer_accepted_into_its_outbox_is_sent_in_order_by_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    accepted = [int(n) for n in _storm_then_kill("outbox", path, 200)]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ActorSystem("resumed") as system:
        handler = system.spawn(Recorder)
        consumer = spawn_service(system, ConsumerController, handler)
        producer = spawn_service(system, ProducerController, consumer, outbox=path)
        producer.ask(GetStatistics())
        consumer.ask(GetStatistics())
        stats = producer.ask(GetStatistics())
        got = [m["n"] for m in handler.ask("get")]
        assert got == list(range(len(got)))  # in order, each once
        assert set(accepted) <= set(got)
        assert stats.buffered <= 25  # confirmed at each half window; the rest waits for a tick
        producer.tell({"n": len(got)})  # numbering carries on after the resumed ones
        consumer.ask(GetStatistics())
        assert [m["n"] for m in handler.ask("get")][-1] == len(got)
