"""Deployment artefacts, validated without a container engine: parse them and check wiring."""

from __future__ import annotations

import configparser
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncsvc.core.settings import Settings
from syncsvc.observe.metrics import REGISTRY
from syncsvc.providers.registry import provider_profile
from syncsvc.web.server import parse_address

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "kubernetes"
METRIC = re.compile(r"\bsyncsvc_[a-z0-9_]+\b")


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _one(name: str, kind: str) -> dict[str, Any]:
    found = [d for d in _docs(name) if d["kind"] == kind]
    assert len(found) == 1, f"{name}: expected one {kind}"
    return found[0]


def _known_metrics() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
            names.add(family.name + suffix)
    return names


def _container() -> dict[str, Any]:
    deployment = _one("deployment.yaml", "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _settings(text: str) -> Settings:
    return Settings(**tomllib.loads(text))


def test_deployment_probes_and_replicas() -> None:
    deployment = _one("deployment.yaml", "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    config = _one("configmap.yaml", "ConfigMap")["data"]["syncsvc.toml"]
    settings = _settings(config)
    assert settings.metrics_address is not None
    assert parse_address(settings.metrics_address)[1] == ports["http"]
    # Graceful shutdown fits in the grace period.
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.worker.shutdown_timeout_seconds
    security = spec["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_secrets_and_config_are_referenced_consistently() -> None:
    secret = _one("secret.yaml", "Secret")
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    container = _container()
    env = {e["name"]: e for e in container["env"]}
    refs = [e["valueFrom"]["secretKeyRef"] for e in env.values() if "valueFrom" in e]
    assert refs, "API keys must come from the Secret"
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in keys
    config_map = _one("configmap.yaml", "ConfigMap")
    volumes = _one("deployment.yaml", "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": config_map["metadata"]["name"]}} in volumes
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert env["SYNCSVC_CONFIG"]["value"] == f"{mount['mountPath']}/syncsvc.toml"
    settings = _settings(config_map["data"]["syncsvc.toml"])
    # Every variable the config names for a secret is provided from the Secret, not inline.
    secret_vars = {settings.admin_token_env} | {
        p.api_key_env for p in settings.providers.values() if p.api_key_env
    }
    for name in secret_vars:
        assert "valueFrom" in env[name], f"{name} must come from the Secret"
    assert "valueFrom" in env["SYNCSVC_DATABASE_URL"]
    for name in settings.providers:
        provider_profile(name, settings)  # the profile exists
    # No secret value is written into the ConfigMap.
    assert "CHANGE-ME" not in json.dumps(config_map)


def test_pdb_and_service_select_the_deployment() -> None:
    labels = _one("deployment.yaml", "Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb = _one("pdb.yaml", "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    service = _one("service.yaml", "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {
        "kustomization.yaml"
    }


def test_compose_runs_postgres_simulator_and_daemon() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["simulator"]["command"][0] == "simulate-api"
    daemon = services["syncsvc"]
    assert daemon["depends_on"]["db"]["condition"] == "service_healthy"
    assert daemon["environment"]["SYNCSVC_DATABASE_URL"].startswith("postgresql://")
    assert all(p.startswith("127.0.0.1:") for p in daemon["ports"])  # local trial only
    config = compose["configs"]["syncsvc_toml"]["content"]
    settings = _settings(config)
    base_url = settings.providers["dashscope"].base_url
    assert base_url is not None and base_url.startswith("http://simulator:8765/")
    assert settings.providers["dashscope"].api_key_env in daemon["environment"]
    assert _settings((DEPLOY / "syncsvc.toml").read_text()).admin_enabled


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(stages) >= 2
    assert "COPY --from=build" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["syncsvc"\]', text, re.MULTILINE)


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "systemd" / "syncsvc.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"].endswith("syncsvc run --no-migrate")
    assert service["User"] != "root"
    assert service["KillSignal"] == "SIGTERM"
    assert "EnvironmentFile" in service  # secrets stay out of the unit file
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_grafana_dashboard_uses_real_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "syncsvc-dashboard.json").read_text())
    known = _known_metrics()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used and used <= known, used - known
    for needed in ("syncsvc_queue_entries", "syncsvc_commit_to_vector_lag_seconds_bucket"):
        assert needed in used


def test_alert_rules_use_real_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    known = _known_metrics()
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert {"SyncsvcNotReady", "SyncsvcSearchStale", "SyncsvcTargetPaused"} <= {
        a["alert"] for a in alerts
    }
    for alert in alerts:
        used = set(METRIC.findall(alert["expr"]))
        assert used <= known, (alert["alert"], used - known)
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        assert alert["annotations"]["summary"]


@pytest.mark.parametrize("name", ["prometheus/alerts.yml", "docker-compose.yml"])
def test_yaml_parses(name: str) -> None:
    assert yaml.safe_load((DEPLOY / name).read_text())
