"""Lazy package exports (PEP 562): `from skyfleet.perf import Profile` works as before, but
importing the package (e.g. for its CLI) does not import numpy, scipy or aiohttp."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any


def lazy_exports(
    package: str, names: Sequence[str], modules: Sequence[str]
) -> Callable[[str], Any]:
    """A module `__getattr__` serving `names` from the first of `modules` that has them.

    No exported name may equal a submodule's name: importing the submodule would bind the
    module object to that name on the package first (tests/test_cli_startup.py checks)."""
    exported = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in exported:
            for sub in modules:
                mod = importlib.import_module(f"{package}.{sub}")
                if hasattr(mod, name):
                    value = getattr(mod, name)
                    setattr(sys.modules[package], name, value)  # next lookups skip this
                    return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
