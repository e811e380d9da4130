"""Endpoint kinds in the fleet config: defaults, each kind's keys, errors naming file + key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.config import load_config
from skyfleet.errors import ConfigError

from .conftest import write_key_file

ROOT = Path(__file__).resolve().parents[2]


def fleet(tmp_path: Path, endpoint: dict[str, Any]) -> Path:
    doc = {
        "providers": [{"name": "p"}],
        "endpoints": [{"name": "e0", "provider": "p", **endpoint}],
        "models": [{"name": "chat", "endpoints": ["e0"]}],
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def error(tmp_path: Path, endpoint: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(fleet(tmp_path, endpoint))
    return str(e.value)


def test_existing_configs_are_openai_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(ROOT / "examples" / "fleet.yaml")
    assert {e.kind for e in cfg.endpoints} == {"openai"}
    assert cfg.endpoints[0].url == "http://127.0.0.1:9001/v1"


def test_multiprovider_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sa = write_key_file(tmp_path / "sa.json", "https://oauth2.googleapis.com/token")
    for var, val in (
        ("AZURE_OPENAI_API_KEY", "k1"),
        ("ENTRA_CLIENT_SECRET", "s1"),
        ("ANTHROPIC_API_KEY", "k2"),
        ("VERTEX_CREDENTIALS_FILE", str(sa)),
    ):
        monkeypatch.setenv(var, val)
    cfg = load_config(ROOT / "examples" / "fleet-multiprovider.yaml")
    by = {e.kind: e for e in cfg.endpoints}
    assert set(by) == {"openai", "azure_openai", "vertex", "bedrock", "anthropic"}
    assert by["bedrock"].url == "https://bedrock-runtime.us-east-1.amazonaws.com"
    assert by["bedrock"].region == "us-east-1"
    assert by["vertex"].url == "https://us-central1-aiplatform.googleapis.com"
    assert by["anthropic"].url == "https://api.anthropic.com"
    assert by["azure_openai"].model == "gpt-4o-prod"  # the deployment, when no model is given
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from skyfleet.cli import main; main()",
            "config",
            "check",
            str(ROOT / "examples" / "fleet-multiprovider.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "k1" not in out.stdout and "s1" not in out.stdout and "k2" not in out.stdout


@pytest.mark.parametrize(
    ("endpoint", "key", "expect"),
    [
        (
            {"kind": "bedrock", "model": "m", "bedrock": {}},
            "endpoints[0].bedrock.region",
            "required key is missing",
        ),
        (
            {"kind": "bedrock", "model": "m"},
            "endpoints[0]",
            "kind bedrock needs the 'bedrock' block",
        ),
        (
            {"kind": "bedrock", "model": "m", "bedrock": {"region": "Virginia"}},
            "endpoints[0].bedrock.region",
            "pattern",
        ),
        (
            {
                "kind": "azure_openai",
                "url": "https://r.openai.azure.com",
                "api_key": "k",
                "azure": {},
            },
            "endpoints[0].azure.deployment",
            "required key is missing",
        ),
        (
            {
                "kind": "azure_openai",
                "url": "https://r.openai.azure.com",
                "azure": {"deployment": "d"},
            },
            "endpoints[0]",
            "needs api_key",
        ),
        ({"kind": "anthropic", "model": "m"}, "endpoints[0]", "kind anthropic needs api_key"),
        (
            {"kind": "vertex", "model": "m", "vertex": {"project": "p", "credentials_file": "x"}},
            "endpoints[0].vertex.location",
            "required key is missing",
        ),
        (
            {
                "kind": "bedrock",
                "model": "m",
                "bedrock": {"region": "us-east-1"},
                "azure": {"deployment": "d"},
            },
            "endpoints[0]",
            "key 'azure' applies to kind azure_openai only",
        ),
        (
            {"kind": "gemini", "model": "m", "url": "http://x"},
            "endpoints[0].kind",
            "'openai', 'azure_openai', 'vertex', 'bedrock' or 'anthropic'",
        ),
        (
            {"kind": "openai", "model": "m", "url": "http://x", "bedrock": {"region": "us-east-1"}},
            "endpoints[0]",
            "applies to kind bedrock only",
        ),
        (
            {
                "kind": "bedrock",
                "model": "m",
                "bedrock": {"region": "us-east-1", "access_key_id": "AKID"},
            },
            "endpoints[0].bedrock",
            "access_key_id and secret_access_key together",
        ),
    ],
)
def test_kind_errors_name_file_key_and_expectation(
    tmp_path: Path, endpoint: dict[str, Any], key: str, expect: str
) -> None:
    msg = error(tmp_path, endpoint)
    assert "fleet.yaml" in msg and f"{key}:" in msg and expect in msg, msg


def test_credentials_file_is_checked(tmp_path: Path) -> None:
    vx = {"kind": "vertex", "model": "m", "vertex": {"project": "p", "location": "us-central1"}}
    msg = error(tmp_path, {**vx, "vertex": {**vx["vertex"], "credentials_file": "missing.json"}})
    assert (
        "endpoints[0].vertex.credentials_file" in msg
        and "cannot read" in msg
        and "missing.json" in msg
    )
    assert "service-account key file" in msg
    (tmp_path / "user.json").write_text('{"type": "authorized_user"}')
    msg = error(tmp_path, {**vx, "vertex": {**vx["vertex"], "credentials_file": "user.json"}})
    assert "is not a service-account key" in msg
    sa = write_key_file(tmp_path / "sa.json", "https://oauth2.googleapis.com/token")
    cfg = load_config(
        fleet(tmp_path, {**vx, "vertex": {**vx["vertex"], "credentials_file": "sa.json"}})
    )
    assert cfg.endpoints[0].vertex is not None and cfg.endpoints[0].vertex.credentials_file == str(
        sa
    )


def test_secrets_never_in_errors_or_repr(tmp_path: Path) -> None:
    ep = {
        "kind": "bedrock",
        "model": "m",
        "bedrock": {"region": "us-east-1", "secret_access_key": "TOPSECRET-1"},
    }
    assert "TOPSECRET-1" not in error(tmp_path, ep)
    ep2 = {
        "kind": "azure_openai",
        "url": "https://r",
        "api_key": "TOPSECRET-2",
        "azure": {
            "deployment": "d",
            "entra": {"tenant_id": "t", "client_id": "c", "client_secret": ["TOPSECRET-3"]},
        },
    }
    msg = error(tmp_path, ep2)
    assert "TOPSECRET" not in msg and "client_secret" in msg
    ok = {
        "kind": "azure_openai",
        "url": "https://r",
        "azure": {
            "deployment": "d",
            "entra": {"tenant_id": "t", "client_id": "c", "client_secret": "TOPSECRET-4"},
        },
        "headers": {"X-K": "TOPSECRET-5"},
    }
    cfg = load_config(fleet(tmp_path, ok))
    assert "TOPSECRET" not in repr(cfg) and "TOPSECRET" not in str(cfg.model_dump())


def test_config_check_cli_fails_on_unreadable_credentials(tmp_path: Path) -> None:
    path = fleet(
        tmp_path,
        {
            "kind": "vertex",
            "model": "m",
            "vertex": {
                "project": "p",
                "location": "europe-west4",
                "credentials_file": "/nonexistent/sa.json",
            },
        },
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from skyfleet.cli import main; main()",
            "config",
            "check",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "fleet.yaml" in out.stderr and "vertex.credentials_file" in out.stderr
    assert "/nonexistent/sa.json" in out.stderr and "Traceback" not in out.stderr
