"""deploy/k8s: each overlay renders with `kubectl kustomize`, validates offline against the
Kubernetes schemas, and its objects agree with each other and with the gateway config
(ports, probes, config file, secrets, drain time, datastore URLs)."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from skyfleet.config import FleetConfig, parse_config

from .k8s import (
    K8S,
    all_of,
    needs_kubectl,
    one,
    render,
    resolve_port,
    selects,
    validate,
)

pytestmark = needs_kubectl
OVERLAYS = ("single", "replicated", "external")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def gateway(objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = one(objs, "Deployment", "skyfleet-gateway")
    (container,) = [
        c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"
    ]
    return dep, container


def secret_data(objs: list[dict[str, Any]], name: str) -> dict[str, str]:
    s = one(objs, "Secret", name)
    data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
    return data | dict(s.get("stringData") or {})


def container_env(objs: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    """The environment the container gets; every secretKeyRef/secretRef must resolve."""
    env: dict[str, str] = {}
    for ref in c.get("envFrom", []):
        env |= secret_data(objs, ref["secretRef"]["name"])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            data = secret_data(objs, ref["name"])
            assert ref["key"] in data, f"Secret {ref['name']} has no key {ref['key']}"
            env[e["name"]] = data[ref["key"]]
    return env


def fleet_config(
    objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> tuple[set[str], FleetConfig]:
    """The fleet.yaml the gateway reads, parsed by skyfleet with the pod's environment."""
    import yaml

    dep, c = gateway(objs)
    args = c.get("args", [])
    path = args[args.index("--config") + 1]
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    key = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    cm = one(objs, "ConfigMap", vol["configMap"]["name"])
    assert key in cm["data"], f"ConfigMap {cm['metadata']['name']} has no key {key}"
    doc = yaml.safe_load(cm["data"][key])
    env = container_env(objs, c)
    refs = env_refs(doc)
    for var, default in refs:
        assert default or var in env, f"fleet.yaml uses ${{{var}}} but no env/Secret sets it"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return {v for v, _ in refs}, parse_config(doc, f"ConfigMap {cm['metadata']['name']}/{key}")


def env_refs(node: Any) -> list[tuple[str, str]]:
    """Every `${VAR}` / `${VAR:-default}` in the config's values (what skyfleet substitutes)."""
    if isinstance(node, dict):
        return [r for v in node.values() for r in env_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in env_refs(v)]
    return _VAR.findall(node) if isinstance(node, str) else []


def test_overlay_validates_against_kubernetes_schemas(rendered: Any) -> None:
    _, objs = rendered
    assert validate(objs) == ["ServiceMonitor"]  # a CRD: checked structurally below


def test_ports_and_probes_agree_with_the_config(rendered: Any, monkeypatch: Any) -> None:
    _, objs = rendered
    dep, c = gateway(objs)
    _, cfg = fleet_config(objs, monkeypatch)
    port = cfg.server.port
    assert cfg.server.host == "0.0.0.0", "the gateway must listen beyond the pod's loopback"
    assert port in [p["containerPort"] for p in c["ports"]]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        http = c[probe]["httpGet"]
        assert http["path"] == "/health" and resolve_port(c, http["port"]) == port, probe
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selects(dep["spec"]["selector"]["matchLabels"], pod_labels)
    svc = one(objs, "Service", "skyfleet-gateway")
    assert selects(svc["spec"]["selector"], pod_labels)
    assert [resolve_port(c, p["targetPort"]) for p in svc["spec"]["ports"]] == [port]
    sm = one(objs, "ServiceMonitor")
    assert selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert sm["metadata"]["namespace"] == svc["metadata"]["namespace"]
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [("http", "/metrics")]
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= svc_ports
    pdb = one(objs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)


def test_sigterm_drain_fits_the_grace_period(rendered: Any, monkeypatch: Any) -> None:
    """preStop sleep (endpoint removal) + server.drain_timeout_s + time to flush the ledger
    must fit in terminationGracePeriodSeconds, or the kubelet SIGKILLs mid-drain."""
    _, objs = rendered
    dep, c = gateway(objs)
    _, cfg = fleet_config(objs, monkeypatch)
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[0] == "sleep"
    pre_stop = float(cmd[1])
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop >= 2, "give the endpoint time to leave the Service before SIGTERM"
    assert grace >= pre_stop + cfg.server.drain_timeout_s + 5 + cfg.ledger.flush_interval_s


def test_every_secret_the_config_references_exists(rendered: Any, monkeypatch: Any) -> None:
    _, objs = rendered
    _, c = gateway(objs)
    names, cfg = fleet_config(objs, monkeypatch)  # asserts each ${VAR} has a source
    assert "OPENAI_API_KEY" in names
    keyed = [e for e in cfg.endpoints if e.api_key is not None]
    assert keyed and all(e.api_key.get_secret_value() for e in keyed)  # type: ignore[union-attr]
    from_secrets = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for ref in c.get("envFrom", []):
        assert "secretRef" in ref, "config values come from Secrets, not ConfigMaps"
        from_secrets |= set(secret_data(objs, ref["secretRef"]["name"]))
    assert names <= from_secrets, f"not from a Secret: {sorted(names - from_secrets)}"


def test_single_overlay_keeps_sqlite_on_one_volume(monkeypatch: Any) -> None:
    objs = render(K8S / "overlays" / "single")
    dep, c = gateway(objs)
    _, cfg = fleet_config(objs, monkeypatch)
    assert cfg.ledger.url is None and cfg.server.redis_url is None
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert not all_of(objs, "HorizontalPodAutoscaler") and not all_of(objs, "StatefulSet")
    ledger_dir = cfg.ledger.path.rsplit("/", 1)[0]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == ledger_dir)
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    one(objs, "PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"])


@pytest.mark.parametrize("overlay", ["replicated", "external"])
def test_replicated_overlays_scale_on_shared_state(overlay: str, monkeypatch: Any) -> None:
    objs = render(K8S / "overlays" / overlay)
    dep, _ = gateway(objs)
    _, cfg = fleet_config(objs, monkeypatch)
    hpa = one(objs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2 and dep["spec"]["replicas"] >= 2
    assert cfg.server.redis_url and cfg.ledger.url
    assert urlsplit(cfg.ledger.url).scheme == "postgresql"
    if overlay == "external":
        assert not all_of(objs, "StatefulSet")
        return
    # in-cluster: each URL's host:port is a Service that selects its StatefulSet's pods
    for url, sts_name, default_port in (
        (cfg.server.redis_url, "skyfleet-redis", 6379),
        (cfg.ledger.url, "skyfleet-postgres", 5432),
    ):
        u = urlsplit(url)
        svc = one(objs, "Service", u.hostname)
        sts = one(objs, "StatefulSet", sts_name)
        (sc,) = sts["spec"]["template"]["spec"]["containers"]
        assert selects(svc["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
        assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
        (sp,) = [p for p in svc["spec"]["ports"] if p["port"] == (u.port or default_port)]
        assert resolve_port(sc, sp["targetPort"]) == (u.port or default_port)
    pg = one(objs, "StatefulSet", "skyfleet-postgres")
    pg_env = container_env(objs, pg["spec"]["template"]["spec"]["containers"][0])
    u = urlsplit(cfg.ledger.url)
    assert (u.username, u.password, u.path.lstrip("/")) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        pg_env["POSTGRES_DB"],
    ), "the gateway's ledger.url must log in to the in-cluster PostgreSQL"
