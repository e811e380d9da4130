"""Fixtures: real emulator processes on 127.0.0.1, stopped at teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skyfleet.emulator.process import EmulatorProcess, start_emulator

FAST_PROFILE = "Llama-3.1-8B@H100-SXM-80GB"
MODEL = "Llama-3.1-8B"


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    """A real-time emulator shared by a module's tests (faults cleared after each test)."""
    with start_emulator(FAST_PROFILE, time_scale=4.0, seed=7) as e:
        yield e


@pytest.fixture()
def clean(emu: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The shared emulator, with its faults cleared after the test."""
    yield emu
    emu.clear_faults()
