"""The import direction ARCHITECTURE.md states: training -> export -> bundle <- lgfa_deploy.

``training`` imports nothing of ours; ``lgfa_deploy`` reaches ``training`` and ``export`` only lazily (inside
functions), but for its torch backend, which is the PyTorch reference itself.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_LEVEL_EXCEPTIONS = {"lgfa_deploy/backends/torch_backend.py"}


def module_level_imports(path: Path) -> list[str]:
    """The top-level packages a file imports when it is imported (statements at module level only)."""
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("training", {"lgfa_deploy", "export"}), ("lgfa_deploy", {"training", "export"})])
def test_packages_import_only_downstream_at_module_level(package: str, forbidden: set[str]) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    wrong = [
        f"{path.relative_to(ROOT).as_posix()} imports {name}"
        for path in files
        if path.relative_to(ROOT).as_posix() not in MODULE_LEVEL_EXCEPTIONS
        for name in module_level_imports(path)
        if name in forbidden
    ]
    assert wrong == []
