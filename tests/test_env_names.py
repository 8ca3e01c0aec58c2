"""Environment variable names live in llem_core.env_names: no converted module spells an
``LLEM_`` name as a string literal, and every name the code mentions is declared there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from llem_core import env_names

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("llem_core", "plugins", "scripts", "dags")
NAME = re.compile(r"\bLLEM_[A-Z][A-Z0-9_]*")
# Modules not yet converted (other work is rewriting them): shrink this list, never grow
# it. A module listed here that no longer spells a name fails the test below, so the list
# cannot go stale.
NOT_YET_CONVERTED = frozenset({
    "llem_core/campaign/engine_policy.py",
    "llem_core/runtime/supervisor/protocol.py",
    "llem_core/analysis/results.py",
    "llem_core/campaign/trust.py",
})


def _sources() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py")
                  if "__pycache__" not in p.parts)


def _documentation(tree: ast.AST) -> set[int]:
    """The string nodes that document rather than name: docstrings, and field descriptions
    (``description=...``, which the JSON schema and the trigger form show as prose)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
        if isinstance(node, ast.keyword) and node.arg == "description":
            found.update(id(n) for n in ast.walk(node.value))
    return found


def literal_names(source: str) -> list[tuple[int, str]]:
    """(line, name) of each LLEM_ name inside a string literal that is not documentation
    (f-strings' literal parts included: an error message names the constant)."""
    tree = ast.parse(source)
    docs = _documentation(tree)
    return [(node.lineno, name) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs for name in NAME.findall(node.value)]


def _spelled() -> dict[str, list[tuple[int, str]]]:
    found = {}
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel != "llem_core/env_names.py":
            names = literal_names(path.read_text(encoding="utf-8"))
            if names:
                found[rel] = names
    return found


def test_no_converted_module_spells_an_llem_variable_name():
    spelled = _spelled()
    offending = {f: n for f, n in spelled.items() if f not in NOT_YET_CONVERTED}
    assert offending == {}, ("use the constants of llem_core/env_names.py instead of: "
                             f"{offending}")
    stale = sorted(NOT_YET_CONVERTED - set(spelled))
    assert stale == [], f"converted: remove {stale} from NOT_YET_CONVERTED"


def test_the_scan_sees_literals_but_not_documentation():
    code = ('"""Reads $LLEM_CACHE_DIR."""\n'
            'def f():\n    """LLEM_LOCK_DIR too."""\n'
            '    return {"LLEM_HOST_NAME": 1}, f"set {x} or LLEM_ISOLATION"\n'
            'y = Field(None, description="see " "LLEM_ALLOWED_PYTHONS")\n')
    assert literal_names(code) == [(4, "LLEM_HOST_NAME"), (4, "LLEM_ISOLATION")]


def test_every_llem_variable_the_code_mentions_is_declared():
    declared = {v for k, v in vars(env_names).items() if k.isupper() and isinstance(v, str)}
    mentioned = {name for path in _sources()
                 for name in NAME.findall(path.read_text(encoding="utf-8"))}
    assert mentioned - declared == set()
    assert all(v.startswith(env_names.PREFIX) or not v.startswith("LLEM")
               for v in declared)
