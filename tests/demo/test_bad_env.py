"""Bad environment: a missing part or a taken port is a clear SkyfleetError, before any start."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from skyfleet.demo.run import check_port, require_parts
from skyfleet.errors import SkyfleetError


def test_missing_part_names_it_and_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def fake(name: str, *a: Any, **kw: Any) -> Any:
        if name == "skyfleet.bench.loadgen":
            raise ModuleNotFoundError("No module named 'aiohttp'", name="aiohttp")
        return real(name, *a, **kw)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(SkyfleetError, match=r"load generator.*aiohttp.*pip install"):
        require_parts()


def test_port_in_use_is_refused_up_front() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SkyfleetError, match=f"port {port} .* already in use.*--port"):
            check_port("127.0.0.1", port)


def test_free_port_passes() -> None:
    check_port("127.0.0.1", 0)
