"""Run the benchmarks: ``python -m benchmarks [--quick | --full] [--only NAMES] [--out DIR]``.

Three tiers, declared by each benchmark beside its cases (see
`benchmarks._harness`): the default run measures every module at a
representative size (both placements for the headline runtime rows, unpinned
elsewhere); ``--full`` runs the whole matrix (every size, both placements);
``--quick`` is a smoke run at the smallest sizes.

Prints progress to stderr, one line per case with the time elapsed and an
estimate of what is left (from the durations so far, and from those earlier
runs recorded for the same cases in ``--out``/durations.json); at the end,
markdown tables per module and one summary table of the headline figures and
targets to stdout. Writes ``results.json`` and one PNG per module to
``--out``, and updates ``durations.json`` there. Exits 1 if a case failed (a crash, a timeout, a thread left running).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks import _harness, _report

__all__ = ["main", "progress_prefix"]

_DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    tier = parser.add_mutually_exclusive_group()
    tier.add_argument("--quick", action="store_true", help="tiny sizes, every module: a smoke run")
    tier.add_argument("--full", action="store_true", help="the whole matrix: every size, both placements everywhere")
    parser.add_argument("--only", default="", help="comma-separated benchmarks or modules (e.g. tell,ask or runtime)")
    parser.add_argument(
        "--placement",
        default="",
        help="comma-separated CPU placements (unpinned,pinned; default: what each benchmark declares)",
    )
    parser.add_argument("--out", type=Path, default=_DEFAULT_OUT, help=f"where results go (default {_DEFAULT_OUT})")
    parser.add_argument("--list", action="store_true", help="list the registered benchmarks and exit")
    return parser.parse_args(argv)


def _select(benchmarks: list[_harness.Benchmark], only: str) -> list[_harness.Benchmark]:
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    if not wanted:
        return benchmarks
    chosen = [b for b in benchmarks if wanted & {b.name, b.module, b.full_name}]
    unknown = wanted - {name for b in benchmarks for name in (b.name, b.module, b.full_name)}
    if unknown:
        msg = f"unknown benchmark(s) {sorted(unknown)}; see python -m benchmarks --list"
        raise SystemExit(msg)
    return chosen


def _placement_titles(placements: dict[str, int | None]) -> dict[str, str]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    titles = {"unpinned": f"unpinned ({cpus} CPUs)"}
    for name, cpu in placements.items():
        if cpu is not None:
            titles[name] = f"pinned to CPU {cpu} (taskset -c {cpu})"
    return {name: titles[name] for name in placements}


def _describe(bench: _harness.Benchmark, tier: str, placements: dict[str, int | None]) -> str:
    """Say what `bench` measures in `tier`: ``N=10,000 100,000; pykka, thread, pooled; unpinned, pinned``."""
    sizes = _harness.tier_sizes(bench, tier)
    shown = "1 actor" if sizes == (None,) else "N=" + " ".join(f"{n:,}" for n in sizes if n is not None)
    where = _harness.tier_placements(bench, tier, placements)
    impls = ", ".join(_harness.tier_impls(bench, tier))
    caps = _harness.tier_max_n(bench, tier)
    capped = "".join(f"; {impl} up to N={cap:,}" for impl, cap in caps.items() if sizes[-1] and sizes[-1] > cap)
    return f"{shown}; {impls}; {', '.join(where) or 'not run here'}{capped}"


def _tier(args: argparse.Namespace) -> str:
    if args.quick:
        return "quick"
    return "full" if args.full else "default"


def _clock(seconds: float) -> str:
    """Format a duration as ``m:ss`` (``h:mm:ss`` from an hour)."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def progress_prefix(number: int, total: int, elapsed_s: float, left_s: float | None) -> str:
    """Return a progress line's head: ``[ 12/86 1:23 elapsed, ~4:10 left]``."""
    left = "? left" if left_s is None else f"~{_clock(left_s)} left"
    return f"[{number:>3}/{total} {_clock(elapsed_s)} elapsed, {left}]"


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and report; return the exit status."""
    args = _parse(argv)
    benchmarks = _select(_harness.discover(), args.only)
    placements = _harness.placements()
    if args.list:
        for bench in benchmarks:
            print(f"{bench.full_name:<28} {', '.join(m.label for m in bench.metrics)}")
            for tier in _harness.TIERS:
                print(f"    {tier:<8} {_describe(bench, tier, placements)}")
        return 0
    if args.placement:
        chosen = [name.strip() for name in args.placement.split(",")]
        placements = {name: cpu for name, cpu in placements.items() if name in chosen}
    args.out.mkdir(parents=True, exist_ok=True)
    titles = _placement_titles(placements)

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    tier = _tier(args)
    runner = _harness.Runner(benchmarks, placements, tier=tier)
    plan = runner.plan()
    durations = args.out / "durations.json"
    recorded = _harness.recorded_durations(durations) or _harness.recorded_durations(args.out / "results.json")
    done: dict[_harness.CaseKey, float] = {}
    records = []
    for number, case in enumerate(plan, 1):
        left = _harness.remaining_s([c.key for c in plan[number - 1 :]], done, recorded)
        prefix = progress_prefix(number, len(plan), time.perf_counter() - started, left)
        _progress(f"{prefix} {case} ... ", end="")
        record = runner.run(case)
        outcome = record.note if record.status == "skipped" else f"{record.wall_s:.1f} s {record.status}"
        if record.status != "skipped":
            outcome += f" ({record.cpu_s:.1f} s CPU)"
        _progress(outcome if record.status != "error" else f"{outcome}: {record.note}")
        records.append(record)
        done[case.key] = record.wall_s
    wall_s = time.perf_counter() - started
    cpu_s = sum(record.cpu_s for record in records)

    targets = _report.check_targets(benchmarks, records, placements)
    summary_rows = _report.summary(benchmarks, records)
    meta = {
        "started": started_at,
        "wall_s": wall_s,
        "cases_cpu_s": cpu_s,
        "tier": tier,
        "quick": tier == "quick",
        "python": platform.python_version(),
        "pykka": metadata.version("pykka"),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "placements": titles,
    }
    _report.write_json(args.out / "results.json", meta, records, targets, summary_rows)
    _harness.write_durations(durations, recorded, records)
    try:
        pictures = _report.plot(benchmarks, records, args.out)
    except ImportError:
        pictures = []
        print("matplotlib is not installed: no plots (pip install troupe-actors[bench])")

    print(
        f"troupe benchmarks ({tier} run): Python {meta['python']}, pykka {meta['pykka']}, "
        f"{meta['cpus']} CPUs; ratios against pykka ThreadingActor measured in the same run.\n"
    )
    print(_report.tables(benchmarks, records, titles))
    print(_report.summary_table(summary_rows, titles))
    written = ", ".join(str(path) for path in [args.out / "results.json", *pictures])
    print(f"Wrote {written}. Total {wall_s:.0f} s ({_clock(wall_s)}); the cases used {cpu_s:.0f} s of CPU.")
    return 1 if any(r.status == "error" for r in records) else 0


def _progress(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
