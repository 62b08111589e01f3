"""Settings: local defaults, SCORING_* overrides with nested sections, child-process export."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring.core.settings import Settings, settings_env


def test_defaults_run_locally() -> None:
    settings = Settings()
    assert settings.gateway.host == "127.0.0.1"
    assert settings.triton.url.startswith("127.0.0.1:")
    assert settings.feast.repo_path == Path("features")


def test_nested_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORING_GATEWAY__MAX_CANDIDATES", "42")
    monkeypatch.setenv("SCORING_TRITON__URL", "127.0.0.1:9001")
    settings = Settings()
    assert settings.gateway.max_candidates == 42
    assert settings.triton.url == "127.0.0.1:9001"


def test_invalid_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORING_GATEWAY__MAX_CANDIDATES", "0")
    with pytest.raises(ValueError, match="max_candidates"):
        Settings()


def test_settings_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings()
    original.gateway.port = 12345
    original.triton.config_name = ""
    for key, value in settings_env(original).items():
        monkeypatch.setenv(key, value)
    assert Settings() == original
