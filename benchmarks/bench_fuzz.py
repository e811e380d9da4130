"""Fuzzing and key-comparison figures for docs/reliability.md, the long form of the tests:

- schemathesis from OpenAI's published spec (src/skyfleet/drill/openai-openapi.yaml) against
  a real `skyfleet serve` in front of a real emulator, `--examples` cases per operation and
  generation mode (4 operations × positive/negative);
- the hypothesis fuzzers of tests/gateway (generated bodies and headers; SSE-breaking
  upstream replies) with `--hypothesis-examples` each;
- the time `Fleet.tenant_for` / `Fleet.is_admin` take for the right key, a wrong key of the
  same length, a wrong key sharing all but its last character, and a short wrong key
  (median of 31 batches of 20,000 calls): a key's digest is what is compared.
Prints the figures and writes benchmarks/results/bench_fuzz.json.
Usage: .venv/bin/python benchmarks/bench_fuzz.py [--examples 500] [--hypothesis-examples 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from skyfleet.config import hash_key, parse_config
from skyfleet.drill.drills import GATEWAY_ENV, TENANT_KEY, write_config
from skyfleet.drill.fuzz import fuzz
from skyfleet.drill.procs import Processes
from skyfleet.gateway.fleet import Fleet

OUT = Path(__file__).parent / "results" / "bench_fuzz.json"
ROOT = Path(__file__).parent.parent


def openapi(examples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work, Processes() as procs:
        emu = procs.emulator(time_scale=200)
        gw = procs.gateway(
            write_config(Path(work), [{"name": "e0", "url": emu.base_url}]), env=GATEWAY_ENV
        )
        started = time.monotonic()
        stats = fuzz(gw.base_url, TENANT_KEY, examples=examples)
        out = stats.to_json() | {"wall_s": round(time.monotonic() - started, 1)}
    return out | {"leaked_processes": procs.leaked}


def hypothesis_fuzzers(examples: int) -> dict[str, Any]:
    env = {**os.environ, "SKYFLEET_FUZZ_EXAMPLES": str(examples)}
    tests = ["tests/gateway/test_fuzz_requests.py", "tests/gateway/test_fuzz_sse.py"]
    cmd = [sys.executable, "-m", "pytest", *tests, "-q", "-s", "-p", "no:cacheprovider"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    text = proc.stdout + proc.stderr
    found = {
        "requests": re.search(r"request fuzz: (\d+) requests, statuses (\{.*\})", text),
        "sse": re.search(r"SSE fuzz: (\d+) streams, ends (\{.*\})", text),
    }
    return {
        "examples_each": examples,
        "passed": proc.returncode == 0,
        "wall_s": round(time.monotonic() - started, 1),
        **{
            k: {"cases": int(m.group(1)), "outcomes": m.group(2)} if m else None
            for k, m in found.items()
        },
        "tail": text[-1500:] if proc.returncode else "",
    }


def key_timing() -> dict[str, Any]:
    admin, tenant = "sk-admin-" + "a" * 40, "sk-tenant-" + "b" * 40
    cfg = parse_config(
        {
            "server": {"admin_api_keys": [hash_key(admin)]},
            "providers": [{"name": "p"}],
            "endpoints": [
                {"name": "e", "provider": "p", "url": "http://127.0.0.1:9/v1", "model": "m"}
            ],
            "models": [{"name": "chat", "endpoints": ["e"]}],
            "tenants": [
                {"name": f"t{i}", "api_keys": [hash_key(f"{tenant}{i}")]} for i in range(1000)
            ],
        }
    )
    fleet = Fleet(cfg)
    cases = {
        "right key": (f"{tenant}7", admin),
        "wrong key, same length": ("sk-tenant-" + "c" * 40 + "7", "sk-admin-" + "c" * 40),
        "wrong key, all but the last character": (f"{tenant}x", admin[:-1] + "b"),
        "short wrong key": ("sk-x", "sk-x"),
    }
    out: dict[str, Any] = {}
    for label, (tkey, akey) in cases.items():
        row = {}
        for what, fn, key in (
            ("tenant_for", fleet.tenant_for, tkey),
            ("is_admin", fleet.is_admin, akey),
        ):
            batches = []
            for _ in range(31):
                t = time.perf_counter_ns()
                for _ in range(20_000):
                    fn(key)
                batches.append((time.perf_counter_ns() - t) / 20_000)
            row[f"{what}_ns"] = round(statistics.median(batches), 1)
        out[label] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--examples", type=int, default=500, help="schemathesis, per operation and mode"
    )
    ap.add_argument("--hypothesis-examples", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    result = {
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "loadavg_at_start": os.getloadavg(),
        },
        "openapi": openapi(a.examples),
        "hypothesis": hypothesis_fuzzers(a.hypothesis_examples),
        "key_comparison": key_timing(),
    }
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    ok = (
        result["openapi"]["server_errors"] == 0
        and result["openapi"]["schema_violations"] == 0
        and result["hypothesis"]["passed"]
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
