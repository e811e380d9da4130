"""Fixtures: a fast fake OpenAI server (real subprocess on 127.0.0.1), stopped on teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skyfleet.bench.echo_server import EchoServer


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with EchoServer("--token-delay-ms", "2", "--ttft-ms", "20") as s:
        yield s


@pytest.fixture(scope="module")
def keyed_echo() -> Iterator[EchoServer]:
    with EchoServer("--api-key", "sk-right") as s:
        yield s


@pytest.fixture
def flaky_echo() -> Iterator[EchoServer]:
    with EchoServer("--fail-every", "5", "--hang-every", "7") as s:
        yield s
