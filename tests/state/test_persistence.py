"""Durability: the SQLite backend, reopening a store, and a kill -9 in the middle of a write storm."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    ActorSystem,
    DeleteEntry,
    Entry,
    GetEntry,
    ManualClock,
    MemoryBackend,
    ProtocolError,
    SetEntry,
    SqliteBackend,
    StateStore,
    Tombstone,
)
from tests.state.helpers import entries

_ROOT = Path(__file__).resolve().parents[2]


@settings(
    max_examples=30,
    deadline=None,
    # The draws are cheap, but a loaded machine stretches the first one past the 1 s check.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(entries(), max_size=5, unique_by=lambda e: e.key))
def test_entries_round_trip_through_sqlite(tmp_path: Path, written: list[Entry]) -> None:
    backend = SqliteBackend(tmp_path / "roundtrip.db", synchronous="NORMAL")
    backend.open()
    try:
        backend.apply([Tombstone("gone", 3, 1.5)])
        backend.apply(written)
        backend.apply([])
    finally:
        backend.close()
    reopened = SqliteBackend(tmp_path / "roundtrip.db")
    try:
        records = {record.key: record for record in reopened.open()}
    finally:
        reopened.close()
    expected = {"gone": Tombstone("gone", 3, 1.5), **{entry.key: entry for entry in written}}
    assert records == expected
    (tmp_path / "roundtrip.db").unlink()


def test_a_reopened_store_has_every_entry_version_tombstone_and_ttl(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "state.db"
    with ActorSystem("first", clock=ManualClock(100)) as system:
        store = system.spawn(StateStore, SqliteBackend(path), mode=mode)
        store.ask(SetEntry("a", {"x": [1, 2]}, agent="ana", metadata={"m": 1}, ttl=50))
        store.ask(SetEntry("a", {"x": [3]}, agent="ana", ttl=60))
        store.ask(SetEntry("b", "bee"))
        store.ask(DeleteEntry("b"))
        before = store.ask(GetEntry("a"))
    with ActorSystem("second", clock=ManualClock(100)) as system:
        store = system.spawn(StateStore, SqliteBackend(path), mode=mode)
        assert store.ask(GetEntry("a")) == before
        assert before.expires_at == 160.0
        assert store.ask(GetEntry("b")) is None
        assert store.ask(SetEntry("b", "again", expected_version=0)).version == 3


def test_the_sqlite_backend_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    with ActorSystem("wal", clock=ManualClock()) as system:
        system.spawn(StateStore, SqliteBackend(path)).ask(SetEntry("k", 1))
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()


def test_a_store_restarted_on_the_same_memory_backend_finds_its_entries(system: ActorSystem) -> None:
    backend = MemoryBackend()
    store = system.spawn(StateStore, backend)
    store.ask(SetEntry("k", 1))
    store.stop()
    assert system.spawn(StateStore, backend).ask(GetEntry("k")).value == 1


def test_a_damaged_database_fails_spawn_with_the_key_named(tmp_path: Path, system: ActorSystem) -> None:
    path = tmp_path / "damaged.db"
    with ActorSystem("write", clock=ManualClock()) as other:
        other.spawn(StateStore, SqliteBackend(path)).ask(SetEntry("bad", 1))
    connection = sqlite3.connect(path)
    connection.execute("UPDATE entries SET value = '{not json' WHERE key = 'bad'")
    connection.commit()
    connection.close()
    with pytest.raises(ProtocolError, match="stored value of key 'bad' is not valid JSON"):
        system.spawn(StateStore, SqliteBackend(path))
    not_a_db = tmp_path / "text.db"
    not_a_db.write_text("hello, I am not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        system.spawn(StateStore, SqliteBackend(not_a_db))


def test_a_backend_serves_one_store_at_a_time(tmp_path: Path, system: ActorSystem) -> None:
    backend = SqliteBackend(tmp_path / "one.db")
    system.spawn(StateStore, backend)
    with pytest.raises(RuntimeError, match="already open"):
        system.spawn(StateStore, backend)
    with pytest.raises(ValueError, match="synchronous"):
        SqliteBackend(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]


_WRITER = textwrap.dedent(
    """
    import sys
    from actors import ActorSystem, SetEntry, SqliteBackend, StateStore

    with ActorSystem("crash") as system:
        store = system.spawn(StateStore, SqliteBackend(sys.argv[1]))
        versions = {}
        i = 0
        while True:
            futures = []
            for _ in range(50):
                key = f"k{i % 97}"
                expected = versions.get(key, 0)
                write = SetEntry(key, {"i": i}, ttl=1000.0 + i, expected_version=expected)
                futures.append(store.ask(write, block=False))
                versions[key] = expected + 1
                i += 1
            lines = []
            for future in futures:
                result = future.get()
                entry = result.entry
                lines.append(f"{entry.key} {entry.version} {entry.expires_at!r} {entry.value['i']}\\n")
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
    """
)


def test_every_acknowledged_write_survives_kill_9_in_the_middle_of_a_write_storm(tmp_path: Path) -> None:
    path = tmp_path / "storm.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    acked: list[str] = []
    try:
        assert child.stdout is not None
        while len(acked) < 3000:
            line = child.stdout.readline()
            assert line, f"the writer stopped early (exit {child.poll()})"
            acked.append(line)
        os.kill(child.pid, signal.SIGKILL)
        acked.extend(child.stdout.read().splitlines(keepends=True))  # acks printed before it died
    finally:
        child.kill()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    latest: dict[str, tuple[int, float, int]] = {}
    for line in acked:
        if not line.endswith("\n"):
            continue  # cut off by the kill: never fully acknowledged
        key, *fields = line.split()
        write = (int(fields[0]), float(fields[1]), int(fields[2]))  # version, expires_at, value
        latest[key] = max(latest.get(key, (0, 0.0, 0)), write)
    backend = SqliteBackend(path)
    try:
        stored: dict[str, Any] = {record.key: record for record in backend.open()}
    finally:
        backend.close()
    for key, (version, expires_at, i) in latest.items():
        record = stored[key]
        assert record.version >= version, f"{key}: acknowledged version {version}, stored {record.version}"
        if record.version == version:
            assert (record.expires_at, record.value["i"]) == (expires_at, i)
