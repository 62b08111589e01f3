"""SCORING_* variables and ports in docker-compose.yml, deploy/k8s and Prometheus agree with
scoring.core.settings.Settings: every variable is a real settings field, every value parses,
and every port points where the settings say the process listens."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from scoring.core.settings import GatewaySettings, Settings

from .conftest import (
    PROMETHEUS_FILE,
    k8s_object,
    only_container,
    option,
    service_environment,
)

PREFIX = "SCORING_"


def settings_field_exists(variable: str) -> bool:
    """Whether SCORING_A__B names a leaf field path a.b of Settings (case-insensitive)."""
    parts = variable[len(PREFIX) :].lower().split("__")
    model: type[BaseModel] = Settings
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if index < len(parts) - 1:
            if not nested:
                return False
            model = annotation  # type: ignore[assignment]
        elif nested:
            return False  # a whole section as JSON: set its fields one by one instead
    return True


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the process with `env` would build them (other SCORING_* cleared)."""
    import os

    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(PREFIX):
            monkeypatch.setenv(key, value)
    return Settings()


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<from secret>") for e in container.get("env", [])}


def published_container_port(port: Any) -> int:
    """Container port of a short-syntax ("[ip:]host:container[/proto]") or long-syntax entry."""
    if isinstance(port, dict):
        return int(port["target"])
    return int(str(port).split("/")[0].rsplit(":", 1)[-1])


def test_the_field_check_itself() -> None:
    assert settings_field_exists("SCORING_GATEWAY__PORT")
    assert settings_field_exists("SCORING_LOG_JSON")
    assert not settings_field_exists("SCORING_GATEWAY__NO_SUCH_FIELD")
    assert not settings_field_exists("SCORING_GATEWAY")  # a section, not a field
    assert not settings_field_exists("SCORING_LOG_JSON__X")


