"""DESIGN §11: the outbox sits at the bottom beside alerts and imports no other project app."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT_APPS = {"chips", "instances", "activation", "warmer", "chipfarm", "sandbox", "config"}


def test_outbox_imports_no_other_app():
    offending = []
    for path in sorted((ROOT / "outbox").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            offending += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in PROJECT_APPS]
    assert not offending, offending
