"""Audit log benchmarks (issue 15 §5), for the observability module's marked section.

- ``audit_write``: events/s the JSONL writer puts on disk: one thread emits
  `events` task_history-sized events through ``system.audit`` as fast as it
  can, and the clock stops when `AuditLog.flush` says all are written.
- ``audit_sender``: what the audit log costs the code that emits: the same
  coordinator workload (agents registering, `tasks` tasks submitted,
  assigned and completed: five or more events per task) with the log off and
  on, interleaved rounds in one process; the sender is the thread
  submitting and awaiting the tasks.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from actors import ActorSystem, Agent, Coordinator, Submit, Task, TaskSpec
from actors.observability import disable_audit_log, enable_audit_log

__all__ = ["AUDIT_FUNCTIONS", "audit_sender", "audit_write"]

_WAIT_S = 600.0


def audit_write(impl: str, *, events: int, rounds: int) -> dict[str, float]:
    """Events per second from the first emit to the flush that has them all on disk."""
    del impl  # the writer is one thread whatever the actors' mode
    rates, emit_ns = [], []
    with ActorSystem(name="bench") as system, tempfile.TemporaryDirectory() as directory:
        for _ in range(rounds):
            log = enable_audit_log(directory, system=system, max_bytes=None)
            emit = system.audit.emit
            start = time.perf_counter()
            for n in range(events):
                emit("task_history", {"event": "completed", "task_id": f"t-{n}", "agent_id": "echo/e1", "attempt": 1})
            emitted = time.perf_counter()
            if not log.flush(timeout=_WAIT_S):
                msg = "the audit writer did not finish"
                raise RuntimeError(msg)
            done = time.perf_counter()
            stats = disable_audit_log(system)
            if stats is None or stats.dropped:
                msg = f"events were dropped: {stats}"
                raise RuntimeError(msg)
            rates.append(events / (done - start))
            emit_ns.append((emitted - start) / events * 1e9)
    return {"written_per_s": statistics.median(rates), "emit_ns": statistics.median(emit_ns)}


class _Worker(Agent):
    agent_type = "bench"
    capabilities = frozenset({"work"})
    max_concurrent_tasks = 4

    def handle_task(self, task: Task) -> Any:
        return task.payload


def _run_tasks(coordinator: Any, tasks: int) -> float:
    start = time.perf_counter()
    handles = [coordinator.ask(Submit(TaskSpec("work", payload=n, requires={"work"}))) for n in range(tasks)]
    for handle in handles:
        handle.result(timeout=_WAIT_S)
    return time.perf_counter() - start


def audit_sender(impl: str, *, tasks: int, rounds: int) -> dict[str, float]:
    """Seconds for `tasks` coordinator tasks with the audit log off and on (interleaved rounds)."""
    off, on, written = [], [], 0
    with ActorSystem(name="bench") as system, tempfile.TemporaryDirectory() as directory:
        coordinator = system.spawn(Coordinator, mode=impl)
        for key in range(4):
            system.spawn(_Worker, f"w{key}", coordinator=coordinator, mode=impl)
        _run_tasks(coordinator, tasks // 10)  # warm up
        for _ in range(rounds):
            off.append(_run_tasks(coordinator, tasks))
            log = enable_audit_log(directory, system=system)
            on.append(_run_tasks(coordinator, tasks))
            log.flush(timeout=_WAIT_S)
            stats = disable_audit_log(system)
            written += sum(stats.written.values()) if stats is not None else 0
    off_s, on_s = statistics.median(off), statistics.median(on)
    return {
        "tasks_per_s_off": tasks / off_s,
        "tasks_per_s_on": tasks / on_s,
        "slowdown_pct": (on_s / off_s - 1) * 100,
        "events_per_task": written / (tasks * rounds),
    }


AUDIT_FUNCTIONS = (audit_write, audit_sender)

if __name__ == "__main__":
    print(audit_write("pooled", events=200_000, rounds=3))
    print(audit_sender("pooled", tasks=5_000, rounds=5))
