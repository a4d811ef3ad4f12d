"""The layers of the README's architecture: imports point down, never up.

- `actors._core` imports nothing of troupe but itself and `actors.errors`.
- A service (`actors.routing`, `actors.state`, `actors.supervisor` and every
  package added beside them) imports from troupe only `actors._core`'s named
  seams (``from actors._core import X``, X in its ``__all__``), `actors.errors`,
  `actors.protocol` and its own package; never a private name of a sibling.
- `patterns/` and the test kit `actors.testing` import only what `actors/__init__.py` exports.
- Only `actors._core` touches pykka's private modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
ACTORS = ROOT / "actors"
SHARED = ("actors.errors", "actors.protocol")


@attrs.frozen
class _Import:
    path: Path
    module: str
    names: tuple[str, ...]  # empty for `import x`

    def __str__(self) -> str:
        where = self.path.relative_to(ROOT)
        return f"{where} imports {self.module}" + (f" ({', '.join(self.names)})" if self.names else "")


def _imports(path: Path) -> Iterator[_Import]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _Import(path, alias.name, ())
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield _Import(path, node.module, tuple(alias.name for alias in node.names))


def _package_of(path: Path) -> str:
    """Return the service a module belongs to: ``actors.routing`` for actors/routing/pool.py."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:2])


def _service_modules() -> Iterator[Path]:
    for path in ACTORS.rglob("*.py"):
        top = path.relative_to(ACTORS).parts[0]
        if top not in ("_core", "__init__.py", "errors.py", "protocol.py", "testing"):
            yield path


def test_the_core_never_imports_a_service_or_a_pattern() -> None:
    for path in (ACTORS / "_core").rglob("*.py"):
        for imp in _imports(path):
            if imp.module.startswith(("actors", "patterns")):
                assert imp.module.startswith("actors._core") or imp.module == "actors.errors", str(imp)


def test_the_shared_modules_import_only_errors() -> None:
    for path in (ACTORS / "errors.py", ACTORS / "protocol.py"):
        for imp in _imports(path):
            if imp.module.startswith(("actors", "patterns")):
                assert imp.module == "actors.errors", str(imp)


def test_services_use_only_the_cores_named_seams_and_their_own_package() -> None:
    import actors._core

    seams = set(actors._core.__all__)
    services = list(_service_modules())
    assert services, "no service modules found: has the layout moved?"
    for path in services:
        own = _package_of(path)
        for imp in _imports(path):
            if imp.module == "actors" or imp.module.startswith("patterns"):
                msg = f"{imp}: a service cannot import the package's top (a cycle) or a pattern"
                raise AssertionError(msg)
            if not imp.module.startswith("actors."):
                continue
            if imp.module == "actors._core":
                assert set(imp.names) <= seams, f"{imp}: only the names in actors._core.__all__ are seams"
            elif imp.module.startswith("actors._core"):
                msg = f"{imp}: import the seam from actors._core, not from one of its modules"
                raise AssertionError(msg)
            elif imp.module in SHARED:
                continue
            else:
                assert imp.module == own or imp.module.startswith(own + "."), f"{imp}: send a message instead"


def test_no_service_imports_a_private_name_of_another_module() -> None:
    for path in _service_modules():
        own = _package_of(path)
        for imp in _imports(path):
            if not imp.module.startswith(own + "."):
                private = [n for n in imp.names if n.startswith("_")]
                assert not private, f"{imp}: private names of another package"


def test_patterns_use_only_the_public_api_of_actors() -> None:
    import actors

    public = set(actors.__all__)
    for path in (ROOT / "patterns").rglob("*.py"):
        for imp in _imports(path):
            if imp.module.startswith("actors"):
                assert imp.module == "actors", f"{imp}: import it from actors"
                assert set(imp.names) <= public, f"{imp}: only what actors.__all__ exports"


def test_the_test_kit_uses_only_the_public_api_of_actors() -> None:
    import actors

    public = set(actors.__all__)
    for path in (ACTORS / "testing").rglob("*.py"):
        for imp in _imports(path):
            if imp.module == "actors.testing" or imp.module.startswith("actors.testing."):
                continue
            if imp.module.startswith("actors"):
                assert imp.module == "actors", f"{imp}: import it from actors"
                assert set(imp.names) <= public, f"{imp}: only what actors.__all__ exports"


def test_only_the_core_touches_pykkas_private_modules() -> None:
    core = ACTORS / "_core"
    for path in [*ACTORS.rglob("*.py"), *ROOT.joinpath("patterns").rglob("*.py")]:
        if path.is_relative_to(core):
            continue
        for imp in _imports(path):
            if imp.module.startswith("pykka"):
                parts = imp.module.split(".")
                assert not any(p.startswith("_") for p in parts), str(imp)
                assert not any(n.startswith("_") for n in imp.names), str(imp)


def test_every_public_name_is_exported_from_the_package() -> None:
    import actors

    for name in actors.__all__:
        assert hasattr(actors, name), name
    assert sorted(actors.__all__) == sorted(set(actors.__all__))


def test_every_error_is_in_the_errors_module_and_exported() -> None:
    import actors
    import actors.errors

    errors = {
        name
        for name, value in vars(actors.errors).items()
        if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == "actors.errors"
    }
    assert errors == set(actors.errors.__all__)
    assert errors <= set(actors.__all__)
