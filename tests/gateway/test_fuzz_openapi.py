"""schemathesis, driven by OpenAI's published OpenAPI spec (src/skyfleet/drill/
openai-openapi.yaml, with its source and date), against a real `skyfleet serve` in front of a
real emulator: zero 5xx from the gateway's own code, every error in OpenAI's shape, every 200
valid against the spec (JSON bodies and stream events)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfleet.drill.drills import GATEWAY_ENV, TENANT_KEY, write_config
from skyfleet.drill.fuzz import fuzz
from skyfleet.drill.procs import Processes
from skyfleet.gateway.process import GatewayProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
EXAMPLES = 40  # per operation and generation mode: 320 cases, ≈ 15 s


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("fuzz-openapi")
    with Processes() as procs:
        emu = procs.emulator(time_scale=200)
        cfg = write_config(Path(work), [{"name": "e0", "url": emu.base_url}])
        yield procs.gateway(cfg, env=GATEWAY_ENV)
    assert not procs.leaked


def test_openapi_spec_fuzzing(gateway: GatewayProcess, capsys: pytest.CaptureFixture[str]) -> None:
    stats = fuzz(gateway.base_url, TENANT_KEY, examples=EXAMPLES)
    with capsys.disabled():
        print(f"\nOpenAPI fuzz: {stats.to_json()}")
    assert stats.total >= 4 * 2 * EXAMPLES * 0.9
    served = [k for k, n in stats.statuses.items() if k.endswith(" 200") and n]
    assert len(served) == 4, "every operation answered 200 at least once (cases reach upstream)"
    assert not stats.server_errors, stats.server_errors[:5]
    assert not stats.schema_violations, stats.schema_violations[:5]
    assert "internal_error" not in gateway.log()
