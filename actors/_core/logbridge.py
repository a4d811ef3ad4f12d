"""Route pykka's standard-library log records into loguru.

pykka logs through ``logging.getLogger("pykka")``. `install()`, called by the
first `ActorSystem` (importing the package calls nothing), adds one handler to
that logger, once per process however many systems run, that re-emits each
record through loguru, under this module's name, so ``logger.enable("actors")``
shows pykka's records next to troupe's. Propagation is left alone: a program that configured
standard logging still sees them there. No loguru sink is added, ever.
"""

from __future__ import annotations

import logging
import threading

from loguru import logger

__all__ = ["install"]


class _ToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, "[pykka] {}", record.getMessage())


_installed = False
_lock = threading.Lock()


def install() -> None:
    """Forward pykka's log records to loguru (idempotent)."""
    global _installed  # noqa: PLW0603
    with _lock:
        if _installed:
            return
        pykka_logger = logging.getLogger("pykka")
        pykka_logger.addHandler(_ToLoguru())
        _installed = True
