"""The gateway's metrics are plain in-process values, whatever Feast's import does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "import scoring.gateway.server, prometheus_client.values as v; print(v.ValueClass.__name__)"


def value_class(env: dict[str, str]) -> str:
    """The metric value class of a fresh interpreter that imports the gateway, as it starts."""
    return subprocess.run(
        [sys.executable, "-c", CODE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    ).stdout.strip()


@pytest.mark.parametrize("inherited", [None, "/tmp/feast_metrics_abc123"])
def test_gateway_metrics_are_not_in_prometheus_multiprocess_mode(inherited: str | None) -> None:
    # Feast's import sets PROMETHEUS_MULTIPROC_DIR, and a gateway started by a process that
    # imported Feast (the CLI, the tests) inherits it: neither makes the metrics file-backed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
    if inherited is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = env["PROMETHEUS_MULTIPROCESS_DIR"] = inherited
    assert value_class(env) == "MutexValue"


def test_an_operators_multiprocess_folder_is_kept(tmp_path: object) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    assert value_class(env) == "MmapedValue"
