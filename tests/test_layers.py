"""The layers of DESIGN.md: imports point down, never up."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_runtime_never_imports_a_service_or_a_pattern() -> None:
    for path in (ROOT / "actors" / "runtime").rglob("*.py"):
        for name in _imports(path):
            if name.startswith(("actors.", "patterns")):
                assert name.startswith("actors.runtime"), f"{path.name} imports {name}"


def test_patterns_use_only_the_public_api_of_actors() -> None:
    for path in (ROOT / "patterns").rglob("*.py"):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "actors":
                assert len(parts) <= 2, f"{path.name} reaches into {name}; import it from actors"
                assert not any(p.startswith("_") for p in parts), f"{path.name} imports private {name}"


def test_every_public_name_is_exported_from_the_package() -> None:
    import actors

    for name in actors.__all__:
        assert hasattr(actors, name), name
