"""Lazy re-exports for package __init__ files: `import o3dcli.x` stays cheap, and the name
is imported from its submodule (with its heavy dependencies) on first use."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """A module-level `__getattr__` for `package` resolving `name` from `exports[name]`
    (a module path, absolute or relative to the package)."""

    def __getattr__(name: str):
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(target if target.startswith("o3dcli.") else f"{package}.{target}")
        return getattr(module, name)

    return __getattr__
