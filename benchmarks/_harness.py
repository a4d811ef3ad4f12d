"""The benchmark framework: what a benchmark declares, and how its cases run.

A `Benchmark` names a module-level function and the metrics it returns. The
`Runner` expands it into cases (implementation x actor count x CPU placement)
and runs each case in a fresh interpreter (``python -m benchmarks._case``), so
that spawn times and memory figures never inherit another case's heap,
threads or caches. The child prints one JSON line; the runner turns it into a
`Record`.

Each benchmark declares what three run tiers measure, beside its cases:

- ``quick`` (``--quick``): `Benchmark.quick_sizes`, `Benchmark.quick_params`
  and `Benchmark.quick_impls`, in the default placements: a smoke run;
- ``default`` (no flag): `Benchmark.default_sizes` (a representative size)
  with `Benchmark.default_params` and `Benchmark.default_impls`, in
  `Benchmark.default_placements` (unpinned alone unless the benchmark is a
  headline one);
- ``full`` (``--full``): every one of `Benchmark.sizes` with
  `Benchmark.params`, in every placement: the whole matrix.

`tier_sizes`, `tier_params`, `tier_impls` and `tier_placements` are the one
place that reads those declarations. `remaining_s` estimates what a run has
left from the durations so far and those recorded by the last run.

Cases of one actor count run back to back for every implementation, so the
ratios compare figures taken seconds apart on a machine whose speed drifts.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import pkgutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "BASELINE",
    "IMPLS",
    "PEERS",
    "RESULT_PREFIX",
    "TIERS",
    "Benchmark",
    "Case",
    "CaseKey",
    "Headline",
    "Metric",
    "Record",
    "Runner",
    "Target",
    "case_key",
    "discover",
    "placements",
    "recorded_durations",
    "remaining_s",
    "tier_impls",
    "tier_max_n",
    "tier_params",
    "tier_placements",
    "tier_sizes",
    "write_durations",
]

BASELINE = "pykka"
"""The implementation every ratio is taken against: plain `pykka.ThreadingActor`."""

IMPLS = (BASELINE, "thread", "pooled")
"""Table columns, baseline first: pykka, then troupe's execution modes."""

PEERS = ("autogen", "langgraph", "thespian", "xoscar")
"""Other actor and agent frameworks: the closing summary gives troupe's ratio to each one present."""

TIERS = ("quick", "default", "full")
"""The run tiers, lightest first: ``--quick``, no flag, ``--full``."""

DEFAULT_PLACEMENTS = ("unpinned",)
"""Where a default run measures a benchmark that does not say (`Benchmark.default_placements`)."""

RESULT_PREFIX = "BENCHMARK-RESULT "
"""Marks the child's result line on its stdout, whatever else gets printed there."""

_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Metric:
    """One figure a benchmark function returns, and how to show it.

    Args:
        key: its key in the dict the function returns.
        label: the table row's label, unit included.
        higher_is_better: True for throughputs; False for times and sizes.
        better: the word for a better ratio ("faster", "less").
        worse: the word for a worse ratio ("slower", "more").
        plot: plot it against actor count.
    """

    key: str
    label: str
    higher_is_better: bool = False
    better: str = "faster"
    worse: str = "slower"
    plot: bool = False


@dataclass(frozen=True)
class Target:
    """A goal for one implementation's figure, checked after the run.

    Args:
        description: how the goal reads in the report.
        metric: the `Metric.key` it constrains.
        limit: the bound; a ratio to the baseline if `relative`.
        at_most: whether the figure (or ratio) must stay at or below `limit`.
        n: the actor count it applies to (None for single-actor benchmarks).
        relative: compare ``value / baseline value`` instead of the value.
        impl: the implementation it applies to.
        unit: shown after an absolute value in the report.
    """

    description: str
    metric: str
    limit: float
    at_most: bool = True
    n: int | None = None
    relative: bool = False
    impl: str = "pooled"
    unit: str = ""


