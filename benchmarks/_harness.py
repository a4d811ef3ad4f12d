"""The benchmark framework: what a benchmark declares, and how its cases run.

A `Benchmark` names a module-level function and the metrics it returns. The
`Runner` expands it into cases (implementation x actor count x CPU placement)
and runs each case in a fresh interpreter (``python -m benchmarks._case``), so
that spawn times and memory figures never inherit another case's heap,
threads or caches. The child prints one JSON line; the runner turns it into a
`Record`.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = [
    "BASELINE",
    "IMPLS",
    "RESULT_PREFIX",
    "Benchmark",
    "Case",
    "Metric",
    "Record",
    "Runner",
    "Target",
    "discover",
    "placements",
]

BASELINE = "pykka"
"""The implementation every ratio is taken against: plain `pykka.ThreadingActor`."""

IMPLS = (BASELINE, "thread", "pooled")
"""Table columns, baseline first: pykka, then troupe's execution modes."""

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
        budget_s: a case whose predicted time exceeds this is skipped. The
            prediction extrapolates the same implementation's smaller sizes,
            at least linearly.
        timeout_s: a case still running after this is killed.
        requires: implementation -> the module it needs (an optional
            benchmark dependency); without it its cases are skipped.
        quick_impls: the implementations of a ``--quick`` run (default: `impls`).
        only_placements: the placements it runs in (default: every one).
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

    @property
    def module(self) -> str:
        """The short name of the module that defines it (``runtime``)."""
        return self.func.__module__.rpartition(".")[2]

    @property
    def full_name(self) -> str:
        """``module.name``, unique across the package."""
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Case:
    """One subprocess run: a benchmark for one implementation, size and placement."""

    benchmark: Benchmark
    impl: str
    n: int | None
    placement: str
    params: Mapping[str, Any]

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
        quick: use the benchmarks' quick sizes and parameters.
    """

    def __init__(self, benchmarks: list[Benchmark], placements: Mapping[str, int | None], *, quick: bool) -> None:
        self.benchmarks = benchmarks
        self.placements = dict(placements)
        self.quick = quick
        # (benchmark, impl, placement) -> (n, elapsed seconds) of the sizes run so far.
        self._history: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
        self._failed: set[tuple[str, str, str]] = set()

    def plan(self) -> list[Case]:
        """Return every case, by benchmark, then size, then placement, then implementation."""
        cases = []
        for bench in self.benchmarks:
            sizes: tuple[int | None, ...] = (bench.quick_sizes if self.quick else bench.sizes) or (None,)
            params = bench.quick_params if self.quick else bench.params
            for n in sorted(sizes, key=lambda size: size or 0):
                for placement in self.placements:
                    if bench.only_placements and placement not in bench.only_placements:
                        continue
                    for impl in (bench.quick_impls if self.quick else ()) or bench.impls:
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
        cap = case.benchmark.max_n.get(case.impl)
        if cap is not None and case.n > cap:
            return f"skipped: above the {cap:,}-actor cap for {case.impl}"
        if key in self._failed:
            return "skipped: a smaller N failed or was skipped"
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
        record = Record(case.benchmark.full_name, case.impl, case.n, case.placement, "skipped")
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
            record.status = "error"
            record.note = f"timed out after {case.benchmark.timeout_s:.0f} s"
            return
        record.wall_s = time.perf_counter() - start
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


def _result_line(stdout: str) -> dict[str, Any] | None:
    lines: Iterator[str] = (line for line in reversed(stdout.splitlines()) if line.startswith(RESULT_PREFIX))
    line = next(lines, None)
    return None if line is None else json.loads(line[len(RESULT_PREFIX) :])
