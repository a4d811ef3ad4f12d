"""The benchmarks still run: ``python -m benchmarks --quick`` end to end, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent.parent


# Every benchmark module runs once at its quick size, each case in a fresh
# process (pinned too only for the runtime rows): about a minute alone on
# 2 CPUs, several times that on a loaded machine. The
# subprocess's own timeout sits below this test's hang guard, so a hang
# reports the benchmark's output instead of a bare timeout.
@pytest.mark.timeout(420)
def test_a_quick_benchmark_run_measures_pykka_and_both_troupe_modes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    results = json.loads((tmp_path / "results.json").read_text())
    measured = {record["impl"] for record in results["records"] if record["status"] == "ok"}
    assert {"pykka", "thread", "pooled"} <= measured
    assert "| benchmark | N | pykka | thread |" in done.stdout
    assert "| headline | N | troupe mode | placement | troupe | vs pykka |" in done.stdout
    assert results["meta"]["tier"] == "quick"
