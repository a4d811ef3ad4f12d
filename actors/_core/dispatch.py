"""Executors: the threads that run actor turns.

An executor has one method the cells use, ``submit(cell)``: run ``cell.run()``
soon, on one of my threads. The cell's `sched` lock guarantees a cell is
submitted at most once at a time.

- `DispatcherPool` (pooled mode): a fixed set of threads sharing one run
  queue, a C `queue.SimpleQueue` (put/get without Python-level locks).
- `ThreadExecutor` (thread mode): one thread for one actor, alive from spawn
  until the actor terminates, as pykka's `ThreadingActor`.

The third executor, for asyncio mode, is an event loop:
`actors._core.eventloop.AsyncioExecutor`.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import TYPE_CHECKING

from loguru import logger

from actors._core.cell import TERMINATED, bind_executor

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core.cell import Cell

__all__ = ["DispatcherPool", "ThreadExecutor"]


class DispatcherPool:
    """`size` daemon threads named ``troupe-<system>-dispatcher-<i>`` running cell turns.

    Fairness comes from the cells: each turn handles at most the system's
    `throughput` messages, then the cell goes to the back of the run queue.
    """

    def __init__(self, system_name: str, size: int) -> None:
        if size < 1:
            msg = f"a dispatcher pool needs at least 1 thread, got {size}"
            raise ValueError(msg)
        self.size = size
        self._runq: queue.SimpleQueue[Cell | None] = queue.SimpleQueue()
        # Bound once: the hot path calls it for every idle-to-busy transition.
        self.submit = self._runq.put
        self.threads = [
            threading.Thread(target=self._loop, name=f"troupe-{system_name}-dispatcher-{i}", daemon=True)
            for i in range(size)
        ]

    def start(self) -> None:
        """Start the threads."""
        for thread in self.threads:
            thread.start()

    def shutdown(self, *, timeout: float | None = None) -> None:
        """Let each thread finish the turns queued before this call, then join them."""
        for _ in self.threads:
            self._runq.put(None)
        for thread in self.threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)

    def wake(self, cell: Cell) -> None:
        """Nothing to do: a turn here is never suspended (see `Cell.post_system`).

        A cell whose event loop closed is finished off here (`AsyncioExecutor`),
        and its running turn takes every system message.
        """

    def _loop(self) -> None:
        bind_executor(self)
        get = self._runq.get
        while (cell := get()) is not None:
            cell.run()


_thread_ids = itertools.count()


class ThreadExecutor:
    """One thread that runs one actor's turns until the actor terminates."""

    def __init__(self, label: str, *, daemon: bool, on_exit: Callable[[ThreadExecutor], None]) -> None:
        self._runq: queue.SimpleQueue[Cell] = queue.SimpleQueue()
        self.submit = self._runq.put
        self._on_exit = on_exit
        self.thread = threading.Thread(target=self._loop, name=f"{label}-{next(_thread_ids)}", daemon=daemon)

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def _loop(self) -> None:
        bind_executor(self)
        get = self._runq.get
        try:
            while True:
                cell = get()
                cell.run()
                if cell.state == TERMINATED:
                    return
        finally:
            try:
                self._on_exit(self)
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Exit hook of {} failed", self.thread.name)
