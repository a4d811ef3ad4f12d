"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAMES] [--out DIR]``.

Prints progress to stderr and, at the end, markdown tables and target checks
to stdout; writes ``results.json`` and one PNG per module to ``--out``.
Exits 1 if a case failed (a crash, a timeout, a thread left running).
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

__all__ = ["main"]

_DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of well under 30 s")
    parser.add_argument("--only", default="", help="comma-separated benchmarks or modules (e.g. tell,ask or runtime)")
    parser.add_argument(
        "--placement", default="", help="comma-separated CPU placements to run (default: all of unpinned,pinned)"
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


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and report; return the exit status."""
    args = _parse(argv)
    benchmarks = _select(_harness.discover(), args.only)
    if args.list:
        for bench in benchmarks:
            print(f"{bench.full_name:<20} {', '.join(m.label for m in bench.metrics)}")
        return 0
    placements = _harness.placements()
    if args.placement:
        chosen = [name.strip() for name in args.placement.split(",")]
        placements = {name: cpu for name, cpu in placements.items() if name in chosen}
    args.out.mkdir(parents=True, exist_ok=True)
    titles = _placement_titles(placements)

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    runner = _harness.Runner(benchmarks, placements, quick=args.quick)
    plan = runner.plan()
    records = []
    for number, case in enumerate(plan, 1):
        _progress(f"[{number:>3}/{len(plan)}] {case} ... ", end="")
        record = runner.run(case)
        outcome = record.note if record.status == "skipped" else f"{record.wall_s:.1f} s {record.status}"
        _progress(outcome if record.status != "error" else f"{outcome}: {record.note}")
        records.append(record)
    wall_s = time.perf_counter() - started

    targets = _report.check_targets(benchmarks, records, placements)
    meta = {
        "started": started_at,
        "wall_s": wall_s,
        "quick": args.quick,
        "python": platform.python_version(),
        "pykka": metadata.version("pykka"),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "placements": titles,
    }
    _report.write_json(args.out / "results.json", meta, records, targets)
    try:
        pictures = _report.plot(benchmarks, records, args.out)
    except ImportError:
        pictures = []
        print("matplotlib is not installed: no plots (pip install troupe-actors[bench])")

    print(
        f"troupe benchmarks{' (quick)' if args.quick else ''}: Python {meta['python']}, pykka {meta['pykka']}, "
        f"{meta['cpus']} CPUs; ratios against pykka ThreadingActor measured in the same run.\n"
    )
    print(_report.tables(benchmarks, records, titles))
    print(_report.targets_table(targets, titles))
    written = ", ".join(str(path) for path in [args.out / "results.json", *pictures])
    print(f"Wrote {written}. Total {wall_s:.0f} s.")
    return 1 if any(r.status == "error" for r in records) else 0


def _progress(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
