"""Run one benchmark case in this fresh interpreter: ``python -m benchmarks._case '<json>'``.

The JSON names the function (``module:qualname``), the implementation, the
keyword arguments and the CPU to pin to (or null). The process pins itself
before importing the benchmark, so that everything it starts (dispatcher
threads sized from the CPU affinity included) sees one CPU. It prints one
line, `RESULT_PREFIX` + JSON: the metrics, the seconds the function took,
and the names of threads still alive after it returned (there should be none).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time

from benchmarks._harness import RESULT_PREFIX

__all__ = ["main"]

_THREAD_EXIT_GRACE_S = 10.0
"""How long threads that were told to stop may take to finish their last lines."""


def main(argv: list[str]) -> int:
    """Run the case described by ``argv[1]`` and print its result line."""
    spec = json.loads(argv[1])
    if spec["cpu"] is not None:
        os.sched_setaffinity(0, {spec["cpu"]})
    module_name, _, qualname = spec["func"].partition(":")
    func = getattr(importlib.import_module(module_name), qualname)
    start = time.perf_counter()
    metrics = func(spec["impl"], **spec["params"])
    elapsed = time.perf_counter() - start
    result = {"metrics": metrics, "elapsed_s": elapsed, "leaked_threads": _leaked_threads()}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def _leaked_threads() -> list[str]:
    deadline = time.monotonic() + _THREAD_EXIT_GRACE_S
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