def test_every_scoring_variable_in_compose_is_a_settings_field(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = 0
    for name, service in services.items():
        env = service_environment(service)
        for key in env:
            if key.upper().startswith(PREFIX):
                seen += 1
                assert settings_field_exists(key), f"{name}: {key} is not a Settings field"
        settings_from(env, monkeypatch)  # every value must parse
    assert seen


def test_every_scoring_variable_in_k8s_is_a_settings_field(
    k8s_docs: list[tuple[Path, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for path, doc in k8s_docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            env = k8s_env(container)
            for key in env:
                if key.upper().startswith(PREFIX):
                    assert settings_field_exists(key), f"{path.name}: {key} is not a field"
            settings_from(env, monkeypatch)


def test_gateway_listens_where_compose_publishes(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = services["gateway"]
    settings = settings_from(service_environment(gateway), monkeypatch)
    assert settings.gateway.host == "0.0.0.0", "127.0.0.1 is unreachable from outside"
    # The env value when compose sets one, else the Settings default.
    targets = [published_container_port(p) for p in gateway["ports"]]
    assert targets == [settings.gateway.port]


def test_gateway_reaches_triton_on_its_grpc_port(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(service_environment(services["gateway"]), monkeypatch)
    host, port = settings.triton.url.rsplit(":", 1)
    assert host == "triton" and host in services
    command = services["triton"]["command"]
    assert int(port) == int(option(command, "--grpc-port"))
    assert settings.triton.http_port == int(option(command, "--http-port"))
    assert settings.triton.metrics_port == int(option(command, "--metrics-port"))
    assert f":{settings.triton.http_port}/" in " ".join(services["triton"]["healthcheck"]["test"])
    assert settings.triton.config_name == "", "compose serves config.pbtxt (production GPU)"


def test_prometheus_scrapes_the_ports_the_processes_serve(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    triton_host, triton_port = targets["triton"][0].split(":")
    assert triton_host == "triton"
    assert int(triton_port) == Settings().triton.metrics_port
    assert int(triton_port) == int(option(services["triton"]["command"], "--metrics-port"))

    gateway_host, gateway_port = targets["gateway"][0].split(":")
    assert gateway_host == "gateway"
    assert gateway_port in [str(p) for p in services["gateway"]["expose"]]
    # The metrics port setting is planned; once it exists, its default must be the scraped port.
    if "metrics_port" in GatewaySettings.model_fields:
        assert int(gateway_port) == GatewaySettings().metrics_port


def test_k8s_gateway_and_triton_match_compose(
    services: dict[str, dict[str, Any]], k8s_docs: list[tuple[Path, dict[str, Any]]]
) -> None:
    compose_gateway_env = service_environment(services["gateway"])
    gateway = only_container(k8s_object(k8s_docs, "Deployment", "gateway"))
    env = k8s_env(gateway)
    # k8s only: a pod advertises its IP in its heartbeat (compose lists the console's metrics
    # URLs instead: the service name resolves there).
    advertise = next(e for e in gateway["env"] if e["name"] == "SCORING_GATEWAY__ADVERTISE_HOST")
    assert advertise["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    k8s_only = {"SCORING_GATEWAY__ADVERTISE_HOST"}
    assert set(env) - k8s_only == set(compose_gateway_env) - {"SCORING_TRITON__MODEL_REPOSITORY"}
    for key in ("SCORING_GATEWAY__HOST", "SCORING_GATEWAY__PORT", "SCORING_TRITON__URL"):
        assert env[key] == compose_gateway_env[key], key
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports["grpc"] == int(env["SCORING_GATEWAY__PORT"])
    assert str(ports["metrics"]) in [str(p) for p in services["gateway"]["expose"]]
    # The same health check, and the same access settings (TLS, auth, secret files' paths).
    assert (
        gateway["readinessProbe"]["exec"]["command"]
        == services["gateway"]["healthcheck"]["test"][1:]
    )
    for key in compose_gateway_env:
        if key.startswith(("SCORING_TLS__", "SCORING_AUTH__", "SCORING_PRIVACY__")):
            assert env[key] == compose_gateway_env[key], key

    triton = only_container(k8s_object(k8s_docs, "Deployment", "triton"))
    assert triton["image"] == services["triton"]["image"]
    assert triton["command"] == services["triton"]["command"]
    triton_ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    command = triton["command"]
    assert triton_ports == {
        "http": int(option(command, "--http-port")),
        "grpc": int(option(command, "--grpc-port")),
        "metrics": int(option(command, "--metrics-port")),
    }
    # SCORING_TRITON__URL names the triton Service and its grpc port.
    service = k8s_object(k8s_docs, "Service", "triton")
    host, port = env["SCORING_TRITON__URL"].rsplit(":", 1)
    assert host == service["metadata"]["name"]
    by_port = {p["port"]: p for p in service["spec"]["ports"]}
    assert by_port[int(port)]["targetPort"] == "grpc"


@pytest.mark.postgres
def test_model_registry_runs_on_postgres_with_the_url_compose_passes(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's and jobs' SCORING_REGISTRY__URL (driver, port, database as compose sets it,
    host and credentials swapped for this machine's server) migrates and serves a registry on
    the real PostgreSQL, in the database Feast's SQL registry uses, without a clashing table."""
    from feast.infra.registry import sql as feast_sql
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from scoring.registry import Registry, Stage, make_engine

    from ..registry import postgres_database

    urls = {
        name: settings_from(service_environment(s), monkeypatch).registry.url
        for name, s in services.items()
        if "SCORING_REGISTRY__URL" in service_environment(s)
    }
    assert {"gateway", "train", "register", "triton-sync"} <= set(urls)
    assert len(set(urls.values())) == 1, "every service must use the same registry"
    compose_url = make_url(next(iter(urls.values())))
    assert compose_url.drivername == "postgresql+psycopg" and compose_url.host == "postgres"
    feast_url = make_url(service_environment(services["gateway"])["FEAST_REGISTRY_PATH"])
    assert compose_url.database == feast_url.database, "one database for both registries"
    with postgres_database() as local:
        url = compose_url.set(
            host="127.0.0.1", username="postgres", password=None, database=make_url(local).database
        ).render_as_string(hide_password=False)
        registry = Registry(url)
        registry.register(
            "item_ranker",
            1,
            artifact_path="model_repository/item_ranker/1/model.pt",
            checksum="0" * 64,
            feature_service="item_ranker_v1",
            schema_hash="s",
            train_start=None,
            train_end=None,
            metrics={"auc": 0.7},
            manifest={},
            actor="compose-test",
        )
        registry.set_stage("item_ranker", 1, Stage.PRODUCTION, actor="compose-test")
        routing = registry.routing().targets["item_ranker"]
        assert routing.production is not None and routing.production.version == 1
        registry.close()
        engine = make_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert {"model_versions", "stage_events", "serving_instances"} <= tables
        assert not tables & set(feast_sql.metadata.tables) - {"alembic_version"}


def test_console_listens_where_compose_publishes(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    console = services["console"]
    settings = settings_from(service_environment(console), monkeypatch)
    assert settings.console.host == "0.0.0.0", "127.0.0.1 is unreachable from outside"
    assert [published_container_port(p) for p in console["ports"]] == [settings.console.port]


def test_console_scrapes_the_gateways_metrics_endpoint(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCORING_CONSOLE__METRICS_URLS names the gateway's Prometheus endpoint: its service (or a
    replica's container) on the port the gateway's settings serve and compose exposes."""
    console = settings_from(service_environment(services["console"]), monkeypatch).console
    gateway = settings_from(service_environment(services["gateway"]), monkeypatch).gateway
    assert console.metrics_urls, "the Serving page needs the gateways' metrics"
    for url in console.metrics_urls:
        parts = urlsplit(url)
        assert parts.scheme == "http" and parts.path == "/metrics", url
        assert parts.hostname == "gateway" or str(parts.hostname).startswith("scoring-gateway-")
        assert parts.port == gateway.metrics_port, url
        assert str(parts.port) in [str(p) for p in services["gateway"]["expose"]], url


def test_console_reads_what_the_gateway_reads(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    console = settings_from(service_environment(services["console"]), monkeypatch)
    gateway = settings_from(service_environment(services["gateway"]), monkeypatch)
    assert console.registry.url == gateway.registry.url
    assert console.feast == gateway.feast
    assert console.triton == gateway.triton
    assert console.auth.required and console.auth.callers_file == gateway.auth.callers_file


def test_k8s_console_matches_compose(
    services: dict[str, dict[str, Any]], k8s_docs: list[tuple[Path, dict[str, Any]]]
) -> None:
    compose_env = service_environment(services["console"])
    deployment = k8s_object(k8s_docs, "Deployment", "console")
    container = only_container(deployment)
    env = k8s_env(container)
    # Gateway pods come and go with the HPA: the console finds them by their heartbeats.
    assert set(env) == set(compose_env) - {"SCORING_CONSOLE__METRICS_URLS"}
    for key in (
        "SCORING_CONSOLE__HOST", "SCORING_CONSOLE__PORT", "SCORING_TRITON__URL",
        "SCORING_TRITON__MODEL_REPOSITORY", "SCORING_FEAST__REPO_PATH", "SCORING_FEAST__FS_YAML",
        "SCORING_AUTH__REQUIRED", "SCORING_AUTH__CALLERS_FILE",
    ):  # fmt: skip
        assert env[key] == compose_env[key], key
    # The same registry Secret as the gateway's.
    gateway = only_container(k8s_object(k8s_docs, "Deployment", "gateway"))
    gateway_refs = {e["name"]: e["valueFrom"] for e in gateway["env"] if "valueFrom" in e}
    console_refs = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    assert set(console_refs) == {"SCORING_REGISTRY__URL", "FEAST_REGISTRY_PATH"}
    for name, ref in console_refs.items():
        assert ref == gateway_refs[name], name
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(env["SCORING_CONSOLE__PORT"])}
    service = k8s_object(k8s_docs, "Service", "console")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (published_container_port(p), "http") for p in services["console"]["ports"]
    ]
