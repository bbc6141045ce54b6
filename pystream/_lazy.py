"""PEP 562 lazy attributes for package namespaces: ``import pystream`` stays light (no torch,
lancedb or av until a name that needs them is used)."""

from __future__ import annotations

import importlib


def lazy_attributes(package: str, table: dict, namespace: dict):
    """(__getattr__, __dir__) for ``package``: ``table`` maps a public name to
    (submodule, attribute); a resolved name is cached in ``namespace`` (the module globals)."""

    def __getattr__(name: str):
        if name in table:
            module, attr = table[name]
            value = getattr(importlib.import_module(f".{module}", package), attr)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
