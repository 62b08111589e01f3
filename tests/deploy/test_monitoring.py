"""Prometheus and Grafana provisioning: the dashboard shows the gateway's scoring_* metrics and
Triton's, through the provisioned datasource, from the paths docker-compose.yml mounts."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from .conftest import GRAFANA_DIR, PROMETHEUS_FILE, ROOT

DASHBOARD = GRAFANA_DIR / "dashboards" / "scoring.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "scoring.yml"

# Gateway metric -> the label the dashboard must break it down by (None: a plain total).
GATEWAY_METRICS = {
    "scoring_stage_latency_seconds_bucket": "stage",
    "scoring_requests_total": "code",
    "scoring_feature_cache_hits_total": None,
    "scoring_feature_cache_misses_total": None,
    "scoring_degraded_total": None,
    "scoring_arm_requests_total": "arm",
}
TRITON_METRICS = ["nv_inference_request_success", "nv_inference_queue_duration_us"]


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def datasource_uid() -> str:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


@pytest.mark.parametrize("metric", sorted(GATEWAY_METRICS))
def test_dashboard_shows_gateway_metric(metric: str) -> None:
    using = [e for e in expressions() if metric in e]
    assert using, f"no panel queries {metric}"
    label = GATEWAY_METRICS[metric]
    if label:
        assert any(re.search(rf"by \([^)]*\b{label}\b", e) for e in using), f"{metric} by {label}"


def test_stage_latency_is_shown_as_quantiles() -> None:
    latency = [e for e in expressions() if "scoring_stage_latency_seconds_bucket" in e]
    assert all(e.startswith("histogram_quantile(") and "le" in e for e in latency)


def test_dashboard_shows_triton_metrics() -> None:
    text = " ".join(expressions())
    for metric in TRITON_METRICS:
        assert metric in text


def test_every_panel_uses_the_provisioned_datasource() -> None:
    uid = datasource_uid()
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", {"uid": uid})["uid"] == uid


def test_grafana_mounts_match_the_provisioning(services: dict[str, dict[str, Any]]) -> None:
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    dashboards_in_container = provider["options"]["path"]
    assert mounts["./deploy/grafana/dashboards"] == dashboards_in_container
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in services["prometheus"]["ports"])


def test_prometheus_config_is_the_mounted_one(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
    config_path = mounts[f"./{PROMETHEUS_FILE.relative_to(ROOT)}"]
    assert f"--config.file={config_path}" in prometheus["command"]
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"gateway", "triton"} <= jobs
