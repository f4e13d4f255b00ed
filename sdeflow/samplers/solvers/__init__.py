"""The solvers, one file each. Every module names what it exports in `__all__`; this package gathers them.

This is the one registry: adding a solver is adding its file here and its config in `conf/solver/`.
The package's exports, `sdeflow`'s, the `solver=all` sweep and the tests' registry all follow from it.
"""

import importlib
import pkgutil

__all__: list[str] = []
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    globals().update({name: getattr(_module, name) for name in _module.__all__})
    __all__ += _module.__all__
del _info, _module
