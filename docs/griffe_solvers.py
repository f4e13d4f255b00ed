"""A griffe extension: `sdeflow.samplers.solvers` read statically as Python imports it.

The package gathers every solver file's `__all__` when it is imported (`importlib` over its modules),
which static analysis cannot follow. Here the same list is read from the files themselves, so that the
package's exports, and `sdeflow`'s re-export of them, are known to the API pages and their links.
"""

from __future__ import annotations

import ast
from pathlib import Path

import griffe

PACKAGE = "sdeflow.samplers.solvers"


def declared_exports(path: Path) -> list[str]:
    """The names in a module file's `__all__ = [...]`."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


class SolverRegistry(griffe.Extension):
    def on_module_members(self, *, mod: griffe.Module, **kwargs) -> None:
        if mod.path != PACKAGE:
            return
        exports = []
        for path in sorted(Path(mod.filepath).parent.glob("*.py")):
            if path.stem == "__init__":
                continue
            for name in declared_exports(path):
                mod.set_member(name, griffe.Alias(name, f"{PACKAGE}.{path.stem}.{name}", parent=mod))
                exports.append(name)
        mod.exports = exports
