"""Logging: loguru throughout, pykka's records routed in, silent unless enabled."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from actors import Actor, ActorSystem


class Silent(Actor):
    """Leaves on_receive to pykka, which logs unexpected messages on its own logger."""


def test_pykka_standard_library_records_are_routed_into_loguru(system: ActorSystem, mode: str, logs: Any) -> None:
    ref = system.spawn(Silent, mode=mode)
    ref.ask("nobody expects this")
    warnings = logs.messages("WARNING")
    assert any(m.startswith("[pykka] Unexpected message received") and "nobody expects this" in m for m in warnings)


def test_importing_and_using_the_library_adds_no_sink_and_prints_nothing() -> None:
    code = (
        "import actors\n"
        "from actors import ActorSystem, Actor\n"
        "class Boom(Actor):\n"
        "    def on_receive(self, m): raise RuntimeError('quiet please')\n"
        "with ActorSystem() as s:\n"
        "    r = s.spawn(Boom)\n"
        "    r.tell(1)\n"
        "    r.actor_stopped.wait(10)\n"
        "from loguru import logger\n"
        "assert len(logger._core.handlers) == 1, logger._core.handlers  # loguru's own stderr default only\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == ""


def test_two_systems_leave_pykkas_logger_with_the_handlers_one_leaves() -> None:
    code = (
        "import logging\n"
        "import actors\n"
        "from actors import ActorSystem\n"
        "pykka_logger = logging.getLogger('pykka')\n"
        "def handlers(): return [type(h).__name__ for h in pykka_logger.handlers]\n"
        "imported = handlers()\n"
        "with ActorSystem('one'):\n"
        "    one = handlers()\n"
        "    with ActorSystem('two'):\n"
        "        two = handlers()\n"
        "with ActorSystem('three'):\n"
        "    three = handlers()\n"
        "print(imported, one, two, three, sep='\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    imported, one, two, three = done.stdout.splitlines()
    assert imported == "['NullHandler']"  # pykka's own: importing troupe adds nothing
    assert one == "['NullHandler', '_ToLoguru']"  # the first system routes pykka's records into loguru
    assert two == one  # a second system, alive beside the first, adds nothing
    assert three == one  # nor does a later one
