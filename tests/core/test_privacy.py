"""Keyed pseudonyms of user ids, the secret they are keyed with, and log retention."""

from __future__ import annotations

import hashlib
import stat
from datetime import date
from pathlib import Path

import pytest
from pydantic import SecretStr

from scoring.core.privacy import (
    PrivacySecretError,
    Pseudonymizer,
    expire,
    privacy_secret,
    pseudonymizer,
)
from scoring.core.settings import PrivacySettings, Settings, settings_env


def test_pseudonyms_are_keyed_stable_and_not_the_plain_hash() -> None:
    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    assert a("u_000042") == a("u_000042") != a("u_000043")
    assert a("u_000042") != b("u_000042"), "another key, another pseudonym"
    plain = hashlib.sha256(b"u_000042").hexdigest()
    assert a("u_000042") not in plain and plain[:12] not in a("u_000042")
    assert len(a("u_000042")) == 32
    assert "k" * 32 not in repr(a), "the key is kept out of reprs"
    with pytest.raises(PrivacySecretError, match="16"):
        Pseudonymizer(b"short")


def test_a_missing_secret_file_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = PrivacySettings(secret_file=tmp_path / "run" / "privacy_secret")
    first = privacy_secret(settings)
    assert len(first) >= 32
    assert stat.S_IMODE(settings.secret_file.stat().st_mode) == 0o600
    assert privacy_secret(settings) == first, "the same key on the next start"
    assert pseudonymizer(settings)("u_1") == Pseudonymizer(first)("u_1")
    assert [p.name for p in settings.secret_file.parent.iterdir()] == ["privacy_secret"]


def test_production_without_a_secret_refuses_to_start(tmp_path: Path) -> None:
    settings = PrivacySettings(secret_file=tmp_path / "absent", generate_secret=False)
    with pytest.raises(PrivacySecretError, match="SCORING_PRIVACY__SECRET"):
        privacy_secret(settings)
    assert not settings.secret_file.exists()


def test_a_set_secret_wins_and_reaches_child_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        privacy=PrivacySettings(secret=SecretStr("s" * 40), secret_file=tmp_path / "unused")
    )
    assert privacy_secret(settings.privacy) == b"s" * 40
    assert not (tmp_path / "unused").exists()
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    assert Settings().privacy.secret == SecretStr("s" * 40)


def test_expire_deletes_only_day_folders_past_the_retention(tmp_path: Path) -> None:
    folders = [
        tmp_path / "served" / "target=item_ranker" / "date=2024-01-01",
        tmp_path / "served" / "target=item_ranker" / "date=2024-01-25",
        tmp_path / "events" / "request" / "2024-01-01",
        tmp_path / "events" / "request" / "2024-01-31",
        tmp_path / "events" / "request" / "notes",
    ]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "part.parquet").write_bytes(b"x")
    today = date(2024, 2, 1)
    assert expire(tmp_path / "served", 7, today) == [folders[0]]
    assert expire(tmp_path / "events", 7, today) == [folders[2]]
    assert expire(tmp_path / "events", 0, today) == []
    assert [f.exists() for f in folders] == [False, True, False, True, True]
