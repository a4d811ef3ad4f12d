"""The child process of the crash-and-resume test: ``python -m tests.patterns.resume_child JOURNAL RUNLOG PHASE``.

Phase ``crash``: start execution ``exec1``; when task ``c`` starts, print
READY and hang (the parent kills the process with SIGKILL). Phase
``resume``: a new orchestrator on the same journal resumes what is
unfinished and prints the final states and results as JSON.

Every attempt of every task appends one line to RUNLOG (``task key attempt``)
with a single O_APPEND write, which survives the kill.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from actors import ActorSystem
from patterns.orchestrator import WorkflowClient, WorkflowOrchestrator
from patterns.workflow import RunTask, Task, Workflow


def main(journal: str, runlog: str, phase: str) -> int:
    fd = os.open(runlog, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    hang = threading.Event()

    def task(request: RunTask) -> int:
        os.write(fd, f"{request.task_id} {request.idempotency_key} {request.attempt}\n".encode())
        if request.task_id == "c" and phase == "crash":
            print("READY", flush=True)  # noqa: T201 - the parent test reads it
            hang.wait()  # killed here
        return int(sum(request.inputs.values())) + len(request.task_id) + ord(request.task_id)

    tasks = [
        Task("a", task),
        Task("b", task, depends_on="a"),
        Task("e", task, depends_on="a"),
        Task("c", task, depends_on=["b", "e"]),
        Task("d", task, depends_on="c"),
        Task("f", task, depends_on="c"),
    ]
    with ActorSystem("resume-child") as system:
        client = WorkflowClient(system.spawn(WorkflowOrchestrator, journal=journal))
        client.define(Workflow("pipeline", tasks))
        if phase == "crash":
            client.execute("pipeline", execution_id="exec1")
            hang.wait()
            return 1
        unfinished = client.unfinished()
        for execution_id in unfinished:
            client.resume(execution_id)
        status = client.wait_for_completion("exec1", timeout=30)
        out = {
            "unfinished": list(unfinished),
            "state": status.state.value,
            "tasks": {t.task_id: [t.state.value, t.attempts] for t in status.tasks},
            "results": status.results(),
        }
        print(json.dumps(out), flush=True)  # noqa: T201 - the parent test reads it
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
