"""Config validation, env substitution and the `config check` / `keys` commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skyfleet.config import hash_key, load_config
from skyfleet.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "fleet.yaml"

BASE = {
    "providers": [{"name": "azure"}],
    "endpoints": [
        {"name": "e0", "provider": "azure", "url": "http://127.0.0.1:9001/v1", "model": "m"}
    ],
    "models": [{"name": "chat", "endpoints": ["e0"]}],
}


def write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    code = "from skyfleet.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, input=stdin
    )


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_API_KEY", "secret-azure")
    cfg = load_config(EXAMPLE)
    assert {e.tier for e in cfg.endpoints} == {"primary", "spillover", "fallback"}
    assert cfg.endpoints[0].api_key is not None
    assert "secret-azure" not in repr(cfg)


def test_errors_name_file_key_and_expectation(tmp_path: Path) -> None:
    doc = {**BASE, "endpoints": [{**BASE["endpoints"][0], "capacity": "lots"}]}  # type: ignore[dict-item]
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, doc))
    msg = str(e.value)
    assert str(tmp_path / "fleet.yaml") in msg and "endpoints[0].capacity" in msg
    assert "integer" in msg and "'lots'" in msg


@pytest.mark.parametrize(
    ("patch", "where", "what"),
    [
        (
            {"routing": {"max_attempts": 3, "retry_budget": 1}},
            "routing.retry_budget",
            "unknown key",
        ),
        ({"models": [{"name": "chat", "endpoints": ["nope"]}]}, "models[0].endpoints[0]", "'nope'"),
        (
            {"endpoints": [{**BASE["endpoints"][0], "provider": "gcp"}]},
            "endpoints[0].provider",
            "azure",
        ),  # type: ignore[dict-item]
        ({"endpoints": [{**BASE["endpoints"][0], "tier": "gold"}]}, "endpoints[0].tier", "primary"),  # type: ignore[dict-item]
        ({"tenants": [{"name": "t", "api_keys": ["plain-key"]}]}, "tenants[0]", "sha256:"),
        ({"server": {"admin_api_keys": ["x"]}}, "server", "sha256:"),
        (
            {"endpoints": [{**BASE["endpoints"][0], "url": "localhost:80"}]},
            "endpoints[0].url",
            "http",
        ),  # type: ignore[dict-item]
        ({"server": {"redis_url": "http://r:6379"}}, "server.redis_url", "redis://"),
        ({"server": {"redis_url": "redis://:pw@r:99999/0"}}, "server.redis_url", "1 to 65535"),
        ({"server": {"redis_url": "redis://r:6379/cache"}}, "server.redis_url", "database number"),
        ({"server": {"shared_state_interval_s": 0}}, "server.shared_state_interval_s", "0"),
    ],
)
def test_bad_values_are_reported(
    tmp_path: Path, patch: dict[str, object], where: str, what: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {**BASE, **patch}))
    assert where in str(e.value) and what in str(e.value)
    assert ":pw@" not in str(e.value)  # a Redis URL (password) is never echoed


def test_env_substitution_and_missing_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ep = {**BASE["endpoints"][0], "api_key": "${SKYF_TEST_KEY}", "region": "${SKYF_R:-eastus}"}  # type: ignore[dict-item]
    p = write(tmp_path, {**BASE, "endpoints": [ep]})
    monkeypatch.delenv("SKYF_TEST_KEY", raising=False)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "endpoints[0].api_key" in str(e.value) and "SKYF_TEST_KEY" in str(e.value)
    monkeypatch.setenv("SKYF_TEST_KEY", "s3cret")
    cfg = load_config(p)
    assert cfg.endpoints[0].api_key is not None
    assert cfg.endpoints[0].api_key.get_secret_value() == "s3cret"
    assert cfg.endpoints[0].region == "eastus"


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    p = tmp_path / "fleet.yaml"
    p.write_text("providers: [\n  {name: a\nendpoints: x\n")
    with pytest.raises(ConfigError, match=r"fleet.yaml: invalid YAML at line \d+"):
        load_config(p)


def test_config_check_cli(tmp_path: Path) -> None:
    ok = cli("config", "check", str(write(tmp_path, BASE)))
    assert ok.returncode == 0, ok.stderr
    assert "e0" in ok.stdout and "1 endpoints" in ok.stdout
    bad = cli("config", "check", str(write(tmp_path, {**BASE, "models": []})))
    assert bad.returncode == 2
    assert "models" in bad.stderr and "Traceback" not in bad.stderr


def test_keys_new_and_hash_agree() -> None:
    out = cli("keys", "new")
    assert out.returncode == 0
    lines = dict(line.split(":", 1) for line in out.stdout.strip().splitlines())
    key, digest = lines["key"].strip(), lines["hash"].strip()
    assert key.startswith("sk-sf-") and digest == hash_key(key)
    assert cli("keys", "hash", key).stdout.strip() == digest
    assert cli("keys", "hash", stdin=key + "\n").stdout.strip() == digest
