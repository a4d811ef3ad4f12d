"""troupe's benchmarks: ``python -m benchmarks`` runs them all.

Every figure is a ratio against plain pykka `ThreadingActor` measured in the
same run, on the same machine, because absolute numbers drift on shared
machines. Each case runs in a fresh subprocess (unpinned, or pinned to one
CPU) and prints one JSON line that the parent collects. ``--quick``, the
default run and ``--full`` are tiers each benchmark declares (see
`benchmarks._harness`).

To add benchmarks, drop a module into this package (no leading underscore)
that defines ``BENCHMARKS``, a tuple of `benchmarks._harness.Benchmark`;
``python -m benchmarks`` finds it. ``python -m benchmarks --list`` shows
what is registered.
"""

__all__: list[str] = []
