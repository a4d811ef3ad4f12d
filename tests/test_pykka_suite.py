"""pykka's own released test suite, run against each of troupe's execution modes.

A troupe actor is a pykka actor: what pykka's tests check of `ThreadingActor`
must hold for every mode. The suite is fetched from the package index at test
time (the sdist of the installed pykka, which ships its tests), never copied
into this repository. Its ``runtime`` fixture is pointed at one troupe mode per
run by a conftest written over it; nothing else of the suite is changed.

Without the package index (an offline machine), the test is skipped with the
reason; it never passes without running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import pytest

from actors import MODES

PYKKA_VERSION = metadata.version("pykka")

# pykka's conftest defines `runtime` with its one ThreadingActor runtime; this
# one, put in its place, imports everything it defines and redefines only
# `runtime`, to the troupe mode named by TROUPE_PYKKA_MODE.
_CONFTEST = """\
import os
import threading
import time

import pytest

from actors import MODES, Future
from tests.pykka_conftest import *  # noqa: F403
from tests.pykka_conftest import _stop_all  # noqa: F401
from tests.types import Runtime

_MODE = os.environ["TROUPE_PYKKA_MODE"]


@pytest.fixture(scope="session")
def runtime():
    return Runtime(
        name=_MODE,
        actor_class=MODES[_MODE],
        event_class=threading.Event,
        future_class=Future,
        sleep_func=time.sleep,
    )
"""

_PYTEST_INI = """\
[pytest]
addopts = -p no:cacheprovider
timeout = 60
"""


@pytest.fixture(scope="module")
def pykka_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fetch pykka's sdist, unpack it, and return its root with troupe's conftest in place."""
    where = tmp_path_factory.mktemp("pykka-sdist")
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
    fetched = subprocess.run(
        [*command, f"pykka=={PYKKA_VERSION}", "-d", str(where)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    archives = sorted(where.glob("pykka-*.tar.gz"))
    if fetched.returncode != 0 or not archives:
        reason = (fetched.stderr.strip().splitlines() or ["no archive"])[-1]
        pytest.skip(f"pykka {PYKKA_VERSION}'s sdist could not be fetched from the package index: {reason}")
    with tarfile.open(archives[0]) as archive:
        archive.extractall(where, filter="data")
    root = where / f"pykka-{PYKKA_VERSION}"
    tests = root / "tests"
    (tests / "conftest.py").rename(tests / "pykka_conftest.py")
    (tests / "conftest.py").write_text(_CONFTEST)
    (root / "pytest.ini").write_text(_PYTEST_INI)
    return root


@pytest.mark.parametrize("mode", sorted(MODES))
def test_pykkas_own_test_suite_passes_in_every_mode(mode: str, pykka_suite: Path) -> None:
    env = {**os.environ, "TROUPE_PYKKA_MODE": mode}
    env.pop("PYTHONPATH", None)  # the suite's `tests` package, not ours
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", str(pykka_suite / "pytest.ini"), "tests"],
        cwd=pykka_suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = "\n".join(done.stdout.strip().splitlines()[-60:])
    assert done.returncode == 0, f"pykka {PYKKA_VERSION}'s suite failed in {mode} mode:\n{report}"
