"""User ids as keyed pseudonyms, the key they are made with, and log retention.

Every user id that reaches a log line, a metric, the served-event log or (by default) the
served-feature log goes through one `Pseudonymizer`: HMAC-SHA256 under a secret from the
settings (`PrivacySettings`), so that a guessable id (`u_000042`) cannot be found again by
hashing candidates without the key. The same key gives the same pseudonym in every process
(gateway replicas, the trainer, `scoring privacy forget`), so logs still join per user.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from scoring.core.settings import PrivacySettings

logger = logging.getLogger(__name__)

# 128 bits of the HMAC: no collision among any realistic number of users.
PSEUDONYM_BYTES = 16
_MIN_SECRET_BYTES = 16


class PrivacySecretError(RuntimeError):
    """No usable secret: none set, and the secret file is missing (and may not be created)."""


@dataclass(frozen=True, slots=True)
class Pseudonymizer:
    """`pseudonym(user_id)`: the hex HMAC-SHA256 of the id under the key (32 hex digits)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < _MIN_SECRET_BYTES:
            raise PrivacySecretError(f"the privacy secret has {len(self.key)} bytes; use >= 16")

    def __call__(self, value: str) -> str:
        digest = hmac.digest(self.key, value.encode("utf-8", "surrogatepass"), "sha256")
        return digest[:PSEUDONYM_BYTES].hex()

    @classmethod
    def random(cls) -> Pseudonymizer:
        """A key of this process alone (pseudonyms that join with nothing else)."""
        return cls(secrets.token_bytes(32))


def privacy_secret(settings: PrivacySettings) -> bytes:
    """The key: `settings.secret`, else the secret file's content (stripped).

    A missing secret file is created with a random key (mode 0600) when `generate_secret` is
    on (the local default: one key per installation, under .run/); with it off (production),
    a missing secret is an error, so that replicas never hash with keys of their own.

    Raises:
        PrivacySecretError: no secret, and the file is missing and may not be created.
    """
    if settings.secret is not None:
        return settings.secret.get_secret_value().encode()
    path = settings.secret_file
    if not path.exists():
        if not settings.generate_secret:
            raise PrivacySecretError(
                f"no privacy secret: set SCORING_PRIVACY__SECRET or "
                f"SCORING_PRIVACY__SECRET_FILE ({path} does not exist)"
            )
        _create_secret(path)
    key = path.read_bytes().strip()
    if not key:
        raise PrivacySecretError(f"the privacy secret file {path} is empty")
    return key


def _create_secret(path: Path) -> None:
    """Writes a random key to `path` unless another process got there first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails when it exists: the first writer's key wins
        logger.warning(
            "privacy_secret_generated path=%s (local default; production sets "
            "SCORING_PRIVACY__SECRET or SCORING_PRIVACY__SECRET_FILE)",
            path,
        )
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def pseudonymizer(settings: PrivacySettings) -> Pseudonymizer:
    """The settings' pseudonymizer (see `privacy_secret`)."""
    return Pseudonymizer(privacy_secret(settings))


def partition_day(folder: Path) -> date | None:
    """The day a log folder holds (`date=YYYY-MM-DD` or `YYYY-MM-DD`), None for another."""
    try:
        return date.fromisoformat(folder.name.removeprefix("date="))
    except ValueError:
        return None


def expire(directory: Path, retention_days: int, today: date) -> list[Path]:
    """Deletes the day folders one level below `directory` older than `retention_days` days
    before `today` (the served-feature log's `target=*/date=*`, the event log's `<kind>/<day>`);
    0 keeps everything.

    Returns:
        The folders deleted.
    """
    if retention_days <= 0 or not directory.is_dir():
        return []
    oldest = today - timedelta(days=retention_days)
    removed = []
    for folder in sorted(directory.glob("*/*")):
        day = partition_day(folder)
        if folder.is_dir() and day is not None and day < oldest:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
