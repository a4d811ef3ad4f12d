"""The benchmarks still run: ``python -m benchmarks --quick`` end to end, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def test_a_quick_benchmark_run_measures_pykka_and_both_troupe_modes(tmp_path: Path) -> None:
    # Below the suite's 120 s hang guard, so a hang reports the benchmark's own output.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    results = json.loads((tmp_path / "results.json").read_text())
    measured = {record["impl"] for record in results["records"] if record["status"] == "ok"}
    assert {"pykka", "thread", "pooled"} <= measured
    assert "| benchmark | N | pykka | thread |" in done.stdout
