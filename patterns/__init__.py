"""Coordination patterns composed from troupe actors, using only the public `actors` API.

Import from here::

    from patterns import Task, Workflow, WorkflowClient, WorkflowOrchestrator, consensus_vote, pipeline

- `WorkflowOrchestrator` (`patterns.orchestrator`): DAG executions with join
  rules, retries, timeouts, cancel, watch, results in the StateStore and a
  SQLite journal to resume from (`patterns.journal`); definitions in
  `patterns.workflow`, `RetryPolicy` in `patterns.retry`.
- `master_worker`, `consensus_vote`, `pipeline`, `scatter_gather`,
  `load_balanced`: one module each.
"""

from patterns.consensus import Ballot, Tally, VoteResult, consensus_vote
from patterns.journal import WorkflowJournal
from patterns.load_balanced import Submitter, load_balanced
from patterns.master_worker import master_worker, round_robin_split
from patterns.orchestrator import (
    CancelExecution,
    DefineWorkflow,
    ExecuteWorkflow,
    ExecutionFinished,
    ExecutionState,
    ExecutionStatus,
    GetExecution,
    GetOrchestratorStatistics,
    ListUnfinished,
    OrchestratorStatistics,
    ResumeExecution,
    TaskEvent,
    TaskStatus,
    WaitForCompletion,
    WatchExecution,
    WorkflowClient,
    WorkflowOrchestrator,
    state_key,
)
from patterns.pipeline import PipelineResult, Stage, pipeline
from patterns.retry import RetryPolicy
from patterns.scatter_gather import GatherResult, scatter_gather
from patterns.workflow import CancelTask, JoinRule, RunTask, Skip, Task, TaskState, TaskTarget, Workflow

__all__ = [
    "Ballot",
    "CancelExecution",
    "CancelTask",
    "DefineWorkflow",
    "ExecuteWorkflow",
    "ExecutionFinished",
    "ExecutionState",
    "ExecutionStatus",
    "GatherResult",
    "GetExecution",
    "GetOrchestratorStatistics",
    "JoinRule",
    "ListUnfinished",
    "OrchestratorStatistics",
    "PipelineResult",
    "ResumeExecution",
    "RetryPolicy",
    "RunTask",
    "Skip",
    "Stage",
    "Submitter",
    "Tally",
    "Task",
    "TaskEvent",
    "TaskState",
    "TaskStatus",
    "TaskTarget",
    "VoteResult",
    "WaitForCompletion",
    "WatchExecution",
    "Workflow",
    "WorkflowClient",
    "WorkflowJournal",
    "WorkflowOrchestrator",
    "consensus_vote",
    "load_balanced",
    "master_worker",
    "pipeline",
    "round_robin_split",
    "scatter_gather",
    "state_key",
]