@dataclass(frozen=True)
class Headline:
    """A figure the closing summary shows, with its ratio to pykka and to each peer present.

    Every `Target` is a headline too; declare a `Headline` for a figure that
    has no target but says how troupe compares (with a peer, say).

    Args:
        metric: the `Metric.key` shown.
        impl: the troupe implementation shown.
        n: the actor count (None for single-actor benchmarks).
        description: the row's label (default: the metric's label).
    """

    metric: str
    impl: str = "pooled"
    n: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: a function run once per implementation, actor count and placement.

    The function is called in a fresh subprocess as ``func(impl, **params)``,
    plus ``n=<actor count>`` if the benchmark has sizes, and returns a dict of
    floats keyed by `Metric.key`. It must stop everything it started.

    Args:
        name: short name, unique within its module (``--only`` selects by it).
        func: a module-level function (the child imports it by name).
        metrics: the figures it returns, in table order.
        params: keyword arguments of a full run.
        quick_params: keyword arguments of a ``--quick`` run.
        sizes: actor counts of a full run; empty for single-actor benchmarks.
        quick_sizes: actor counts of a ``--quick`` run.
        impls: implementations to compare, baseline first.
        targets: goals checked in the report.
        max_n: the largest actor count per implementation; bigger sizes are
            recorded as skipped (one thread per actor stops scaling long
            before 100,000).
        budget_s: a case whose predicted time exceeds this is skipped,
            unless a target names its implementation and size. The
            prediction extrapolates the same implementation's smaller sizes,
            at least linearly.
        timeout_s: a case still running after this is killed.
        requires: implementation -> the module it needs (an optional
            benchmark dependency); without it its cases are skipped.
        quick_impls: the implementations of a ``--quick`` run (default: `impls`).
        only_placements: the placements it runs in (default: every one).
        default_sizes: actor counts of a default run. None: the largest of
            `sizes` that every implementation runs (below its `max_n`), so
            each column gets a ratio, plus the sizes its targets and
            headlines name.
        default_params: keyword arguments of a default run (None: `params`).
        default_impls: the implementations of a default run (default:
            `impls`); leave out one whose every case costs minutes (a Ray
            cluster's start).
        default_max_n: per-implementation caps of a default run, tighter
            than `max_n` (pykka's 10,000 threads where its ratio at 1,000
            says enough).
        default_placements: the placements of a default and a quick run;
            headline benchmarks name both (``("unpinned", "pinned")``).
        headlines: figures for the closing summary, besides the targets.
    """

    name: str
    func: Callable[..., Mapping[str, float]]
    metrics: tuple[Metric, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    quick_params: Mapping[str, Any] = field(default_factory=dict)
    sizes: tuple[int, ...] = ()
    quick_sizes: tuple[int, ...] = ()
    impls: tuple[str, ...] = IMPLS
    targets: tuple[Target, ...] = ()
    max_n: Mapping[str, int] = field(default_factory=dict)
    budget_s: float = 20.0
    timeout_s: float = 120.0
    requires: Mapping[str, str] = field(default_factory=dict)
    quick_impls: tuple[str, ...] = ()
    """The implementations a ``--quick`` run measures (default: all of `impls`)."""
    only_placements: tuple[str, ...] = ()
    """The CPU placements it runs in (default: all); a Ray cluster pinned to one CPU means nothing."""
    default_sizes: tuple[int, ...] | None = None
    """The actor counts of a default run (None: derived, see the class docstring)."""
    default_params: Mapping[str, Any] | None = None
    """The keyword arguments of a default run (None: `params`)."""
    default_impls: tuple[str, ...] = ()
    """The implementations of a default run (default: all of `impls`)."""
    default_max_n: Mapping[str, int] = field(default_factory=dict)
    """Tighter per-implementation caps for a default run (default: `max_n`)."""
    default_placements: tuple[str, ...] = DEFAULT_PLACEMENTS
    """The placements of a default or quick run (``--full`` runs every one)."""
    headlines: tuple[Headline, ...] = ()
    """Figures the closing summary shows besides the targets."""

    @property
    def module(self) -> str:
        """The short name of the module that defines it (``runtime``)."""
        return self.func.__module__.rpartition(".")[2]

    @property
    def full_name(self) -> str:
        """``module.name``, unique across the package."""
        return f"{self.module}.{self.name}"


CaseKey: TypeAlias = tuple[str, str, int | None, str, str]
"""What identifies a case across runs: benchmark, implementation, N, placement, parameters (JSON)."""


def case_key(benchmark: str, impl: str, n: int | None, placement: str, params: Mapping[str, Any]) -> CaseKey:
    """Return the key under which a case's duration is recorded and looked up."""
    return (benchmark, impl, n, placement, json.dumps(dict(params), sort_keys=True))


@dataclass(frozen=True)
class Case:
    """One subprocess run: a benchmark for one implementation, size and placement."""

    benchmark: Benchmark
    impl: str
    n: int | None
    placement: str
    params: Mapping[str, Any]

    @property
    def key(self) -> CaseKey:
        """Its `case_key`."""
        return case_key(self.benchmark.full_name, self.impl, self.n, self.placement, self.params)

    def __str__(self) -> str:
        size = f"N={self.n:,}" if self.n is not None else "1 actor"
        return f"{self.benchmark.full_name:<18} {self.impl:<6} {size:<11} {self.placement}"


@dataclass
class Record:
    """What one case produced; `status` is ``ok``, ``skipped`` or ``error``."""

    benchmark: str
    impl: str
    n: int | None
    placement: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    elapsed_s: float = 0.0
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    cpu_s: float = 0.0
    """CPU seconds (user + system) the case's process used: what a loaded machine does not inflate."""

    @property
    def key(self) -> CaseKey:
        """Its `case_key`."""
        return case_key(self.benchmark, self.impl, self.n, self.placement, self.params)


def _check_tier(tier: str) -> None:
    if tier not in TIERS:
        msg = f"unknown benchmark tier {tier!r}: use one of {', '.join(TIERS)}"
        raise ValueError(msg)


def tier_sizes(bench: Benchmark, tier: str) -> tuple[int | None, ...]:
    """Return the actor counts `bench` runs at in `tier`, smallest first (``(None,)`` if it has none).

    A default run takes `Benchmark.default_sizes`; without them, the largest
    size every implementation of the run reaches (`tier_max_n`; each column
    then has its ratio to pykka), plus the sizes its targets and headlines name.
    """
    _check_tier(tier)
    if tier == "quick":
        chosen: tuple[int, ...] = bench.quick_sizes
    elif tier == "full" or not bench.sizes:
        chosen = bench.sizes
    elif bench.default_sizes is not None:
        chosen = bench.default_sizes
    else:
        limits = tier_max_n(bench, tier)
        caps = [limits[impl] for impl in tier_impls(bench, tier) if impl in limits]
        common = [n for n in bench.sizes if all(n <= cap for cap in caps)]
        goals: tuple[Target | Headline, ...] = (*bench.targets, *bench.headlines)
        named = {goal.n for goal in goals if goal.n in bench.sizes}
        chosen = tuple({max(common) if common else min(bench.sizes), *named})
    return tuple(sorted(chosen)) or (None,)


def tier_params(bench: Benchmark, tier: str) -> Mapping[str, Any]:
    """Return the keyword arguments of `bench` in `tier` (the actor count aside)."""
    _check_tier(tier)
    if tier == "quick":
        return bench.quick_params
    if tier == "default" and bench.default_params is not None:
        return bench.default_params
    return bench.params


def tier_impls(bench: Benchmark, tier: str) -> tuple[str, ...]:
    """Return the implementations `bench` measures in `tier`."""
    _check_tier(tier)
    narrowed = {"quick": bench.quick_impls, "default": bench.default_impls}.get(tier, ())
    return narrowed or bench.impls


def tier_max_n(bench: Benchmark, tier: str) -> Mapping[str, int]:
    """Return the per-implementation actor caps of `bench` in `tier`."""
    _check_tier(tier)
    if tier == "default" and bench.default_max_n:
        return {**bench.max_n, **bench.default_max_n}
    return bench.max_n


def tier_placements(bench: Benchmark, tier: str, available: Iterable[str]) -> list[str]:
    """Return the placements, of those `available`, that `bench` runs in for `tier`.

    A full run takes every one. Default and quick runs keep
    `Benchmark.default_placements`; if none of them is available
    (``--placement pinned`` was asked for), they take the first placement the
    benchmark may run in, so that every module is measured.
    """
    _check_tier(tier)
    allowed = [p for p in available if not bench.only_placements or p in bench.only_placements]
    if tier == "full":
        return allowed
    return [p for p in allowed if p in bench.default_placements] or allowed[:1]


def recorded_durations(path: Path) -> dict[CaseKey, float]:
    """Read each case's wall time from a ``results.json`` an earlier run wrote (empty if there is none).

    Cases are matched on `case_key`, parameters included, so the durations a
    ``--full`` run recorded serve a default run wherever both ran the same case.
    """
    try:
        document = json.loads(path.read_text())
        return {
            case_key(r["benchmark"], r["impl"], r["n"], r["placement"], r["params"]): float(r["wall_s"])
            for r in document["records"]
            if "params" in r
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_durations(path: Path, recorded: Mapping[CaseKey, float], records: Iterable[Record]) -> None:
    """Write `recorded` updated with `records`' wall times to `path`, for the next run's estimate.

    ``results.json`` holds only the last run's cases (an ``--only`` run's
    few); this file keeps every case any run in the same ``--out`` measured,
    in the shape `recorded_durations` reads.
    """
    merged = dict(recorded)
    merged.update({record.key: record.wall_s for record in records})
    rows = [
        {"benchmark": b, "impl": i, "n": n, "placement": p, "params": json.loads(params), "wall_s": wall}
        for (b, i, n, p, params), wall in sorted(merged.items(), key=lambda item: repr(item[0]))
    ]
    path.write_text(json.dumps({"records": rows}, indent=0) + "\n")


def remaining_s(
    pending: Sequence[CaseKey], done: Mapping[CaseKey, float], recorded: Mapping[CaseKey, float]
) -> float | None:
    """Estimate the seconds the `pending` cases will take; None when nothing is known yet.

    A case the last run recorded is predicted at its recorded duration, scaled
    by how this run's cases compare with their recorded durations so far (the
    machine may be busier or idler than it was). Any other case is predicted
    at the mean duration of this run's cases of the same benchmark, else of
    all its cases that ran (skipped ones take no time and are left out).

    Args:
        pending: the cases still to run.
        done: this run's cases so far -> their wall time (s).
        recorded: an earlier run's cases -> their wall time (s), see `recorded_durations`.
    """
    seen = [(spent, recorded[key]) for key, spent in done.items() if recorded.get(key, 0.0) > 0.0 and spent > 0.0]
    pace = sum(s for s, _ in seen) / sum(r for _, r in seen) if seen else 1.0
    ran = {key: spent for key, spent in done.items() if spent > 0.0}
    by_benchmark: dict[str, list[float]] = {}
    for key, spent in ran.items():
        by_benchmark.setdefault(key[0], []).append(spent)
    overall = sum(ran.values()) / len(ran) if ran else None
    total = 0.0
    for key in pending:
        if key in recorded:
            total += recorded[key] * pace
        elif key[0] in by_benchmark:
            total += sum(by_benchmark[key[0]]) / len(by_benchmark[key[0]])
        elif overall is not None:
            total += overall
        else:
            return None
    return total


def discover() -> list[Benchmark]:
    """Import every public module of this package and collect its ``BENCHMARKS``."""
    package = importlib.import_module(__package__ or "benchmarks")
    found: list[Benchmark] = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found.extend(getattr(module, "BENCHMARKS", ()))
    return found


def placements() -> dict[str, int | None]:
    """Map each CPU placement to run under to the CPU it pins to (None: unpinned).

    Pinned runs use the lowest CPU this process may run on, as
    ``taskset -c 0`` would. Without `os.sched_setaffinity` only unpinned runs.
    """
    if not hasattr(os, "sched_setaffinity"):
        return {"unpinned": None}
    return {"unpinned": None, "pinned": min(os.sched_getaffinity(0))}


class Runner:
    """Plan cases and run each in a fresh subprocess, within per-case time budgets.

    Args:
        benchmarks: what to run.
        placements: placement name -> CPU to pin to (None: unpinned).
        quick: the ``quick`` tier (kept for callers from before the tiers).
        tier: one of `TIERS`; default ``quick`` if `quick`, else ``full``.
    """

    def __init__(
        self,
        benchmarks: list[Benchmark],
        placements: Mapping[str, int | None],
        *,
        quick: bool = False,
        tier: str | None = None,
    ) -> None:
        self.benchmarks = benchmarks
        self.placements = dict(placements)
        self.tier = tier or ("quick" if quick else "full")
        _check_tier(self.tier)
        # (benchmark, impl, placement) -> (n, elapsed seconds) of the sizes run so far.
        self._history: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
        self._failed: set[tuple[str, str, str]] = set()

    @property
    def quick(self) -> bool:
        """Whether this is a ``--quick`` run."""
        return self.tier == "quick"

    def plan(self) -> list[Case]:
        """Return every case of the tier, by benchmark, then size, then placement, then implementation."""
        cases = []
        for bench in self.benchmarks:
            params = tier_params(bench, self.tier)
            for n in tier_sizes(bench, self.tier):
                for placement in tier_placements(bench, self.tier, self.placements):
                    for impl in tier_impls(bench, self.tier):
                        sized = dict(params) if n is None else {**params, "n": n}
                        cases.append(Case(bench, impl, n, placement, sized))
        return cases

    def skip_reason(self, case: Case) -> str | None:
        """Return why `case` will not run, or None if it will."""
        needed = case.benchmark.requires.get(case.impl)
        if needed is not None and importlib.util.find_spec(needed) is None:
            return f"skipped: needs {needed}, which is not installed (pip install troupe-actors[bench])"
        if case.n is None:
            return None
        key = (case.benchmark.full_name, case.impl, case.placement)
        cap = tier_max_n(case.benchmark, self.tier).get(case.impl)
        if cap is not None and case.n > cap:
            return f"skipped: above the {cap:,}-actor cap for {case.impl} in a {self.tier} run"
        if key in self._failed:
            return "skipped: a smaller N failed or was skipped"
        if any(target.impl == case.impl and target.n == case.n for target in case.benchmark.targets):
            # A target's figure is measured whatever the prediction says (the timeout still
            # guards): on a loaded machine the pooled 100,000 was predicted over budget.
            return None
        history = self._history.get(key, [])
        if not history:
            return None
        # Thread-per-actor costs grow faster than N (on 2 CPUs the last 5,000
        # of 20,000 pykka actors took ~9x as long to spawn as the first 5,000),
        # so extrapolate with the growth exponent seen so far, at least linear.
        exponent = 1.0
        if len(history) > 1:
            (n1, t1), (n2, t2) = history[-2:]
            if t1 > 0 and t2 > 0 and n2 > n1:
                exponent = max(1.0, math.log(t2 / t1) / math.log(n2 / n1))
        last_n, last_elapsed = history[-1]
        predicted = last_elapsed * (case.n / last_n) ** exponent
        if predicted > case.benchmark.budget_s:
            return f"skipped: over budget (~{predicted:.0f} s predicted > {case.benchmark.budget_s:.0f} s)"
        return None

    def run(self, case: Case) -> Record:
        """Run `case` in a subprocess (or skip it) and return its record."""
        record = Record(
            case.benchmark.full_name, case.impl, case.n, case.placement, "skipped", params=dict(case.params)
        )
        reason = self.skip_reason(case)
        if reason is not None:
            record.note = reason
        else:
            self._execute(case, record)
        if case.n is not None:
            key = (record.benchmark, record.impl, record.placement)
            if record.status == "ok":
                self._history.setdefault(key, []).append((case.n, record.elapsed_s))
            else:
                self._failed.add(key)
        return record

    def _execute(self, case: Case, record: Record) -> None:
        func = case.benchmark.func
        spec = {
            "func": f"{func.__module__}:{func.__qualname__}",
            "impl": case.impl,
            "params": dict(case.params),
            "cpu": self.placements[case.placement],
        }
        env = dict(os.environ)
        # The child must import this checkout's `actors` and `benchmarks`, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "benchmarks._case", json.dumps(spec)]
        cpu_before = _children_cpu_s()
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                check=False,
                cwd=_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=case.benchmark.timeout_s,
            )
        except subprocess.TimeoutExpired:
            record.wall_s = record.elapsed_s = time.perf_counter() - start
            record.cpu_s = _children_cpu_s() - cpu_before
            record.status = "error"
            record.note = f"timed out after {case.benchmark.timeout_s:.0f} s"
            return
        record.wall_s = time.perf_counter() - start
        record.cpu_s = _children_cpu_s() - cpu_before
        result = _result_line(done.stdout)
        if done.returncode != 0 or result is None:
            record.elapsed_s = record.wall_s
            record.status = "error"
            last_lines = " | ".join(done.stderr.strip().splitlines()[-3:])
            record.note = f"exit {done.returncode}: {last_lines or 'no result line'}"
            return
        record.metrics = {key: float(value) for key, value in result["metrics"].items()}
        record.elapsed_s = float(result["elapsed_s"])
        if result["leaked_threads"]:
            record.status = "error"
            record.note = f"left threads running: {result['leaked_threads'][:5]}"
        else:
            record.status = "ok"


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished children so far."""
    usage = os.times()
    return usage.children_user + usage.children_system


def _result_line(stdout: str) -> dict[str, Any] | None:
    lines: Iterator[str] = (line for line in reversed(stdout.splitlines()) if line.startswith(RESULT_PREFIX))
    line = next(lines, None)
    return None if line is None else json.loads(line[len(RESULT_PREFIX) :])
