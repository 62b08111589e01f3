"""docker/Dockerfile and its helpers: pinned multi-stage build, non-root user, dependencies as
the Makefile installs them, a gateway and console image without torch or the test tools, and
the container health checks (gateway and console)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from scoring.core.settings import (
    ConsoleSettings,
    FeastSettings,
    GatewaySettings,
    RegistrySettings,
    Settings,
)
from scoring.devtools.local_stack import free_port

from .conftest import DOCKERFILE, ROOT

HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
PACKAGE = ROOT / "services" / "scoring"


def stages() -> dict[str, list[str]]:
    """Dockerfile instructions per stage name (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result: dict[str, list[str]] = {}
    current = "<global>"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(2) or match.group(1)
            result[current] = [line]
        else:
            result.setdefault(current, []).append(line)
    return result


def arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S*)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"ARG {name}=... not found"
    return match.group(1)


def locked(package: str) -> str:
    text = (ROOT / "requirements.lock").read_text()
    match = re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
    assert match, f"{package} is not in requirements.lock"
    return match.group(1)


def test_base_image_is_a_pinned_slim_python_311() -> None:
    base = arg_default("PYTHON_IMAGE")
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-bookworm)?", base), base
    for stage, lines in stages().items():
        image = lines[0].split()[1]
        assert ":latest" not in image, stage


def test_final_stages_run_as_the_non_root_user() -> None:
    all_stages = stages()
    assert {"runtime", "trainer"} <= set(all_stages), "targets used by docker-compose.yml"
    for target in ("runtime", "trainer"):
        users = [line.split()[1] for line in all_stages[target] if line.startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), target
    assert "useradd --system --uid 10001" in " ".join(all_stages["app"])


def test_dependencies_follow_the_lock_like_the_makefile() -> None:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    assert "pip install -r /tmp/requirements.runtime.txt" in text
    assert "pip install --no-deps /wheels/*.whl" in text
    # The runtime filter drops torch and dev tools but keeps every runtime dependency.
    match = re.search(r"grep -viE '([^']+)'\s+/tmp/requirements.lock", text)
    assert match, "the runtime requirements are the lock minus a grep -viE filter"
    dropped = re.compile(match.group(1), re.IGNORECASE)
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    kept = {
        line.split("==")[0].lower() for line in lock if "==" in line and not dropped.match(line)
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[\[=<>~! ]", requirement)[0].lower()
        if name == "torch":
            assert name not in kept
        else:
            assert name.replace("-", "_") in {k.replace("-", "_") for k in kept}, name
    # The trainer's torch is the lock's exact pin, as is the Makefile's.
    assert arg_default("TORCH_VERSION") == locked("torch").split("+")[0]
    makefile_pins = re.findall(
        r"install\s+(?:-\S+\s+)*torch==(\S+)", (ROOT / "Makefile").read_text()
    )
    assert set(makefile_pins) <= {arg_default("TORCH_VERSION")}
    runtime = " ".join(stages()["venv-runtime"])
    assert "torch==" not in runtime
    # The console tests' tools stay out of the runtime image; what the console serves with
    # (FastAPI, uvicorn, Jinja2, form parsing) is a project dependency, kept above.
    for tool in ("playwright", "greenlet", "httpx", "httpcore"):
        assert tool not in kept, f"{tool} (a test tool) would go into the runtime image"


def test_runtime_image_exposes_the_gateway_and_console_ports() -> None:
    exposed = {
        int(port)
        for line in stages()["runtime"]
        if line.startswith("EXPOSE ")
        for port in line.split()[1:]
    }
    gateway = GatewaySettings()
    assert {gateway.port, gateway.metrics_port, ConsoleSettings().port} <= exposed


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: exclude everything, then re-include"
    copied = re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    for source in copied:
        assert f"!{source.rstrip('/')}" in [x.rstrip("/") for x in lines], source
    assert "features/data/" in lines, "generated data must not enter the image"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports in functions included)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def module_file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    candidate = PACKAGE.joinpath(*parts)
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if path.is_file():
            return path
    return None


def test_gateway_code_never_imports_torch() -> None:
    """Static closure over scoring.* imports from the gateway entrypoint."""
    todo = ["scoring.gateway.__main__", "scoring.gateway.server"]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module)
        if path is None:
            continue
        imports = imported_modules(path)
        assert not {m for m in imports if m.split(".")[0] == "torch"}, f"{module} imports torch"
        todo.extend(m for m in imports if m.startswith("scoring."))
    assert "scoring.gateway.triton_client" in seen


def test_gateway_imports_and_builds_settings_without_torch() -> None:
    """The runtime image has no torch: importing the gateway and the console must still work
    (Feast imports torch only when it is installed); the Dockerfile checks the same."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import scoring.gateway.__main__, scoring.gateway.server, scoring.cli\n"
        "import scoring.console.app\n"
        "from scoring.core.settings import Settings; Settings()\n"
        "import feast.torch_wrapper as w; assert not w.TORCH_AVAILABLE\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None)


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCORING_GATEWAY__PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], capture_output=True, text=True, timeout=60, env=env
    )


def test_healthcheck_passes_only_when_serving(
    health_server: tuple[int, health.HealthServicer],
) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert run_healthcheck(port).returncode == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = run_healthcheck(port)
    assert result.returncode == 1
    assert "NOT_SERVING" in result.stderr


def test_healthcheck_fails_when_nothing_listens(
    health_server: tuple[int, health.HealthServicer],
) -> None:
    port, _ = health_server
    result = run_healthcheck(port + 1 if port < 65535 else port - 1)
    assert result.returncode == 1
    assert "unreachable" in result.stderr


def run_console_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCORING_CONSOLE__PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "console"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_console_healthcheck_passes_only_while_the_console_serves(tmp_path: Path) -> None:
    """`scoring-healthcheck console` (compose's health check of the console) against the real
    console app on a SQLite registry, served by uvicorn as `scoring console` serves it:
    healthy while it serves, unhealthy once stopped."""
    import uvicorn

    from scoring.console import create_app

    settings = Settings(
        registry=RegistrySettings(url=f"sqlite:///{tmp_path}/registry.db"),
        feast=FeastSettings(repo_path=tmp_path / "no-feature-repo"),
        console=ConsoleSettings(metrics_urls=("http://127.0.0.1:9/metrics",)),
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "the console did not start"
            assert time.monotonic() < deadline, "console not serving within 60 s"
            time.sleep(0.05)
        result = run_console_healthcheck(port)
        assert result.returncode == 0, result.stderr
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()
    result = run_console_healthcheck(port)
    assert result.returncode == 1
    assert f"console http://127.0.0.1:{port}/healthz: unreachable" in result.stderr


def test_healthcheck_refuses_an_unknown_check() -> None:
    result = subprocess.run(
        [sys.executable, str(HEALTHCHECK), "triton"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "usage: scoring-healthcheck [gateway|console]" in result.stderr
