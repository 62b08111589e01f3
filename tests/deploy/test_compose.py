"""docker-compose.yml: Compose-spec schema, pinned images, health checks, start order, volumes,
interpolation and secrets. Offline: no container engine is needed."""

from __future__ import annotations

import re
import subprocess
import sys
from graphlib import TopologicalSorter
from typing import Any

import pytest
import yaml

from scoring.core.targets import TARGETS

from .conftest import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    GATEWAY_SECRET_FILES,
    NOT_A_SECRET,
    ROOT,
    interpolation_refs,
    is_job,
    option,
    read_env_file,
    require_module,
    service_environment,
)

# name[:tag][@sha256:digest]; a pinned tag holds a digit (a version), never "latest".
PINNED_IMAGE = re.compile(
    r"^[a-z0-9./_-]+(:[A-Za-z0-9._-]*[0-9][A-Za-z0-9._-]*)(@sha256:[0-9a-f]{64})?$"
)
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
SECRETS_DIR = "/run/secrets/"
URL_WITH_PASSWORD = re.compile(r"://[^/:@\s]+:(?P<password>[^@\s]+)@")
JOB_ORDER = [
    "data-generate", "feast-apply", "feast-materialize", "train", "register",
    "triton", "triton-sync", "gateway",
]  # fmt: skip


