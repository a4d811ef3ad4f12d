"""Turn benchmark records into markdown tables, target checks, JSON and plots.

Tables have one row per metric and actor count and one column per
implementation, each troupe column followed by its ratio to pykka in words
("6.8x faster", "3.1x less"), so they read the same whichever way a metric
is better and paste into the README as they are.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from benchmarks._harness import BASELINE

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from benchmarks._harness import Benchmark, Metric, Record, Target

__all__ = ["check_targets", "format_number", "format_ratio", "plot", "tables", "targets_table", "write_json"]

_Key = tuple[str, str, int | None, str]  # benchmark, impl, n, placement


def format_number(value: float) -> str:
    """Format with about three significant digits: ``212k``, ``1.52M``, ``21.3``, ``0.0412``."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.2f}M"
    if size >= 1e4:
        return f"{value / 1e3:.0f}k"
    if size >= 1e3:
        return f"{value:.0f}"
    return f"{value:.3g}"


def format_ratio(value: float, baseline: float, metric: Metric) -> str:
    """Say how `value` compares with `baseline`: ``6.8x faster``, ``2.1x slower``, ``same``."""
    if value <= 0 or baseline <= 0:
        return "n/a"
    advantage = value / baseline if metric.higher_is_better else baseline / value
    factor = advantage if advantage >= 1 else 1 / advantage
    shown = f"{factor:.0f}" if factor >= 10 else f"{factor:.1f}"
    if shown == "1.0":
        return "same"
    return f"{shown}x {metric.better if advantage >= 1 else metric.worse}"


def _index(records: Iterable[Record]) -> dict[_Key, Record]:
    return {(r.benchmark, r.impl, r.n, r.placement): r for r in records}


def _cell(record: Record | None, key: str) -> str:
    if record is None:
        return "—"
    if record.status == "ok":
        return format_number(record.metrics[key])
    if record.note.startswith("skipped: over budget"):
        return "over budget"
    if record.note.startswith("skipped: above"):
        return "not run"
    if record.note.startswith("skipped: needs"):
        return "not installed"
    return record.status


def tables(benchmarks: list[Benchmark], records: list[Record], placement_titles: dict[str, str]) -> str:
    """Return one markdown table per module and placement, with notes on failed cases."""
    by_key = _index(records)
    out: list[str] = []
    modules = list(dict.fromkeys(bench.module for bench in benchmarks))
    for module in modules:
        members = [bench for bench in benchmarks if bench.module == module]
        impls = list(dict.fromkeys(impl for bench in members for impl in bench.impls))
        for placement, title in placement_titles.items():
            rows: list[list[str]] = []
            for bench in members:
                sizes = sorted({r.n for r in records if r.benchmark == bench.full_name}, key=lambda n: n or 0)
                rows.extend(
                    _row(bench, metric, n, placement=placement, impls=impls, by_key=by_key)
                    for metric in bench.metrics
                    for n in sizes
                )
            if not rows:
                continue
            header = ["benchmark", "N"]
            for impl in impls:
                header += [impl] if impl == BASELINE else [impl, f"vs {BASELINE}"]
            out += [f"### {module}: {title}", "", _line(header), _line(["---", "--:"] + ["--:"] * (len(header) - 2))]
            out += [_line(row) for row in rows]
            out.append("")
    problems = [r for r in records if r.status == "error"]
    if problems:
        out.append("Failed cases:")
        out += [f"- {r.benchmark} {r.impl} N={r.n} {r.placement}: {r.note}" for r in problems]
        out.append("")
    return "\n".join(out)


