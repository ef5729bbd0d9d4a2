"""The shape the brief asks of the code: no function of tap_postgres/sync/ takes more than five parameters,
and only state.py changes the STATE.

What travels together is one object (sync/stream.py's StreamSync, state.StreamBookmark): a sixth
parameter means something wants grouping.
"""

from __future__ import annotations

import ast
from pathlib import Path

SYNC = Path(__file__).resolve().parent.parent / "tap_postgres" / "sync"


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    arguments = function.args
    names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def test_no_sync_function_takes_more_than_five_parameters():
    crowded = [
        f"{path.name}:{node.lineno} {node.name}({', '.join(_parameters(node))})"
        for path in sorted(SYNC.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(_parameters(node)) > 5
    ]
    assert not crowded, crowded


TAP = SYNC.parent
# state.py owns the STATE; metadata/ is the catalog streams' own pass, with a state of its own
STATE_OWNERS = {TAP / "state.py", TAP / "metadata"}
_CHANGING_METHODS = {"clear", "update", "pop", "popitem", "setdefault", "__setitem__", "__delitem__"}


def _is_state(node: ast.AST) -> bool:
    """Tell whether an expression names a STATE: `state`, `x.state` or `x.state[...]` (its bookmarks)."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return (isinstance(node, ast.Name) and node.id == "state") or (
        isinstance(node, ast.Attribute) and node.attr == "state"
    )


def _state_changes(tree: ast.AST) -> list[int]:
    """Return the lines that change a STATE in place: item assignments and deletions, or a changing method."""
    lines = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        if any(isinstance(target, ast.Subscript) and _is_state(target.value) for target in targets):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _CHANGING_METHODS
            and _is_state(node.func.value)
        ):
            lines.append(node.lineno)
    return lines


def test_only_state_py_changes_the_state():
    changing = [
        f"{path.relative_to(TAP)}:{line}"
        for path in sorted(TAP.rglob("*.py"))
        if not any(path == owner or owner in path.parents for owner in STATE_OWNERS)
        for line in _state_changes(ast.parse(path.read_text()))
    ]
    assert not changing, changing
