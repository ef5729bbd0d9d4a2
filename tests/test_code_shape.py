"""The shape the brief asks of the sync code: no function of tap_postgres/sync/ takes more than five parameters.

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
