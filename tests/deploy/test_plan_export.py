"""Plan → capacity: `skyfleet export` / `skyfleet plan --export` write SkyPilot services that
SkyPilot's schema accepts, Kubernetes vLLM manifests that validate and agree with the plan,
and a gateway config that skyfleet loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from skyfleet.config import parse_config
from skyfleet.deploy.cli import options
from skyfleet.deploy.export import export_plan
from skyfleet.deploy.plan_file import load_plan_file
from skyfleet.errors import ConfigError

from .k8s import KUBECTL, one, render, resolve_port, validate
from .skypilot_schema import validate_service_yaml

PLAN = Path(__file__).parent / "data" / "plan.yaml"
CLI = [sys.executable, "-c", "from skyfleet.cli import main; main()"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("capacity")
    export_plan(PLAN, out, options())
    return out


def sky_docs(out: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted((out / "skypilot").glob("*"))}


def pool_objects(out: Path, pool: str) -> list[dict[str, Any]]:
    d = out / "k8s" / pool
    if KUBECTL is not None:
        return render(d)
    files = yaml.safe_load((d / "kustomization.yaml").read_text())["resources"]
    return [o for f in files for o in yaml.safe_load_all((d / f).read_text()) if o]


def test_skypilot_services_per_cloud_offering_pass_skypilots_schema(exported: Path) -> None:
    docs = sky_docs(exported)
    assert set(docs) == {
        "chat-aws-us-east-1-h100-spot",
        "chat-gcp-us-central1-tpu-v5e-x4-on-demand",
        "chat-oracle-us-ashburn-1-h100-reserved-1y",
    }, "one per cloud entry with replicas; none for the zero-replica MI300X entry"
    for doc in docs.values():
        validate_service_yaml(doc)
        assert doc["envs"]["MODEL_ID"] == "meta-llama/Llama-3.1-8B-Instruct"
        assert doc["envs"]["SERVED_MODEL_NAME"] == "Llama-3.1-8B"
        assert "vllm serve $MODEL_ID" in doc["run"] and "--tensor-parallel-size $TP" in doc["run"]
    spot = docs["chat-aws-us-east-1-h100-spot"]
    assert spot["resources"] | {"labels": None} == {
        "cloud": "aws",
        "region": "us-east-1",
        "accelerators": {"H100": 1},
        "use_spot": True,
        "ports": 8000,
        "disk_size": 256,
        "labels": None,
    }
    assert spot["service"]["replica_policy"] == {
        "min_replicas": 2,
        "max_replicas": 5,
        "target_qps_per_replica": 55.5,
    }
    tpu = docs["chat-gcp-us-central1-tpu-v5e-x4-on-demand"]
    assert tpu["resources"]["accelerators"] == {"tpu-v5litepod-4": 1}
    assert tpu["envs"]["TP"] == "4" and tpu["setup"] == "pip install vllm-tpu"
    assert tpu["service"]["replicas"] == 1 and tpu["resources"]["use_spot"] is False
    oci = docs["chat-oracle-us-ashburn-1-h100-reserved-1y"]
    assert oci["resources"]["cloud"] == "oci" and oci["resources"]["use_spot"] is False


def test_the_vendored_schema_rejects_what_skypilot_rejects() -> None:
    good = sky_docs_from_plan()["chat-aws-us-east-1-h100-spot"]
    for path, bad in (
        (("resources", "use_spot"), "yes"),
        (("resources", "cloud"), "coreweave"),
        (("service", "replica_policy", "min_replicas"), -1),
        (("resourcez",), {}),
    ):
        doc = yaml.safe_load(yaml.safe_dump(good))
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = bad
        with pytest.raises(jsonschema.ValidationError):
            validate_service_yaml(doc)


def sky_docs_from_plan() -> dict[str, dict[str, Any]]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        export_plan(PLAN, d, options())
        return sky_docs(Path(d))


def test_skypilot_itself_parses_the_services(exported: Path) -> None:
    sky = pytest.importorskip("sky", reason="skypilot not installed (pip install skypilot)")
    for p in sorted((exported / "skypilot").glob("*.yaml")):
        task = sky.Task.from_yaml(str(p))
        assert task.service is not None


def test_self_hosted_pools_get_one_vllm_deployment_per_accelerator_type(exported: Path) -> None:
    pools = sorted(p.name for p in (exported / "k8s").iterdir())
    assert pools == ["coreweave-us-east-04", "onprem-dc-east"]
    objs = pool_objects(exported, "onprem-dc-east")
    assert validate(objs) == []
    deps = {d["metadata"]["name"]: d for d in objs if d["kind"] == "Deployment"}
    assert set(deps) == {"vllm-chat-h100", "vllm-chat-a100-80gb", "vllm-big-h100-x4"}
    expect = {  # name: (replicas, TP, node label value, served model, HF repo)
        "vllm-chat-h100": (2, 1, "NVIDIA-H100-80GB-HBM3", "Llama-3.1-8B", "Llama-3.1-8B-Instruct"),
        "vllm-chat-a100-80gb": (1, 1, "NVIDIA-A100-SXM4-80GB", "Llama-3.1-8B", "8B-Instruct"),
        "vllm-big-h100-x4": (1, 4, "NVIDIA-H100-80GB-HBM3", "Llama-3.1-70B", "70B-Instruct"),
    }
    for name, (replicas, tp, label, served, repo) in expect.items():
        d = deps[name]
        spec = d["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        assert d["spec"]["replicas"] == replicas
        assert spec["nodeSelector"] == {"nvidia.com/gpu.product": label}
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(tp)
        args = c["args"]
        assert args[0].endswith(repo) and c["command"] == ["vllm", "serve"]
        assert args[args.index("--tensor-parallel-size") + 1] == str(tp)
        assert args[args.index("--served-model-name") + 1] == served
        port = int(args[args.index("--port") + 1])
        svc = one(objs, "Service", name)
        assert [resolve_port(c, p["targetPort"]) for p in svc["spec"]["ports"]] == [port]
        assert (
            svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        )
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["path"] == "/health"
            assert resolve_port(c, c[probe]["httpGet"]["port"]) == port
        assert d["metadata"]["namespace"] == "skyfleet"
    cw = pool_objects(exported, "coreweave-us-east-04")
    assert validate(cw) == []
    h200 = one(cw, "Deployment", "vllm-big-h200-x2")
    assert h200["spec"]["replicas"] == 2, "the peak over the periods"
    assert h200["metadata"]["annotations"]["skyfleet.io/replicas-by-period"] == "1,2,2"


def test_gateway_config_routes_each_model_to_its_exported_units(
    exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = yaml.safe_load((exported / "gateway.yaml").read_text())
    for name in sky_docs(exported):
        var = "SKYSERVE_" + name.upper().replace("-", "_") + "_URL"
        monkeypatch.setenv(var, f"http://10.0.0.1:3000{len(name) % 10}")
    cfg = parse_config(doc, "gateway.yaml")
    by_model = {m.name: m.endpoints for m in cfg.models}
    assert set(by_model) == {"chat", "big"}
    assert len(by_model["chat"]) == 5 and len(by_model["big"]) == 2
    h100 = cfg.endpoint("onprem-dc-east-vllm-chat-h100")
    assert h100.url == "http://vllm-chat-h100.skyfleet.svc:8000/v1" and h100.tier == "primary"
    assert h100.capacity == 2 * 96 and h100.model == "Llama-3.1-8B"
    spot = cfg.endpoint("chat-aws-us-east-1-h100-spot")
    assert spot.tier == "spillover" and spot.capacity == 5 * 96
    assert spot.url.startswith("http://10.0.0.1:")


def test_bad_plans_and_options_are_clear_errors(tmp_path: Path) -> None:
    plan = yaml.safe_load(PLAN.read_text())
    cases = [
        (lambda p: p["entries"][0].pop("replicas"), r"key 'entries.0.replicas'"),
        (lambda p: p["entries"][0].update(tier="monthly"), r"entries.0.tier"),
        (lambda p: p["entries"][0].update(model="nope"), r"'nope' is not one of models"),
        (lambda p: p["entries"][0].update(accelerator="Gaudi3"), r"'Gaudi3' has no SkyPilot"),
        (
            lambda p: (
                p["models"][0].update(model="MyModel-7B")
                or [e.update(model_spec="") for e in p["entries"] if e["model"] == "chat"]
            ),
            r"--hf-model MyModel-7B=ORG/NAME",
        ),
    ]
    for i, (mutate, msg) in enumerate(cases):
        p = yaml.safe_load(yaml.safe_dump(plan))
        mutate(p)
        f = tmp_path / f"bad{i}.yaml"
        f.write_text(yaml.safe_dump(p))
        with pytest.raises(ConfigError, match=msg) as e:
            export_plan(f, tmp_path / f"out{i}", options())
        assert str(e.value).startswith(f"{f}: "), "the error names the plan file"
    with pytest.raises(ConfigError, match="ACCEL=LABEL=VALUE"):
        options(node_selector=["H100=gpu"])
    ok = options(hf_model=["MyModel-7B=acme/my-model-7b"], node_selector=["H100=pool=h100"])
    assert ok.hf_models == {"MyModel-7B": "acme/my-model-7b"}
    assert ok.node_selectors == {"H100": ("pool", "h100")}
    out = subprocess.run(
        [*CLI, "export", str(tmp_path / "missing.yaml")], capture_output=True, text=True
    )
    assert out.returncode == 2 and "cannot read plan" in " ".join(out.stderr.split())


@pytest.mark.slow
def test_skyfleet_plan_export_end_to_end(tmp_path: Path) -> None:
    """The real planner on the demo workload, then --export: every file it writes loads."""
    out = tmp_path / "capacity"
    cmd = [*CLI, "plan", str(ROOT / "examples/workloads/demo-small.yaml"), "-q"]
    cmd += ["--out", str(tmp_path / "plan.yaml"), "--no-baselines", "--time-limit", "10"]
    cmd += ["--export", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    plan = load_plan_file(tmp_path / "plan.yaml")
    assert plan.active
    docs = sky_docs(out)
    for doc in docs.values():
        validate_service_yaml(doc)
    for pool in (out / "k8s").iterdir():
        assert validate(pool_objects(out, pool.name)) == []
    gw = yaml.safe_load((out / "gateway.yaml").read_text())
    assert sum(len(m["endpoints"]) for m in gw["models"]) == len(plan.active)
