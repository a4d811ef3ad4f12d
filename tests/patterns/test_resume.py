"""Crash and resume: a process running a workflow is killed mid-way; a new one resumes it from the journal."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from actors import ActorSystem, ManualClock, WorkflowDefinitionError, WorkflowNotFoundError
from patterns.journal import WorkflowJournal
from patterns.orchestrator import WorkflowClient, WorkflowOrchestrator
from patterns.retry import RetryPolicy
from patterns.workflow import RunTask, Task, TaskState, Workflow
from tests.core.actors_for_tests import WAIT
from tests.patterns.test_orchestrator import Events

ROOT = Path(__file__).resolve().parents[2]


def child(journal: Path, runlog: Path, phase: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.patterns.resume_child", str(journal), str(runlog), phase],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def expected_result(task_id: str, inputs: list[int]) -> int:
    return sum(inputs) + len(task_id) + ord(task_id)


def test_a_killed_execution_resumes_in_a_new_process_and_completed_tasks_ran_once(tmp_path: Path) -> None:
    journal, runlog = tmp_path / "journal.db", tmp_path / "runs.log"
    crashing = child(journal, runlog, "crash")
    assert crashing.stdout is not None
    assert crashing.stdout.readline().strip() == "READY"  # task c is in flight
    crashing.send_signal(signal.SIGKILL)
    crashing.wait(WAIT)
    crashing.stdout.close()
    assert crashing.returncode == -signal.SIGKILL

    resuming = child(journal, runlog, "resume")
    out, _ = resuming.communicate(timeout=WAIT * 3)
    assert resuming.returncode == 0
    report = json.loads(out)
    assert report["unfinished"] == ["exec1"]
    assert report["state"] == "succeeded"
    assert {t: s for t, (s, _) in report["tasks"].items()} == dict.fromkeys("abecdf", "succeeded")
    assert report["tasks"]["c"][1] == 2  # the attempt in flight ran again

    runs = [line.split() for line in runlog.read_text().splitlines()]
    by_task: dict[str, list[tuple[str, int]]] = {}
    for task_id, key, attempt in runs:
        by_task.setdefault(task_id, []).append((key, int(attempt)))
    # Every task that had completed before the kill ran once; the one in flight ran twice,
    # with the same idempotency key; the rest ran once, after the resume.
    assert {t: len(v) for t, v in by_task.items()} == {"a": 1, "b": 1, "e": 1, "c": 2, "d": 1, "f": 1}
    assert by_task["c"] == [("exec1/c", 1), ("exec1/c", 2)]
    # Results computed before the kill came back from the journal as the inputs of later tasks.
    a = expected_result("a", [])
    b, e = expected_result("b", [a]), expected_result("e", [a])
    c = expected_result("c", [b, e])
    assert report["results"] == {
        "a": a,
        "b": b,
        "e": e,
        "c": c,
        "d": expected_result("d", [c]),
        "f": expected_result("f", [c]),
    }


def test_resume_refuses_a_definition_whose_shape_changed_and_an_unknown_execution(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = WorkflowJournal(path)
    journal.begin_execution(
        "x1", "w", [("a", ()), ("b", ("a",))], max_parallel=None, failure_policy="run_all", inputs={}, started_at=0.0
    )
    journal.close()
    with ActorSystem("resume") as system:
        client = WorkflowClient(system.spawn(WorkflowOrchestrator, journal=path), timeout=WAIT)
        client.define(Workflow("w", [Task("a", lambda r: 1), Task("b", lambda r: 2)]))
        with pytest.raises(WorkflowDefinitionError, match="other tasks or dependencies"):
            client.resume("x1")
        with pytest.raises(WorkflowNotFoundError, match="no journal record of execution 'nope'"):
            client.resume("nope")
        client.define(Workflow("w", [Task("a", lambda r: 1), Task("b", lambda r: 2, depends_on="a")]))
        assert client.resume("x1") == "x1"
        assert client.wait_for_completion("x1", timeout=WAIT).results() == {"a": 1, "b": 2}
        assert client.unfinished() == ()


def test_a_resumed_retry_fires_at_its_original_due_time_on_the_system_clock(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    attempts: list[int] = []

    def flaky(request: RunTask) -> str:
        attempts.append(request.attempt)
        if request.attempt == 1:
            msg = "attempt 1 fails"
            raise ConnectionError(msg)
        return "ok"

    retry = RetryPolicy(max_attempts=3, initial_delay=10.0)
    workflow = Workflow("w", [Task("t", flaky, retry=retry)])
    first_clock = ManualClock(start=100.0)
    with ActorSystem("before", clock=first_clock) as system:
        client = WorkflowClient(system.spawn(WorkflowOrchestrator, journal=path), timeout=WAIT)
        client.define(workflow)
        events = Events(system)
        execution_id = client.execute("w", watchers=(events.ref,))
        events.task("t", TaskState.PENDING, attempt=1)  # journaled (and committed) in the same turn
    # The retry was due at 110; the new process starts at 104 on the same clock.
    clock = ManualClock(start=104.0)
    with ActorSystem("after", clock=clock) as system:
        client = WorkflowClient(system.spawn(WorkflowOrchestrator, journal=path), timeout=WAIT)
        client.define(workflow)
        assert client.resume(execution_id) == execution_id
        clock.advance(5.9)
        assert client.status(execution_id).task("t").attempts == 1  # 109.9: not due yet
        clock.advance(0.1)
        status = client.wait_for_completion(execution_id, timeout=WAIT)
        assert status.task("t").state is TaskState.SUCCEEDED
        assert status.task("t").attempts == 2
    assert attempts == [1, 2]


def test_a_resumed_retry_whose_due_time_has_passed_runs_at_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = WorkflowJournal(path)
    journal.begin_execution(
        "x1", "w", [("t", ())], max_parallel=None, failure_policy="run_all", inputs={}, started_at=0
    )
    journal.task_started("x1", "t", 1, at=0.0)
    journal.task_pending("x1", "t", 1, retry_due=5.0)
    journal.commit()
    assert journal.load("x1").tasks[0].retry_due == 5.0  # type: ignore[union-attr]
    journal.close()
    with ActorSystem("late", clock=ManualClock(start=50.0)) as system:
        client = WorkflowClient(system.spawn(WorkflowOrchestrator, journal=path), timeout=WAIT)
        client.define(Workflow("w", [Task("t", lambda r: r.attempt, retry=RetryPolicy(max_attempts=3))]))
        client.resume("x1")
        status = client.wait_for_completion("x1", timeout=WAIT)
    assert status.results() == {"t": 2}


def test_a_journal_written_before_retry_due_times_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE tasks (execution_id TEXT NOT NULL, task_id TEXT NOT NULL, state TEXT NOT NULL, "
        "attempts INTEGER NOT NULL, started_at REAL, ended_at REAL, result BLOB, error TEXT, "
        "PRIMARY KEY (execution_id, task_id)) WITHOUT ROWID;"
    )
    old.close()
    journal = WorkflowJournal(path)
    journal.begin_execution(
        "x1", "w", [("t", ())], max_parallel=None, failure_policy="run_all", inputs={}, started_at=0
    )
    journal.task_pending("x1", "t", 1, retry_due=7.0)
    journal.commit()
    record = journal.load("x1")
    journal.close()
    assert record is not None
    assert record.tasks[0].retry_due == 7.0
