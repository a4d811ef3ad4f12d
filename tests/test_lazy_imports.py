"""`import actors` imports no service; every name of ``actors.__all__`` still imports from it.

The services are imported on first use of one of their names (PEP 562, see
`actors/__init__.py`). Each check runs in a fresh interpreter: in this one,
other tests have imported everything already.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import actors

SERVICES = ("actors.cluster", "actors.coordination", "actors.messaging", "actors.routing", "actors.state")


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return done.stdout


def test_importing_actors_imports_no_service() -> None:
    code = f"import json, sys, actors; print(json.dumps([m for m in {SERVICES!r} if m in sys.modules]))"
    assert json.loads(_fresh(code)) == []


def test_every_exported_name_imports_from_actors_in_a_fresh_interpreter() -> None:
    code = (
        "import json, actors\n"
        "missing = []\n"
        "for name in actors.__all__:\n"
        "    try:\n"
        "        exec(f'from actors import {name}', {})\n"
        "    except ImportError as exc:\n"
        "        missing.append(f'{name}: {exc}')\n"
        "print(json.dumps(missing))\n"
    )
    assert json.loads(_fresh(code)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_name_of_one_service_imports_that_service_on_first_use(service: str) -> None:
    name = actors._LAZY[service][0]
    code = (
        f"import json, sys, actors\n"
        f"before = {service!r} in sys.modules\n"
        f"value = actors.{name}\n"
        f"import {service} as service\n"
        f"print(json.dumps([before, {service!r} in sys.modules, value is service.{name}]))\n"
    )
    assert json.loads(_fresh(code)) == [False, True, True]


def test_the_lazy_table_names_each_export_once_where_its_service_exports_it() -> None:
    lazy = [name for names in actors._LAZY.values() for name in names]
    assert len(lazy) == len(set(lazy))
    assert set(lazy) <= set(actors.__all__)
    for module, names in actors._LAZY.items():
        service = importlib.import_module(module)
        for name in names:
            assert name in service.__all__, f"{module} does not export {name}"
            assert getattr(actors, name) is getattr(service, name)


def test_dir_lists_every_export_and_an_unknown_name_is_an_attribute_error() -> None:
    assert set(actors.__all__) <= set(dir(actors))
    with pytest.raises(AttributeError, match="module 'actors' has no attribute 'NoSuchName'"):
        _ = actors.NoSuchName
