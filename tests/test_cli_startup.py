"""`skyfleet` starts fast: importing the CLI pulls in no numerical or network stack, and
the packages' lazy exports give the same objects as their modules."""

from __future__ import annotations

import json
import subprocess
import sys

LAZY = ("skyfleet.perf", "skyfleet.bench", "skyfleet.sim", "skyfleet.planner")
HEAVY = ("numpy", "scipy", "aiohttp", "pydantic", "matplotlib", "redis")


def _python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def test_importing_the_cli_loads_no_heavy_dependency() -> None:
    code = "import json, sys, skyfleet.cli; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(_python(code)))
    assert loaded.isdisjoint(HEAVY), loaded & set(HEAVY)


def test_lazy_exports_are_the_modules_objects_whatever_was_imported_first() -> None:
    """Every submodule imported *before* the package's names are read (an imported
    submodule becomes a package attribute): each exported name is still the object its
    module defines, never a module."""
    code = f"""
import importlib, json, pkgutil, sys, types
bad = []
for name in {LAZY!r}:
    pkg = importlib.import_module(name)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{{name}}.{{info.name}}")
    for attr in pkg.__all__:
        obj = getattr(pkg, attr)
        subs = [m for n, m in sys.modules.items() if n.startswith(name + ".")]
        homes = [m for m in subs if getattr(m, attr, None) is obj]
        if isinstance(obj, types.ModuleType) or not homes:
            bad.append(f"{{name}}.{{attr}}")
print(json.dumps(bad))
"""
    assert json.loads(_python(code)) == []
