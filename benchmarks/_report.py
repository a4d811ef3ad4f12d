"""Turn benchmark records into markdown tables, target checks, JSON and plots.

Tables have one row per metric and actor count and one column per
implementation, each troupe column followed by its ratio to pykka in words
("6.8x faster", "3.1x less"), so they read the same whichever way a metric
is better and paste into the README as they are.

The run closes with one summary table (`summary` and `summary_table`): a
row per headline figure (every `Target`, and every `Headline` a benchmark
declares) and placement, with troupe's figure, its ratio to pykka and to
each peer framework measured beside it (`benchmarks._harness.PEERS`), and
the target met or missed.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from benchmarks._harness import BASELINE, PEERS, Headline, Target

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from benchmarks._harness import Benchmark, Metric, Record

__all__ = [
    "check_targets",
    "format_number",
    "format_ratio",
    "plot",
    "summary",
    "summary_table",
    "tables",
    "targets_table",
    "write_json",
]

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
            names = {bench.full_name for bench in members}
            if not any(r.placement == placement and r.benchmark in names for r in records):
                continue  # this module ran in other placements only (the default run pins only the headline rows)
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


def _ratio_cell(record: Record | None, other: Record | None, metric: Metric) -> str:
    """Say how `record`'s figure compares with `other`'s, or why it cannot."""
    if record is None or record.status != "ok":
        return ""
    if other is None:
        return ""
    if other.status != "ok":
        return _cell(other, metric.key)
    return format_ratio(record.metrics[metric.key], other.metrics[metric.key], metric)


def _goals(bench: Benchmark) -> list[Target | Headline]:
    """The benchmark's targets, then its headlines that no target already shows."""
    shown = {(t.metric, t.impl, t.n) for t in bench.targets}
    return [*bench.targets, *(h for h in bench.headlines if (h.metric, h.impl, h.n) not in shown)]


def summary(benchmarks: list[Benchmark], records: list[Record]) -> list[dict[str, Any]]:
    """Return the closing summary's rows: one per headline figure and placement the run measured.

    A benchmark's headline figures are its targets and its `Headline`
    declarations. Each row holds troupe's figure, its ratio to pykka in words
    (``vs_pykka``), its ratio to each peer in `PEERS` the benchmark compares
    with (``vs_peers``), and for a target whether it was met (None: not
    measured, as in a quick run or a skipped case). Benchmarks with no case
    in `records` (left out by ``--only``) have no rows.
    """
    by_key = _index(records)
    rows: list[dict[str, Any]] = []
    for bench in benchmarks:
        ran = list(dict.fromkeys(r.placement for r in records if r.benchmark == bench.full_name))
        metrics = {metric.key: metric for metric in bench.metrics}
        for goal in _goals(bench):
            metric = metrics[goal.metric]
            for placement in ran:
                record = by_key.get((bench.full_name, goal.impl, goal.n, placement))
                base = by_key.get((bench.full_name, BASELINE, goal.n, placement))
                peers = {
                    peer: _ratio_cell(record, by_key.get((bench.full_name, peer, goal.n, placement)), metric)
                    for peer in PEERS
                    if peer in bench.impls and peer != goal.impl
                }
                row: dict[str, Any] = {
                    "benchmark": bench.full_name,
                    "figure": goal.description if isinstance(goal, Headline) and goal.description else metric.label,
                    "impl": goal.impl,
                    "n": goal.n,
                    "placement": placement,
                    "value": record.metrics[metric.key] if record is not None and record.status == "ok" else None,
                    "shown": _cell(record, metric.key) if record is not None else "not measured",
                    "vs_pykka": _ratio_cell(record, base, metric) if BASELINE in bench.impls else "",
                    "vs_peers": peers,
                    "target": "",
                    "met": None,
                    "checked": "",
                }
                if isinstance(goal, Target):
                    checked = _target_value(bench, goal, placement, by_key)
                    row["target"] = goal.description
                    if checked is not None:
                        row["met"] = checked <= goal.limit if goal.at_most else checked >= goal.limit
                        unit = f"x {BASELINE}" if goal.relative else (f" {goal.unit.strip()}" if goal.unit else "")
                        row["checked"] = format_number(checked) + unit
                rows.append(row)
    return rows


def _result(row: dict[str, Any]) -> str:
    if not row["target"]:
        return ""
    if row["met"] is None:
        return "not measured"
    return f"{row['checked']}: {'met' if row['met'] else '**missed**'}"


def summary_table(rows: list[dict[str, Any]], placement_titles: dict[str, str]) -> str:
    """Return the summary rows as one markdown table, with a column per peer that has a ratio."""
    if not rows:
        return ""
    peers = [peer for peer in PEERS if any(row["vs_peers"].get(peer) for row in rows)]
    header = ["headline", "N", "troupe mode", "placement", "troupe", f"vs {BASELINE}"]
    header += [f"vs {peer}" for peer in peers] + ["target", "result"]
    out = ["### Summary: headline figures and targets", "", _line(header)]
    out.append(_line(["---", "--:", "---", "---", "--:", "--:"] + ["--:"] * len(peers) + ["---", "---"]))
    for row in rows:
        cells = [
            f"{row['benchmark']}: {row['figure']}",
            f"{row['n']:,}" if row["n"] is not None else "1",
            row["impl"],
            placement_titles.get(row["placement"], row["placement"]).split(" (")[0],
            row["shown"],
            row["vs_pykka"],
            *(row["vs_peers"].get(peer, "") for peer in peers),
            row["target"],
            _result(row),
        ]
        out.append(_line(cells))
    met = [row["met"] for row in rows if row["target"]]
    out += [
        "",
        f"Targets: {met.count(True)} met, {met.count(False)} missed, {met.count(None)} not measured.",
        "",
    ]
    return "\n".join(out)


def write_json(
    path: Path,
    meta: dict[str, Any],
    records: list[Record],
    targets: list[dict[str, Any]],
    summary_rows: list[dict[str, Any]] | None = None,
) -> None:
    """Write every record, target result and summary row to `path` as JSON."""
    document = {"meta": meta, "records": [asdict(r) for r in records], "targets": targets}
    if summary_rows is not None:
        document["summary"] = summary_rows
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
