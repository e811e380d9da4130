"""Install a pinned LiteLLM proxy into its own venv and write its config for the benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# 1.108.7 is known to run here. 1.82.7 and 1.82.8 were compromised on PyPI (malware): never.
LITELLM_VERSION = "1.108.7"
COMPROMISED = {"1.82.7", "1.82.8"}


def installed_version(venv: Path) -> str | None:
    """The litellm version in venv, or None."""
    py = venv / "bin" / "python"
    if not py.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_litellm(venv: Path, timeout: float = 900.0) -> str:
    """Create venv and install litellm[proxy]==LITELLM_VERSION unless already there."""
    assert LITELLM_VERSION not in COMPROMISED
    have = installed_version(venv)
    if have == LITELLM_VERSION:
        return have
    if have in COMPROMISED:
        raise RuntimeError(f"{venv} holds compromised litellm {have}: delete it")
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (one time, a few minutes)")
    if not (venv / "bin" / "python").exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, f"litellm[proxy]=={LITELLM_VERSION}"], check=True, timeout=timeout)
    have = installed_version(venv)
    if have != LITELLM_VERSION:
        raise RuntimeError(f"litellm install in {venv} gave version {have}")
    return have


def litellm_config(path: Path, upstream_port: int, master_key: str) -> Path:
    """A one-deployment LiteLLM proxy config in front of the fake upstream."""
    path.write_text(
        f"""model_list:
  - model_name: chat
    litellm_params:
      model: openai/m
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-fake-upstream
litellm_settings:
  telemetry: false
  request_timeout: 30
general_settings:
  master_key: {master_key}
"""
    )
    return path


LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price map at start-up
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY": "False",
    "DISABLE_ADMIN_UI": "True",
    "NO_PROXY": "*",
}