def run_check_jsonschema(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_matches_compose_spec_schema() -> None:
    require_module("check_jsonschema", "check-jsonschema==0.39.0")
    result = run_check_jsonschema(str(COMPOSE_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_an_unknown_key(tmp_path: Any) -> None:
    """Guards the check above: the bundled schema really is strict about service keys."""
    require_module("check_jsonschema", "check-jsonschema==0.39.0")
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  a:\n    image: redis:7.4.2-alpine\n    helthcheck: {}\n")
    result = run_check_jsonschema(str(bad))
    assert result.returncode == 1
    assert "helthcheck" in result.stdout


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image (a build needs an image name with a version tag)"
        assert PINNED_IMAGE.match(image), f"{name}: image {image!r} is not pinned to a version"
        assert ":latest" not in image


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    long_running = [n for n, s in services.items() if not is_job(s)]
    assert {"redis", "postgres", "triton", "gateway", "console", "prometheus", "grafana"} <= set(
        long_running
    )
    for name in long_running:
        service = services[name]
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck.test form"
        assert service.get("restart") == "unless-stopped", f"{name}: restart policy"


def test_jobs_run_once_and_in_order(services: dict[str, dict[str, Any]]) -> None:
    jobs = {n for n, s in services.items() if is_job(s)}
    assert jobs == {
        "data-generate", "feast-apply", "feast-materialize", "train", "register", "triton-sync",
    }  # fmt: skip
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            expected = (
                "service_completed_successfully" if is_job(services[dep]) else "service_healthy"
            )
            assert spec.get("condition") == expected, f"{name} -> {dep}: condition"
    graph = {n: set((s.get("depends_on") or {}).keys()) for n, s in services.items()}
    list(TopologicalSorter(graph).static_order())  # raises CycleError on a cycle

    def ancestors(name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[name])
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(graph[dep])
        return seen

    assert {"data-generate"} <= ancestors("feast-apply")
    assert {"feast-apply"} <= ancestors("feast-materialize")
    assert {"feast-apply"} <= ancestors("train")
    assert {"train"} <= ancestors("register")
    assert {"register"} <= ancestors("triton")
    assert {"triton"} <= ancestors("triton-sync")
    assert {"triton-sync"} <= ancestors("gateway")
    assert {"triton", "feast-materialize", "redis"} <= ancestors("gateway")
    assert {"redis", "postgres"} <= ancestors("feast-apply")
    assert set(JOB_ORDER) - {"gateway"} <= ancestors("gateway")


def test_triton_serves_the_production_gpu_config(services: dict[str, dict[str, Any]]) -> None:
    triton = services["triton"]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    command = triton["command"]
    assert command[0] == "tritonserver"
    assert option(command, "--model-control-mode") == "explicit"
    assert option(command, "--strict-readiness") == "false"
    assert "--model-config-name" not in " ".join(command), "config.pbtxt must be served"
    loaded = {arg.split("=", 1)[1] for arg in command if arg.startswith("--load-model=")}
    assert loaded == set(TARGETS)

    repo_in_container = option(command, "--model-repository")
    mounts = [v for v in triton["volumes"] if v.split(":")[1] == repo_in_container]
    assert mounts == [f"./model_repository:{repo_in_container}:ro"]
    for name in loaded:
        config = (ROOT / "model_repository" / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in config
        assert 'platform: "pytorch_libtorch"' in config
        assert "KIND_GPU" in config
        assert f"/v2/models/{name}/ready" in " ".join(triton["healthcheck"]["test"])

    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind source {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_every_variable_is_documented_in_env_example(compose_raw: dict[str, Any]) -> None:
    env = read_env_file(ENV_EXAMPLE)
    text = COMPOSE_FILE.read_text()
    for name, op, arg in interpolation_refs(text):
        assert op != "$", f"bare ${name}: write ${{{name}}} (or $$ for a literal $)"
        assert name in env, f"${{{name}}} is used in docker-compose.yml but not in .env.example"
        if op.endswith("?"):
            assert env[name], f"{name} is required: .env.example must give a placeholder"
            assert arg, f"${{{name}:?}} needs a message that says what to set"
    used = {name for name, _, _ in interpolation_refs(text)}
    assert set(env) <= used, f".env.example documents unused variables: {set(env) - used}"


def test_no_secret_is_written_in_the_compose_file(compose_raw: dict[str, Any]) -> None:
    for name, service in compose_raw["services"].items():
        for key, value in service_environment(service).items():
            if SECRET_KEY.search(key) and key.endswith("_FILE"):
                assert value.startswith(SECRETS_DIR), f"{name}.{key}: not a mounted secret"
            elif SECRET_KEY.search(key) and not NOT_A_SECRET.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), (
                    f"{name}.{key} must come from a required variable: ${{{key}:?...}}"
                )
            url = URL_WITH_PASSWORD.search(value)
            if url:
                assert url.group("password").startswith("${"), f"{name}.{key}: literal password"


def test_env_example_is_not_a_real_env_file() -> None:
    env = read_env_file(ENV_EXAMPLE)
    for key, value in env.items():
        if SECRET_KEY.search(key):
            assert value in ("", "change-me"), f".env.example {key}: placeholder only"


def test_published_ports_bind_to_localhost_only(services: dict[str, dict[str, Any]]) -> None:
    for name in ("gateway", "console", "prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is public"
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"gateway", "console", "prometheus", "grafana"}, (
        "the rest: compose network only"
    )


def test_gateway_serves_tls_and_requires_auth_with_mounted_secrets(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    gateway = services["gateway"]
    env = service_environment(gateway)
    assert env["SCORING_TLS__ENABLED"] == "true"
    assert env["SCORING_AUTH__REQUIRED"] == "true"
    assert env["SCORING_PRIVACY__GENERATE_SECRET"] == "false"
    mounted = {s["target"]: s["source"] for s in gateway["secrets"]}
    for key in GATEWAY_SECRET_FILES:
        assert env[key] in mounted, f"gateway: {key}={env[key]} is not a mounted secret"
    declared = compose["secrets"]
    for source in mounted.values():
        assert declared[source]["file"].startswith("./secrets/"), source
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "/secrets/" in gitignore, "the secrets folder must never be committed"
    # The health check (grpc health over TLS, from the same settings) checks this name.
    assert env["SCORING_TLS__SERVER_NAME"]
    assert gateway["healthcheck"]["test"] == ["CMD", "scoring-healthcheck"]


def test_registry_changes_present_an_admin_token(services: dict[str, dict[str, Any]]) -> None:
    register = services["register"]
    env = service_environment(register)
    assert env["SCORING_AUTH__REQUIRED"] == "true"
    assert env["SCORING_AUTH__ADMIN_TOKEN"] == "change-me"  # .env.example's placeholder
    assert {s["target"] for s in register["secrets"]} == {env["SCORING_AUTH__CALLERS_FILE"]}
    # Only the register job holds the admin token, not the gateway or the other jobs.
    holders = {
        n for n, s in services.items() if "SCORING_AUTH__ADMIN_TOKEN" in service_environment(s)
    }
    assert holders == {"register"}


def test_compose_file_parses_with_anchors_resolved() -> None:
    """Merge keys (<<) must not leave anchors' x- blocks as services."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert all(not name.startswith("x-") for name in data["services"])
    assert data["name"] == "scoring"


@pytest.mark.parametrize(
    "job",
    ["data-generate", "feast-apply", "feast-materialize", "train", "register", "triton-sync"],
)
def test_jobs_use_the_scoring_cli(services: dict[str, dict[str, Any]], job: str) -> None:
    service = services[job]
    command = " ".join(service.get("entrypoint") or []) + " " + " ".join(service["command"])
    assert "scoring " in command
    assert service["volumes"][0].startswith("feature-data:/app/features/data")


def test_console_is_a_service_of_its_own_on_the_gateways_stores(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """`scoring console` from the runtime image, on the registry, Feast repo and Triton the
    gateway uses; admins log in against the same callers file; no admin token is held."""
    import typer

    from scoring.cli import app

    console, gateway = services["console"], services["gateway"]
    assert console["command"] == ["scoring", "console"]
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert "console" in commands, "`scoring console` is no command of the CLI"
    assert console["image"] == gateway["image"]
    assert console["build"] == gateway["build"]
    assert console["healthcheck"]["test"] == ["CMD", "scoring-healthcheck", "console"]
    assert console["restart"] == "unless-stopped"
    env, gateway_env = service_environment(console), service_environment(gateway)
    shared = (
        "SCORING_REGISTRY__URL", "SCORING_FEAST__REPO_PATH", "SCORING_FEAST__FS_YAML",
        "FEAST_REGISTRY_PATH", "FEAST_REDIS_CONNECTION", "SCORING_TRITON__URL",
        "SCORING_TRITON__MODEL_REPOSITORY", "SCORING_AUTH__REQUIRED", "SCORING_AUTH__CALLERS_FILE",
    )  # fmt: skip
    for key in shared:
        assert env[key] == gateway_env[key], f"console {key} differs from the gateway's"
    assert env["SCORING_AUTH__REQUIRED"] == "true"
    assert "SCORING_AUTH__ADMIN_TOKEN" not in env, "admins log in; the console holds no token"
    secrets = {s["target"]: s["source"] for s in console["secrets"]}
    assert secrets == {env["SCORING_AUTH__CALLERS_FILE"]: "callers"}
    # Reads the stores, never writes the shared volumes.
    for volume in console["volumes"]:
        assert volume.endswith(":ro"), f"console: {volume} must be read only"
    mounts = {v.split(":")[1] for v in console["volumes"]}
    assert {"/app/features/data", env["SCORING_TRITON__MODEL_REPOSITORY"]} <= mounts
    # Starts once the stores exist, not after the gateway: it shows a gateway that fails.
    depends = set(console["depends_on"])
    assert {"feast-apply", "postgres", "redis"} <= depends
    assert "gateway" not in depends
