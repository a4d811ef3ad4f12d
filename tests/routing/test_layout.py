"""Who may change a routing table's state: only the table and its admission control.

The router and the pool read the table, and change it through its methods
(which keep its invariants under its lock); neither assigns its fields, and
neither reaches into the core through ``_troupe_cell``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROUTING = Path(__file__).resolve().parents[2] / "actors" / "routing"


def _assigned_attributes(path: Path) -> list[tuple[str, str]]:
    """Return ``(owner, attr)`` for each attribute assigned (``=``, ``+=``, annotated) in `path`."""
    return _assigned_attributes_in(ast.parse(path.read_text(), filename=str(path)))


def _fields_of(module: str, cls: str) -> set[str]:
    """Return the instance fields `cls` in `module` assigns to itself (``self.x = ...``)."""
    tree = ast.parse((ROUTING / module).read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    return {attr for owner, attr in _assigned_attributes_in(node) if owner == "self"}


def _assigned_attributes_in(tree: ast.AST) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        else:
            continue
        found += [(ast.unparse(t.value), t.attr) for t in targets if isinstance(t, ast.Attribute)]
    return found


def test_the_pool_and_the_router_assign_no_field_of_the_table_or_its_admission() -> None:
    fields = _fields_of("table.py", "RoutingTable") | _fields_of("admission.py", "AdmissionControl")
    assert {"routees", "dead_removed", "_growing", "_pending", "_closed", "_on_idle", "_refused"} <= fields
    for name in ("pool.py", "router.py"):
        written = [f"{owner}.{attr}" for owner, attr in _assigned_attributes(ROUTING / name) if attr in fields]
        assert written == [], name
        # `self.routing` is the table: a field of the actor of that name is not.
        assert not [o for o, _ in _assigned_attributes(ROUTING / name) if o.startswith("self.routing")], name


def test_the_pool_and_the_router_reach_their_ref_without_the_cell() -> None:
    for name in ("pool.py", "router.py"):
        assert "_troupe_cell" not in (ROUTING / name).read_text(), name