def _row(
    bench: Benchmark, metric: Metric, n: int | None, *, placement: str, impls: list[str], by_key: dict[_Key, Record]
) -> list[str]:
    base = by_key.get((bench.full_name, BASELINE, n, placement))
    row = [metric.label, f"{n:,}" if n is not None else "1"]
    for impl in impls:
        record = by_key.get((bench.full_name, impl, n, placement))
        row.append(_cell(record, metric.key))
        if impl != BASELINE:
            ratio = ""
            if record is not None and base is not None and record.status == base.status == "ok":
                ratio = format_ratio(record.metrics[metric.key], base.metrics[metric.key], metric)
            row.append(ratio)
    return row


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def check_targets(
    benchmarks: list[Benchmark], records: list[Record], placements: Iterable[str]
) -> list[dict[str, Any]]:
    """Evaluate every benchmark's targets in every placement.

    Returns one dict per target and placement: `met` is None when the figure
    was not measured (a quick run, a skipped case).
    """
    by_key = _index(records)
    results = []
    for bench in benchmarks:
        for target in bench.targets:
            for placement in placements:
                value = _target_value(bench, target, placement, by_key)
                met = None if value is None else (value <= target.limit if target.at_most else value >= target.limit)
                results.append(
                    {
                        "benchmark": bench.full_name,
                        "target": target.description,
                        "impl": target.impl,
                        "placement": placement,
                        "value": value,
                        "relative": target.relative,
                        "limit": target.limit,
                        "unit": target.unit,
                        "met": met,
                    }
                )
    return results


def _target_value(bench: Benchmark, target: Target, placement: str, by_key: dict[_Key, Record]) -> float | None:
    record = by_key.get((bench.full_name, target.impl, target.n, placement))
    if record is None or record.status != "ok":
        return None
    value = record.metrics[target.metric]
    if not target.relative:
        return value
    base = by_key.get((bench.full_name, BASELINE, target.n, placement))
    if base is None or base.status != "ok" or base.metrics[target.metric] <= 0:
        return None
    return value / base.metrics[target.metric]


def targets_table(results: list[dict[str, Any]], placement_titles: dict[str, str]) -> str:
    """Return a markdown table of target results: one row per target, one column per placement."""
    if not results:
        return ""
    impls = sorted({r["impl"] for r in results})
    out = [f"### Targets ({', '.join(impls)} mode)", "", _line(["target", *placement_titles.values()])]
    out.append(_line(["---"] + ["---"] * len(placement_titles)))
    for description in dict.fromkeys(r["target"] for r in results):
        row = [description]
        for placement in placement_titles:
            result = next(r for r in results if r["target"] == description and r["placement"] == placement)
            if result["met"] is None:
                row.append("not measured")
                continue
            value = format_number(result["value"]) + (f"x {BASELINE}" if result["relative"] else f" {result['unit']}")
            row.append(f"{value}: {'met' if result['met'] else '**not met**'}")
        out.append(_line(row))
    out.append("")
    return "\n".join(out)


def write_json(path: Path, meta: dict[str, Any], records: list[Record], targets: list[dict[str, Any]]) -> None:
    """Write every record and target result to `path` as JSON."""
    document = {"meta": meta, "records": [asdict(r) for r in records], "targets": targets}
    path.write_text(json.dumps(document, indent=1) + "\n")


def plot(benchmarks: list[Benchmark], records: list[Record], out_dir: Path) -> list[Path]:
    """Plot cost against actor count, one PNG per module; return the files written.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib as mpl  # the optional [bench] extra

    mpl.use("Agg")  # files only: no display on CI machines
    import matplotlib.pyplot as plt

    written = []
    by_module: dict[str, list[tuple[Benchmark, Metric]]] = {}
    for bench in benchmarks:
        for metric in bench.metrics:
            if metric.plot and bench.sizes:
                by_module.setdefault(bench.module, []).append((bench, metric))
    for module, panels in by_module.items():
        columns = min(3, len(panels))
        rows = -(-len(panels) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.8 * rows), squeeze=False)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        for ax, (bench, metric) in zip(axes.flat, panels, strict=False):
            ok = [r for r in records if r.benchmark == bench.full_name and r.status == "ok"]
            for color, impl in enumerate(bench.impls):
                for placement, style in (("unpinned", "-"), ("pinned", "--")):
                    mine = [r for r in ok if r.impl == impl and r.placement == placement]
                    points = sorted((r.n, r.metrics[metric.key]) for r in mine)
                    if points:
                        xs, ys = zip(*points, strict=True)
                        ax.plot(xs, ys, style, marker="o", color=f"C{color}", label=f"{impl}, {placement}")
            ax.set(xscale="log", yscale="log", xlabel="actors (N)")
            ax.set_title(textwrap.fill(metric.label, 32), fontsize="medium")
            ax.grid(visible=True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize="small")
        fig.suptitle(f"{module}: cost against actor count (lower is better)")
        fig.tight_layout()
        path = out_dir / f"{module}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
