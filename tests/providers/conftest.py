"""Fixtures: each provider's protocol front as a real emulator process on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from skyfleet.emulator.process import EmulatorProcess, start_emulator

PROFILE = "Llama-3.1-8B@H100-SXM-80GB"
SCALE = 10.0
ANTHROPIC_MODEL = "claude-sonnet-4-5"
ANTHROPIC_KEY = "sk-ant-test-0123456789"
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
AWS_KEY_ID, AWS_SECRET = "AKIDEXAMPLE0001", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
GEMINI_MODEL = "gemini-2.0-flash"
PROJECT, LOCATION = "skyfleet-test", "us-central1"
SA_EMAIL = "gateway@skyfleet-test.iam.gserviceaccount.com"
AZURE_DEPLOYMENT = "gpt-4o-prod"
AZURE_KEY = "azure-key-0123456789abcdef"
ENTRA = ("00000000-aaaa-bbbb-cccc-000000000001", "entra-client-secret")
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}


def write_key_file(path: Path, token_uri: str, email: str = SA_EMAIL) -> Path:
    """A service-account key file with a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    return path


def point_token_uri(path: Path, token_uri: str) -> None:
    info = json.loads(path.read_text())
    info["token_uri"] = token_uri
    path.write_text(json.dumps(info))


@pytest.fixture(scope="package")
def anthropic_emu() -> Iterator[EmulatorProcess]:
    args = ["--api", "anthropic", "--api-key", ANTHROPIC_KEY]
    with start_emulator(
        PROFILE, time_scale=SCALE, served_model_name=ANTHROPIC_MODEL, extra_args=args
    ) as e:
        yield e


@pytest.fixture(scope="package")
def bedrock_emu() -> Iterator[EmulatorProcess]:
    args = ["--api", "bedrock", "--aws-credentials", f"{AWS_KEY_ID}:{AWS_SECRET}"]
    with start_emulator(
        PROFILE,
        time_scale=SCALE,
        served_model_name=BEDROCK_MODEL,
        extra_args=[*args, "--region", REGION],
    ) as e:
        yield e


@pytest.fixture(scope="package")
def sa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service account the Vertex front trusts (token_uri set once it runs)."""
    return write_key_file(tmp_path_factory.mktemp("sa") / "sa.json", "http://127.0.0.1:1/token")


@pytest.fixture(scope="package")
def vertex_emu(sa_file: Path) -> Iterator[EmulatorProcess]:
    args = ["--api", "vertex", "--project", PROJECT, "--location", LOCATION]
    args += ["--service-account", str(sa_file), "--token-ttl", "3"]
    with start_emulator(
        PROFILE, time_scale=SCALE, served_model_name=GEMINI_MODEL, extra_args=args
    ) as e:
        point_token_uri(sa_file, e.url + "/token")
        yield e


@pytest.fixture(scope="package")
def azure_emu() -> Iterator[EmulatorProcess]:
    args = ["--api", "azure_openai", "--api-key", AZURE_KEY, "--entra", ":".join(ENTRA)]
    with start_emulator(
        PROFILE, time_scale=SCALE, served_model_name=AZURE_DEPLOYMENT, extra_args=args
    ) as e:
        yield e


@pytest.fixture()
def faults() -> Iterator[list[EmulatorProcess]]:
    """Emulators listed here get their faults cleared after the test."""
    used: list[EmulatorProcess] = []
    yield used
    for e in used:
        e.clear_faults()
