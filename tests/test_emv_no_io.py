"""ARCHITECTURE principle 1: the kernel package does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"smartcard", "serial", "pygame", "socket", "paho", "sqlite3", "subprocess", "asyncio",
             "urllib", "http", "requests", "ssl", "select", "selectors", "threading"}
EMV = Path(__file__).resolve().parent.parent / "emv"


def test_emv_imports_no_io_library() -> None:
    offenders = []
    for path in sorted(EMV.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_emv_never_calls_open() -> None:
    calls = [f"{p.name}:{n.lineno}" for p in EMV.rglob("*.py")
             for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open"]
    assert calls == []
