"""Deployment files, parsed once: docker-compose.yml (interpolated with .env.example), the
Kubernetes manifests, Prometheus and Grafana config. Nothing here needs a container engine."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"

# The gateway's settings that name a file of a mounted secret (compose secrets, k8s Secrets).
GATEWAY_SECRET_FILES = (
    "SCORING_TLS__CERT_FILE",
    "SCORING_TLS__KEY_FILE",
    "SCORING_TLS__CA_FILE",
    "SCORING_AUTH__CALLERS_FILE",
    "SCORING_PRIVACY__SECRET_FILE",
)
# Names that look like a secret's but hold none: a switch, and paths to mounted secret files.
NOT_A_SECRET = re.compile(r"^SCORING_PRIVACY__GENERATE_SECRET$|_FILE$")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; "$$" is a literal "$".
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def require_module(name: str, requirement: str) -> None:
    """Skips locally, fails under CI=true, when an optional checker is not installed."""
    if importlib.util.find_spec(name) is not None:
        return
    message = f"{name} is not installed; add `{requirement}` to requirements.lock"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments and blank lines ignored)."""
    env: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not KEY=VALUE: {line!r}"
        env[key.strip()] = value.strip()
    return env


def interpolation_refs(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, argument) of every ${...} in `text`; bare $VAR is reported with op '$'."""
    refs = []
    for match in _INTERPOLATION.finditer(text):
        if match.group(0) == "$$":
            continue
        if match.group("bare"):
            refs.append((match.group("bare"), "$", ""))
        else:
            refs.append((match.group("name"), match.group("op") or "", match.group("arg") or ""))
    return refs


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style interpolation of every string in `value` (recursively)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op") or "", match.group("arg") or ""
        current = env.get(name)
        unset_or_empty = not current if op.startswith(":") else current is None
        if op.endswith("-") and unset_or_empty:
            return arg
        if op.endswith("?") and unset_or_empty:
            raise KeyError(f"required variable {name} is not set: {arg}")
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, list or mapping form, as a mapping of strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def is_job(service: dict[str, Any]) -> bool:
    """One-shot jobs are the services that are never restarted."""
    return service.get("restart") == "no"


def option(command: list[str], flag: str) -> str:
    """The value of `--flag=value` in a command list; fails when absent or repeated."""
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{flag}=")]
    assert len(values) == 1, f"{flag}= expected once in {command}"
    return values[0]


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="session")
def compose_raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def compose(compose_raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as `docker compose config` would see it after `cp .env.example .env`."""
    return interpolate(compose_raw, env_example)


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="session")
def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    assert docs, f"no manifests in {K8S_DIR}"
    return docs


def k8s_object(docs: list[tuple[Path, dict[str, Any]]], kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in deploy/k8s, found {len(found)}"
    return found[0]


def only_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container expected"
    return containers[0]
