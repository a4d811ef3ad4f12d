"""Actor failures reach both channels once: the stdlib `pykka` logger (where pykka code looks) and loguru."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest

from actors import Actor, ActorSystem
from tests.core.actors_for_tests import WAIT

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import LogRecords


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.records.append(record)

    def messages(self, level: int) -> list[str]:
        with self.guard:
            return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def stdlib() -> Iterator[_Collect]:
    pykka_logger = logging.getLogger("pykka")
    handler = _Collect()
    previous = pykka_logger.level
    pykka_logger.addHandler(handler)
    pykka_logger.setLevel(logging.DEBUG)
    yield handler
    pykka_logger.removeHandler(handler)
    pykka_logger.setLevel(previous)


class Failing(Actor):
    def __init__(self, stopped: threading.Event, fail_in: str | None = None) -> None:
        super().__init__()
        self.stopped = stopped
        self.fail_in = fail_in

    def on_start(self) -> None:
        if self.fail_in == "on_start":
            msg = "start failed"
            raise ValueError(msg)

    def on_stop(self) -> None:
        self.stopped.set()
        if self.fail_in == "on_stop":
            msg = "stop failed"
            raise ValueError(msg)

    def on_failure(self, *_exc_info: Any) -> None:
        self.stopped.set()
        if self.fail_in == "on_failure":
            msg = "on_failure failed"
            raise ValueError(msg)

    def on_receive(self, message: Any) -> Any:
        msg = f"handler failed on {message!r}"
        raise ValueError(msg)


def _one_each(stdlib: _Collect, logs: LogRecords, level: int, text: str) -> None:
    assert stdlib.messages(level).count(text) == 1
    assert logs.messages(logging.getLevelName(level)).count(text) == 1


def test_an_exception_returned_to_the_caller_is_logged_once_in_each_channel(
    system: ActorSystem, mode: str, stdlib: _Collect, logs: LogRecords
) -> None:
    ref = system.spawn(Failing, threading.Event(), mode=mode)
    with pytest.raises(ValueError, match="handler failed"):
        ref.ask("boom", timeout=WAIT)
    _one_each(stdlib, logs, logging.INFO, f"Exception returned from {ref} to caller:")
    record = next(r for r in stdlib.records if r.levelno == logging.INFO)
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "handler failed on 'boom'"


@pytest.mark.parametrize("fail_in", [None, "on_start", "on_stop"])
def test_an_unhandled_exception_and_a_failing_hook_are_logged_once_in_each_channel(
    system: ActorSystem, mode: str, stdlib: _Collect, logs: LogRecords, fail_in: str | None
) -> None:
    stopped = threading.Event()
    ref = system.spawn(Failing, stopped, fail_in, mode=mode)
    if fail_in == "on_stop":
        ref.stop(timeout=WAIT)
    elif fail_in != "on_start":
        ref.tell("boom")
    ref.actor_stopped.wait(WAIT)
    ref.stop(timeout=WAIT)  # returns once it has terminated
    _one_each(stdlib, logs, logging.ERROR, f"Unhandled exception in {ref}:")
    if fail_in == "on_failure":
        _one_each(stdlib, logs, logging.ERROR, f"Unhandled exception in on_failure of {ref}:")
    assert f"Stopped {ref}" in stdlib.messages(logging.DEBUG)


def test_records_pykka_logs_itself_reach_loguru_once(system: ActorSystem, mode: str, logs: LogRecords) -> None:
    class Plain(Actor):
        pass

    ref = system.spawn(Plain, mode=mode)
    ref.ask({"unhandled": "message"}, timeout=WAIT)  # pykka's on_receive warns about it
    warnings = [m for m in logs.messages("WARNING") if f"Unexpected message received by {ref}" in m]
    assert len(warnings) == 1
    assert warnings[0].startswith("[pykka] ")


def test_a_base_exception_is_logged_as_pykka_does(system: ActorSystem, mode: str, stdlib: _Collect) -> None:
    class Fatal(Actor):
        def on_receive(self, message: Any) -> Any:
            raise BaseException(message)  # noqa: TRY002 - what pykka stops every actor for

    ref = system.spawn(Fatal, mode=mode)
    ref.tell("fatal")
    ref.actor_stopped.wait(WAIT)
    ref.stop(timeout=WAIT)
    assert stdlib.messages(logging.DEBUG)[0] == f"BaseException('fatal') in {ref}. Stopping all actors."
