"""Compare the runtime's hot path between two checkouts: ``python -m benchmarks.ab OLD NEW``.

OLD and NEW are source trees of troupe (a git worktree of an older commit
beside the current one: ``git worktree add ../before <commit>``). Each
measurement runs in a fresh interpreter with that tree first on ``sys.path``,
alternating OLD and NEW for ``--rounds`` rounds in both placements (unpinned,
and ``taskset -c 0`` where it exists), so drift on a shared machine hits both
sides alike. It prints the medians and the ratio NEW / OLD per row. Only the
public API (``from actors import ...``) is used, so any two commits compare.

Rows, pooled mode (the default) and thread mode: tell throughput to one
actor, a blocking ask's median latency, ping-pong between two actors, spawn
of 10,000 actors and the RSS each costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

__all__ = ["main"]

_PROBE = r"""
import gc, json, statistics, sys, threading, time
import psutil
from actors import Actor, ActorSystem

MODE = sys.argv[1]

class Echo(Actor):
    def on_receive(self, message):
        return message

class Counter(Actor):
    def __init__(self, n, done):
        super().__init__()
        self.left, self.done = n, done
    def on_receive(self, message):
        self.left -= 1
        if self.left == 0:
            self.done.set()

class Pong(Actor):
    def on_receive(self, message):
        ping, left = message
        ping.tell((self.actor_ref, left))

class Ping(Actor):
    def __init__(self, done):
        super().__init__()
        self.done = done
    def on_receive(self, message):
        pong, left = message
        if left == 0:
            self.done.set()
        else:
            pong.tell((self.actor_ref, left - 1))

out = {}
with ActorSystem(name="ab") as system:
    n = 200_000
    done = threading.Event()
    ref = system.spawn(Counter, n, done, mode=MODE)
    t = time.perf_counter()
    for i in range(n):
        ref.tell(i)
    done.wait(120)
    out["tell (msg/s)"] = n / (time.perf_counter() - t)

    echo = system.spawn(Echo, mode=MODE)
    samples = []
    for i in range(20_000):
        t = time.perf_counter()
        echo.ask(i)
        samples.append(time.perf_counter() - t)
    out["ask median (us)"] = statistics.median(samples) * 1e6

    rounds = 50_000
    done = threading.Event()
    ping = system.spawn(Ping, done, mode=MODE)
    pong = system.spawn(Pong, mode=MODE)
    t = time.perf_counter()
    ping.tell((pong, rounds))
    done.wait(120)
    out["ping-pong (round trips/s)"] = rounds / (time.perf_counter() - t)

count = 10_000 if MODE == "pooled" else 2_000
gc.collect()
before = psutil.Process().memory_info().rss
with ActorSystem(name="ab-spawn") as system:
    t = time.perf_counter()
    refs = [system.spawn(Echo, mode=MODE) for _ in range(count)]
    refs[-1].ask(0)
    out[f"spawn {count} (s)"] = time.perf_counter() - t
    gc.collect()
    out["RSS (KB/actor)"] = (psutil.Process().memory_info().rss - before) / count / 1024
print(json.dumps(out))
"""

_HIGHER_IS_BETTER = ("msg/s", "round trips/s")


def _run(tree: Path, mode: str, *, pinned: bool) -> dict[str, float]:
    command = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tree)!r}); exec({_PROBE!r})", mode]
    if pinned:
        command = ["taskset", "-c", "0", *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600, cwd=tree)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure both trees alternately and print a table of medians and ratios."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="pooled,thread")
    args = parser.parse_args(argv)
    placements = [False, True] if shutil.which("taskset") else [False]
    print("| mode | placement | row | old | new | new / old |")
    print("| --- | --- | --- | --: | --: | --: |")
    for mode in args.modes.split(","):
        for pinned in placements:
            runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                runs["old"].append(_run(args.old.resolve(), mode, pinned=pinned))
                runs["new"].append(_run(args.new.resolve(), mode, pinned=pinned))
            for row in runs["old"][0]:
                old = statistics.median(r[row] for r in runs["old"])
                new = statistics.median(r[row] for r in runs["new"])
                placement = "pinned" if pinned else "unpinned"
                better = "higher" if any(unit in row for unit in _HIGHER_IS_BETTER) else "lower"
                cells = [mode, placement, f"{row} ({better} is better)", f"{old:.4g}", f"{new:.4g}", f"{new / old:.3f}"]
                print("| " + " | ".join(cells) + " |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
