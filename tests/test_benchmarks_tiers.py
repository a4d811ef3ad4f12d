"""The benchmark runner's pure parts: tiers, case selection, the ETA and the closing summary.

No benchmark runs here (tests/test_benchmarks_smoke.py runs ``--quick`` end
to end); these check what the runner decides from the declarations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import _harness, _report
from benchmarks.__main__ import progress_prefix
from benchmarks._harness import (
    Benchmark,
    Headline,
    Metric,
    Record,
    Runner,
    Target,
    case_key,
    recorded_durations,
    remaining_s,
    tier_impls,
    tier_max_n,
    tier_params,
    tier_placements,
    tier_sizes,
)

if TYPE_CHECKING:
    from pathlib import Path

_BOTH = {"unpinned": None, "pinned": 0}


def measure(impl: str, **params: object) -> dict[str, float]:  # the benchmarks below name it; never run
    raise AssertionError((impl, params))


_SECONDS = Metric("s", "time (s)")
_RATE = Metric("per_s", "rate (/s)", higher_is_better=True)


def _bench(**fields: object) -> Benchmark:
    declared: dict[str, object] = {"name": "b", "func": measure, "metrics": (_SECONDS, _RATE), **fields}
    return Benchmark(**declared)  # type: ignore[arg-type]


# --- tiers -------------------------------------------------------------------


def test_each_tier_takes_its_own_sizes_and_an_unsized_benchmark_runs_once() -> None:
    bench = _bench(sizes=(1_000, 10_000, 100_000), quick_sizes=(100,), default_sizes=(10_000,))
    assert tier_sizes(bench, "quick") == (100,)
    assert tier_sizes(bench, "default") == (10_000,)
    assert tier_sizes(bench, "full") == (1_000, 10_000, 100_000)
    assert tier_sizes(_bench(), "default") == (None,)
    assert tier_sizes(_bench(), "full") == (None,)


def test_an_undeclared_default_size_is_the_largest_every_implementation_runs_plus_the_targets_sizes() -> None:
    capped = _bench(sizes=(1_000, 10_000, 100_000), max_n={"pykka": 10_000})
    assert tier_sizes(capped, "default") == (10_000,)
    targeted = _bench(
        sizes=(1_000, 10_000, 100_000),
        max_n={"pykka": 10_000},
        targets=(Target("fast", "s", 1.0, n=100_000),),
        headlines=(Headline("s", n=1_000),),
    )
    assert tier_sizes(targeted, "default") == (1_000, 10_000, 100_000)
    # The caps and implementations of a default run are the ones that count.
    tighter = _bench(sizes=(1_000, 10_000), max_n={"pykka": 10_000}, default_max_n={"pykka": 1_000})
    assert tier_sizes(tighter, "default") == (1_000,)
    narrowed = _bench(sizes=(1_000, 10_000), impls=("pykka", "ray"), max_n={"ray": 1_000}, default_impls=("pykka",))
    assert tier_sizes(narrowed, "default") == (10_000,)
    # Every size above some cap: the smallest keeps the benchmark in the run.
    assert tier_sizes(_bench(sizes=(5_000, 50_000), max_n={"pykka": 1_000}), "default") == (5_000,)


def test_default_params_fall_back_to_the_full_ones() -> None:
    bench = _bench(params={"k": 10}, quick_params={"k": 1})
    assert tier_params(bench, "default") == {"k": 10}
    assert tier_params(bench, "quick") == {"k": 1}
    lighter = _bench(params={"k": 10}, default_params={"k": 5})
    assert tier_params(lighter, "default") == {"k": 5}
    assert tier_params(lighter, "full") == {"k": 10}


def test_quick_and_default_runs_may_narrow_the_implementations_and_a_full_run_takes_every_one() -> None:
    bench = _bench(impls=("pykka", "pooled", "ray"), quick_impls=("pykka",), default_impls=("pykka", "pooled"))
    assert tier_impls(bench, "quick") == ("pykka",)
    assert tier_impls(bench, "default") == ("pykka", "pooled")
    assert tier_impls(bench, "full") == ("pykka", "pooled", "ray")
    assert tier_impls(_bench(impls=("pykka", "ray")), "default") == ("pykka", "ray")


def test_default_and_quick_runs_keep_the_declared_placements_and_a_full_run_takes_every_one() -> None:
    plain = _bench()
    headline = _bench(default_placements=("unpinned", "pinned"))
    assert tier_placements(plain, "default", _BOTH) == ["unpinned"]
    assert tier_placements(headline, "default", _BOTH) == ["unpinned", "pinned"]
    assert tier_placements(plain, "full", _BOTH) == ["unpinned", "pinned"]
    assert tier_placements(plain, "quick", _BOTH) == ["unpinned"]
    assert tier_placements(headline, "quick", _BOTH) == ["unpinned", "pinned"]
    # --placement pinned: a default run still measures the benchmark, pinned.
    assert tier_placements(plain, "default", ["pinned"]) == ["pinned"]
    unpinned_only = _bench(only_placements=("unpinned",), default_placements=("unpinned", "pinned"))
    assert tier_placements(unpinned_only, "full", _BOTH) == ["unpinned"]
    assert tier_placements(unpinned_only, "default", ["pinned"]) == []


def test_a_default_run_may_cap_an_implementation_tighter() -> None:
    bench = _bench(
        sizes=(1_000, 10_000),
        default_sizes=(1_000, 10_000),
        max_n={"pykka": 10_000, "thread": 10_000},
        default_max_n={"pykka": 1_000},
    )
    assert tier_max_n(bench, "default") == {"pykka": 1_000, "thread": 10_000}
    assert tier_max_n(bench, "full") == {"pykka": 10_000, "thread": 10_000}
    runner = Runner([bench], _BOTH, tier="default")
    (case,) = [c for c in runner.plan() if c.impl == "pykka" and c.n == 10_000 and c.placement == "unpinned"]
    assert runner.skip_reason(case) == "skipped: above the 1,000-actor cap for pykka in a default run"


def test_the_budget_skips_a_slow_size_but_never_one_a_target_names() -> None:
    bench = _bench(
        sizes=(1_000, 10_000, 100_000), impls=("pykka", "pooled"), targets=(Target("fast", "s", 1.0, n=100_000),)
    )
    runner = Runner([bench], {"unpinned": None}, tier="full")
    plan = {(c.impl, c.n): c for c in runner.plan()}
    for impl in ("pykka", "pooled"):
        for n in (1_000, 10_000):
            runner._history.setdefault((bench.full_name, impl, "unpinned"), []).append((n, n / 100))
    assert runner.skip_reason(plan["pykka", 100_000]) == "skipped: over budget (~1000 s predicted > 20 s)"
    assert runner.skip_reason(plan["pooled", 100_000]) is None


def test_an_unknown_tier_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="quick, default, full"):
        tier_sizes(_bench(), "fast")
    with pytest.raises(ValueError, match="unknown benchmark tier"):
        Runner([_bench()], _BOTH, tier="everything")


def test_the_runner_plans_every_size_placement_and_implementation_of_its_tier() -> None:
    bench = _bench(
        sizes=(1_000, 10_000), quick_sizes=(10,), impls=("pykka", "pooled"), default_placements=("unpinned", "pinned")
    )
    shape = {(c.impl, c.n, c.placement) for c in Runner([bench], _BOTH, tier="default").plan()}
    assert shape == {(impl, 10_000, p) for impl in ("pykka", "pooled") for p in _BOTH}
    assert len(Runner([bench], _BOTH).plan()) == 2 * 2 * 2  # full, as Runner(...) always meant
    quick = Runner([bench], _BOTH, quick=True)
    assert quick.tier == "quick"
    assert {c.n for c in quick.plan()} == {10}
    assert all(c.params == {"n": 10} for c in quick.plan())


def test_the_registered_default_run_covers_every_module_and_both_placements_of_the_runtime_rows() -> None:
    benchmarks = _harness.discover()
    default = Runner(benchmarks, _BOTH, tier="default").plan()
    full = Runner(benchmarks, _BOTH, tier="full").plan()
    assert {b.module for b in benchmarks} == {c.benchmark.module for c in default}
    assert {b.full_name for b in benchmarks} == {c.benchmark.full_name for c in default}
    runtime = {(c.benchmark.name, c.placement) for c in default if c.benchmark.module == "runtime"}
    assert {placement for _, placement in runtime} == set(_BOTH)
    assert {name for name, _ in runtime} == {b.name for b in benchmarks if b.module == "runtime"}
    assert len(default) < len(full)
    # The full matrix has every declared size in every placement each benchmark allows.
    for bench in benchmarks:
        planned = {(c.n, c.placement) for c in full if c.benchmark is bench}
        allowed = [p for p in _BOTH if not bench.only_placements or p in bench.only_placements]
        assert planned == {(n, p) for n in (bench.sizes or (None,)) for p in allowed}


# --- the ETA -----------------------------------------------------------------


def _key(bench: str, impl: str = "pooled", n: int | None = None) -> _harness.CaseKey:
    return case_key(bench, impl, n, "unpinned", {})


def test_recorded_durations_predict_the_rest_scaled_by_this_runs_pace() -> None:
    a, b, c = _key("m.a"), _key("m.b"), _key("m.c")
    recorded = {a: 2.0, b: 4.0, c: 6.0}
    assert remaining_s([a, b, c], {}, recorded) == pytest.approx(12.0)
    # a took twice its recorded time: the machine is twice as busy.
    assert remaining_s([b, c], {a: 4.0}, recorded) == pytest.approx(20.0)


def test_cases_never_recorded_are_predicted_from_this_runs_durations() -> None:
    a1, a2, b1 = _key("m.a", "pykka"), _key("m.a", "pooled"), _key("m.b")
    done = {a1: 3.0, _key("m.z"): 9.0, _key("m.skipped"): 0.0}
    # Same benchmark first (3 s), then the mean of all that ran (6 s); a skip costs nothing.
    assert remaining_s([a2, b1], done, {}) == pytest.approx(3.0 + 6.0)
    assert remaining_s([a2], {}, {}) is None
    assert remaining_s([], {}, {}) == 0.0


@given(
    st.lists(st.sampled_from(["m.a", "m.b", "m.c", "m.d"]), max_size=8),
    st.dictionaries(st.sampled_from(["m.a", "m.b", "m.c"]), st.floats(0.0, 100.0), max_size=3),
    st.dictionaries(st.sampled_from(["m.b", "m.c", "m.d", "m.e"]), st.floats(0.0, 100.0), max_size=4),
)
def test_the_estimate_is_the_sum_of_its_cases_and_never_negative(
    pending: list[str], recorded: dict[str, float], done: dict[str, float]
) -> None:
    keys = [_key(name) for name in pending]
    rec = {_key(name): value for name, value in recorded.items()}
    ran = {_key(name): value for name, value in done.items()}
    whole = remaining_s(keys, ran, rec)
    parts = [remaining_s([key], ran, rec) for key in keys]
    if any(part is None for part in parts):
        assert whole is None
    else:
        assert whole is not None
        assert whole == pytest.approx(sum(p for p in parts if p is not None))
        assert whole >= 0.0


def test_durations_are_read_back_from_the_last_results_json(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    assert recorded_durations(path) == {}
    done = Record("m.a", "pooled", 100, "pinned", "ok", wall_s=1.5, params={"n": 100, "k": 2})
    skipped = Record("m.a", "pykka", 100, "pinned", "skipped", params={"k": 2, "n": 100})
    _report.write_json(path, {"tier": "default"}, [done, skipped], [])
    durations = recorded_durations(path)
    assert durations == {done.key: 1.5, skipped.key: 0.0}
    assert case_key("m.a", "pooled", 100, "pinned", {"k": 2, "n": 100}) in durations
    assert case_key("m.a", "pooled", 100, "pinned", {"k": 3, "n": 100}) not in durations
    path.write_text('{"meta": {}, "records": [{"benchmark": "m.a"}]}')  # from before params were recorded
    assert recorded_durations(path) == {}
    path.write_text("not json")
    assert recorded_durations(path) == {}


def test_the_durations_file_keeps_every_case_any_run_measured(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    first = Record("m.a", "pooled", None, "unpinned", "ok", wall_s=2.0, params={"k": 1})
    _harness.write_durations(path, recorded_durations(path), [first])
    again = Record("m.a", "pooled", None, "unpinned", "ok", wall_s=3.0, params={"k": 1})
    other = Record("m.b", "pykka", 10, "pinned", "ok", wall_s=1.0, params={"n": 10})
    _harness.write_durations(path, recorded_durations(path), [again, other])
    assert recorded_durations(path) == {first.key: 3.0, other.key: 1.0}


def test_a_progress_line_shows_the_elapsed_time_and_what_is_left() -> None:
    assert progress_prefix(12, 86, 83.0, 250.4) == "[ 12/86 1:23 elapsed, ~4:10 left]"
    assert progress_prefix(1, 86, 0.0, None) == "[  1/86 0:00 elapsed, ? left]"
    assert progress_prefix(2, 9, 3725.0, 59.6) == "[  2/9 1:02:05 elapsed, ~1:00 left]"


# --- the summary -------------------------------------------------------------


def _ok(bench: str, impl: str, value: float, placement: str = "unpinned", n: int | None = None) -> Record:
    return Record(bench, impl, n, placement, "ok", metrics={"s": value, "per_s": 1 / value})


def _summary_bench() -> Benchmark:
    return _bench(
        name="b",
        impls=("pykka", "pooled", "autogen", "langgraph"),
        targets=(
            Target("rate >= 5x pykka", "per_s", 5.0, at_most=False, relative=True),
            Target("under 1 s", "s", 1.0, unit="s"),
        ),
        headlines=(Headline("s"), Headline("per_s", impl="thread", description="thread rate")),
    )


def test_the_summary_has_a_row_per_target_and_headline_and_placement_with_the_peers_ratios() -> None:
    bench = _summary_bench()
    name = bench.full_name
    records = [
        _ok(name, "pykka", 10.0),
        _ok(name, "pooled", 0.5),
        _ok(name, "autogen", 2.0),
        Record(name, "langgraph", None, "unpinned", "skipped", note="skipped: needs langgraph, which is ..."),
        _ok(name, "pykka", 1.0, "pinned"),
        _ok(name, "pooled", 2.0, "pinned"),
    ]
    rows = _report.summary([bench], records)
    # Two targets and one headline that is not a target's figure again, in each placement.
    assert [(r["figure"], r["placement"]) for r in rows] == [
        ("rate (/s)", "unpinned"),
        ("rate (/s)", "pinned"),
        ("time (s)", "unpinned"),
        ("time (s)", "pinned"),
        ("thread rate", "unpinned"),
        ("thread rate", "pinned"),
    ]
    rate, _, time_unpinned, time_pinned, thread, _ = rows
    assert rate["met"] is True
    assert rate["checked"] == "20x pykka"
    assert rate["vs_pykka"] == "20x faster"
    assert rate["vs_peers"] == {"autogen": "4.0x faster", "langgraph": "not installed"}
    assert time_unpinned["met"] is True
    assert time_pinned["met"] is False
    assert time_pinned["vs_pykka"] == "2.0x slower"
    assert thread["target"] == ""
    assert thread["shown"] == "not measured"
    assert thread["met"] is None


def test_the_summary_table_is_one_table_with_a_column_per_peer_measured() -> None:
    bench = _summary_bench()
    name = bench.full_name
    records = [_ok(name, "pykka", 10.0), _ok(name, "pooled", 0.5), _ok(name, "autogen", 2.0)]
    table = _report.summary_table(_report.summary([bench], records), {"unpinned": "unpinned (2 CPUs)"})
    lines = table.splitlines()
    assert lines[2] == "| headline | N | troupe mode | placement | troupe | vs pykka | vs autogen | target | result |"
    assert sum(line.startswith("| headline ") for line in lines) == 1
    assert (
        f"| {name}: time (s) | 1 | pooled | unpinned | 0.5 | 20x faster | 4.0x faster | under 1 s | 0.5 s: met |"
        in lines
    )
    assert "Targets: 2 met, 0 missed, 0 not measured." in lines


def test_a_benchmark_left_out_of_the_run_has_no_summary_rows_and_an_unmeasured_target_says_so() -> None:
    bench = _summary_bench()
    other = _bench(name="other", sizes=(10, 100), targets=(Target("at 100", "s", 1.0, n=100),))
    records = [Record(other.full_name, "pooled", 10, "unpinned", "ok", metrics={"s": 0.1, "per_s": 10.0})]
    rows = _report.summary([bench, other], records)
    assert [(r["benchmark"], r["met"]) for r in rows] == [(other.full_name, None)]
    table = _report.summary_table(rows, {})
    assert "| not measured |" in table
    assert "Targets: 0 met, 0 missed, 1 not measured." in table
    assert _report.summary_table([], {}) == ""


def test_a_module_gets_a_table_only_for_the_placements_it_ran_in() -> None:
    bench = _bench(impls=("pykka", "pooled"))
    records = [
        Record(bench.full_name, impl, None, "unpinned", "ok", metrics={"s": 1.0, "per_s": 2.0})
        for impl in ("pykka", "pooled")
    ]
    titles = {"unpinned": "unpinned (2 CPUs)", "pinned": "pinned to CPU 0"}
    text = _report.tables([bench], records, titles)
    assert f"### {bench.module}: unpinned (2 CPUs)" in text
    assert "pinned to CPU 0" not in text
