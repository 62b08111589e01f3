"""Who calls the gateway and who changes the model registry: the callers of AuthSettings,
recognised by a bearer token's SHA-256 or a client certificate's CN, and the audited actor of a
registry change."""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from scoring.core.settings import AuthSettings, CallerSettings

ADMIN = "admin"
# The identity of a caller without credentials while auth is not required (local runs).
LOCAL = "local"

_CALLER_LIST = TypeAdapter(tuple[CallerSettings, ...])


class AccessError(Exception):
    """Credentials are missing, unknown or not enough; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Caller:
    """A known caller, as the gateway checks it on every request.

    Attributes:
        every_rpc: may call every RankingService method ("*" in its rpcs).
        burst: the token bucket's size (None: no rate limit).
    """

    name: str
    rpcs: frozenset[str]
    every_rpc: bool
    roles: frozenset[str]
    max_concurrent: int | None = None
    rate_per_s: float | None = None
    burst: int | None = None

    @classmethod
    def of(cls, entry: CallerSettings) -> Caller:
        rate, burst = entry.rate_per_s, entry.burst
        if rate is not None and burst is None:
            burst = math.ceil(rate)
        return cls(
            name=entry.name,
            rpcs=frozenset(entry.rpcs),
            every_rpc="*" in entry.rpcs,
            roles=frozenset(entry.roles),
            max_concurrent=entry.max_concurrent,
            rate_per_s=rate,
            burst=burst,
        )

    def allows(self, rpc: str) -> bool:
        return self.every_rpc or rpc in self.rpcs

    @property
    def limited(self) -> bool:
        return self.max_concurrent is not None or self.rate_per_s is not None


LOCAL_CALLER = Caller(LOCAL, frozenset(), True, frozenset())


def token_sha256(token: str) -> str:
    """What AuthSettings keeps of a bearer token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token (256 random bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Callers:
    """Every configured caller, by token digest and by certificate CN."""

    by_name: dict[str, Caller]
    by_token: dict[str, Caller]
    by_cn: dict[str, Caller]

    def with_token(self, token: str) -> Caller | None:
        return self.by_token.get(token_sha256(token))


def read_callers_file(path: Path) -> tuple[CallerSettings, ...]:
    """The callers listed in a YAML or JSON file: a list, or a mapping with a `callers` list.

    Raises:
        AccessError: the file is missing or does not hold valid callers (the message names
            the file and the field).
    """
    import yaml

    try:
        document: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise AccessError(f"callers file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise AccessError(f"callers file {path}: not YAML or JSON ({exc})") from None
    if isinstance(document, dict):
        document = document.get("callers")
    if document is None:
        return ()
    try:
        return _CALLER_LIST.validate_python(document)
    except ValidationError as exc:
        raise AccessError(f"callers file {path}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def load_callers(auth: AuthSettings) -> Callers:
    """The callers of `auth.callers_file` and `auth.callers`, indexed.

    Raises:
        AccessError: the file cannot be read, or two callers share a name, a token or a CN.
    """
    entries = list(auth.callers)
    if auth.callers_file is not None:
        entries += read_callers_file(auth.callers_file)
    by_name: dict[str, Caller] = {}
    by_token: dict[str, Caller] = {}
    by_cn: dict[str, Caller] = {}
    for entry in entries:
        if entry.name in by_name or entry.name == LOCAL:
            raise AccessError(f"callers: the name {entry.name!r} is taken")
        caller = by_name[entry.name] = Caller.of(entry)
        for digest in entry.token_sha256:
            if digest in by_token:
                raise AccessError(
                    f"callers: {entry.name!r} and {by_token[digest].name!r} share a token"
                )
            by_token[digest] = caller
        if entry.cert_cn is not None:
            if entry.cert_cn in by_cn:
                raise AccessError(
                    f"callers: {entry.name!r} and {by_cn[entry.cert_cn].name!r} share the "
                    f"certificate CN {entry.cert_cn!r}"
                )
            by_cn[entry.cert_cn] = caller
    return Callers(by_name, by_token, by_cn)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes the model registry, as its audit trail records it.

    Attributes:
        name: the caller's name when authenticated; else a name marked as not verified.
        authenticated_by: "token" (an admin caller's token), or "none".
    """

    name: str
    authenticated_by: Literal["token", "none"]

    def audit(self) -> dict[str, str]:
        """The audit event's details entry."""
        return {"identity": self.name, "authenticated_by": self.authenticated_by}


def registry_actor(auth: AuthSettings, token: str | None, local_name: str) -> Actor:
    """The actor of a registry change: the admin caller whose token is `token`.

    Without a token and with auth not required (local runs), `local_name` marked as not
    authenticated: `local:<local_name> (auth off)`.

    Raises:
        AccessError: auth is required and there is no token, or the token is not an admin
            caller's (checked whenever one is given).
    """
    if token:
        caller = load_callers(auth).with_token(token)
        if caller is None:
            raise AccessError(
                "the admin token matches no caller (SCORING_AUTH__CALLERS_FILE, "
                "SCORING_AUTH__CALLERS): nothing was changed"
            )
        if ADMIN not in caller.roles:
            raise AccessError(
                f"caller {caller.name!r} has no {ADMIN!r} role: registry changes need one; "
                "nothing was changed"
            )
        return Actor(caller.name, "token")
    if auth.required:
        raise AccessError(
            "registry changes need an admin identity (auth is required): pass --token or set "
            "SCORING_AUTH__ADMIN_TOKEN to an admin caller's token; nothing was changed"
        )
    return Actor(f"{LOCAL}:{local_name} (auth off)", "none")
