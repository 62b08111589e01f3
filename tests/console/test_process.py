"""`scoring demo --serve` starts the console as a child process with a one-time login it prints."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from scoring.cli.console import LOGIN_TOKEN_ENV
from scoring.cli.demo import start_console
from scoring.core.settings import Settings

from ..conftest import free_port


def test_the_demo_starts_the_console_with_a_one_time_login(tmp_path: Path) -> None:
    settings = Settings(
        registry={"url": f"sqlite:///{tmp_path / 'registry.db'}"},  # type: ignore[arg-type]
        console={"port": free_port()},  # type: ignore[arg-type]
    )
    process = start_console(settings, tmp_path)
    assert process is not None
    try:
        assert process.extra_env is not None
        token = process.extra_env[LOGIN_TOKEN_ENV]
        request = urllib.request.Request(
            f"{process.url}/api/v1/session",
            data=json.dumps({"token": token}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert "auth off" in json.loads(response.read())["actor"]
        assert token in (tmp_path / "console.log").read_text()  # what `scoring console` says
    finally:
        process.stop()
    assert process.process is None
