"""Log records between troupe's channel (loguru) and pykka's (the standard library's ``pykka`` logger).

Two directions, and no record travels both, so none is duplicated or loops:

- pykka's own records (``logging.getLogger("pykka")``: its registry, its
  proxies, the ``on_receive`` warning for an unexpected message) reach
  loguru: `install()`, called by the first `ActorSystem` (importing the
  package calls nothing), adds one handler to that logger, once per process
  however many systems run, that re-emits each record through loguru under
  this module's name, so ``logger.enable("actors")`` shows pykka's records
  next to troupe's. Propagation is left alone: a program that configured
  standard logging still sees them there. No loguru sink is added, ever.
- Actor failures troupe handles where pykka would log them (an exception
  returned to the caller, an unhandled one, a BaseException, a failing
  ``on_start``/``on_stop``/``on_failure``) are logged, with pykka's texts and
  levels, both to loguru (troupe's channel) and to the ``pykka`` logger, so
  code and tests that configured standard logging see them where pykka puts
  them (`report`). The standard-library copy is marked (`TROUPE_ORIGIN`), and
  the bridge skips marked records: loguru gets each failure once.

Thread contract: every function here may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from actors._core._pykka import OptExcInfo

__all__ = ["TROUPE_ORIGIN", "install", "pykka_logs", "report", "to_pykka_logger"]

TROUPE_ORIGIN = "troupe_origin"
"""The attribute set on the standard-library records troupe emits (already in loguru)."""

_PYKKA = logging.getLogger("pykka")
_MARK = {TROUPE_ORIGIN: True}


class _ToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, TROUPE_ORIGIN, False):
            return  # troupe's own record: loguru has it already
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, "[pykka] {}", record.getMessage())


def to_pykka_logger(level: int, text: str, exc_info: OptExcInfo | BaseException | None = None) -> None:
    """Log `text` to the standard library's ``pykka`` logger only, marked as troupe's (the bridge skips it).

    Costs one level check when standard logging would drop it.
    """
    if _PYKKA.isEnabledFor(level):
        _PYKKA.log(level, text, exc_info=exc_info, extra=_MARK, stacklevel=3)  # type: ignore[arg-type]


def pykka_logs(level: int) -> bool:
    """Return whether the ``pykka`` logger would emit a record at `level`.

    Check it before building an f-string for `to_pykka_logger` on a hot
    path: formatting an actor's ref formats its URN (~1.5 µs), which was
    half of what stopping a pooled actor cost when nobody logged it.
    """
    return _PYKKA.isEnabledFor(level)


def report(level: int, text: str, exc_info: OptExcInfo | BaseException | None = None) -> None:
    """Log an actor failure the way pykka does, to loguru and to the ``pykka`` logger, once each."""
    logger.opt(exception=exc_info, depth=1).log(logging.getLevelName(level), "{}", text)
    to_pykka_logger(level, text, exc_info)


_installed = False
_lock = threading.Lock()


def install() -> None:
    """Forward pykka's log records to loguru (idempotent)."""
    global _installed  # noqa: PLW0603
    with _lock:
        if _installed:
            return
        _PYKKA.addHandler(_ToLoguru())
        _installed = True
