"""Who may act from the console: an admin caller of the gRPC API, logged in with its bearer
token (the identity the CLI's `--token` and the audit trail use), or, where no admin caller is
configured and auth is not required, the one-time login token the console prints at start.

A login is a random session id in an HttpOnly, SameSite=Strict cookie, held in this process's
memory only; a form that changes anything also carries the login's CSRF token. JSON clients may
send `Authorization: Bearer <admin token>` on each call instead of logging in.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import Request

from scoring.console.errors import ConsoleError
from scoring.core.access import ADMIN, AccessError, Actor, load_callers, registry_actor
from scoring.core.settings import AuthSettings

COOKIE = "scoring_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Login:
    """A logged-in admin: who (audited as the actor of every change) and its CSRF token."""

    actor: Actor
    csrf: str
    expires_at: float


def admin_configured(auth: AuthSettings) -> bool:
    """Whether any configured caller has the admin role."""
    try:
        callers = load_callers(auth)
    except AccessError:
        return False
    return any(ADMIN in c.roles for c in callers.by_name.values())


class Sessions:
    """The console's logins (in memory: a restart logs everyone out)."""

    def __init__(self, auth: AuthSettings, ttl_s: float, local_token: str | None = None) -> None:
        self.auth = auth
        self.ttl_s = ttl_s
        # Only where nobody could log in otherwise: no admin caller, auth not required.
        self.local_token = local_token
        self._logins: dict[str, Login] = {}
        self._lock = threading.Lock()

    def actor(self, token: str) -> Actor:
        """The admin identity a bearer token proves.

        Raises:
            ConsoleError: 401 without a token or with an unknown one, 403 for a caller
                without the admin role (field `token`).
        """
        token = token.strip()
        if not token:
            raise ConsoleError(401, "token: an admin caller's bearer token is required", "token")
        if self.local_token is not None and hmac.compare_digest(token, self.local_token):
            from scoring.registry.promotion import default_actor

            return Actor(f"local:{default_actor()} (console login token, auth off)", "none")
        try:
            return registry_actor(self.auth, token, "")
        except AccessError as exc:
            status = 403 if "role" in str(exc) else 401
            raise ConsoleError(status, f"token: {exc}", "token") from None

    def login(self, token: str) -> tuple[str, Login]:
        """A new session for the admin whose token this is; (session id, login)."""
        actor = self.actor(token)
        session = secrets.token_urlsafe(32)
        login = Login(actor, secrets.token_urlsafe(24), time.time() + self.ttl_s)
        with self._lock:
            now = time.time()
            self._logins = {k: v for k, v in self._logins.items() if v.expires_at > now}
            self._logins[session] = login
        return session, login

    def get(self, session: str | None) -> Login | None:
        if not session:
            return None
        with self._lock:
            login = self._logins.get(session)
            if login is not None and login.expires_at <= time.time():
                del self._logins[session]
                return None
            return login

    def logout(self, session: str | None) -> None:
        with self._lock:
            self._logins.pop(session or "", None)


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.ctx.sessions
    return sessions


def current_login(request: Request) -> Login | None:
    """FastAPI dependency: the request's login (its cookie), if any."""
    return _sessions(request).get(request.cookies.get(COOKIE))


async def require_admin(request: Request) -> Actor:
    """FastAPI dependency of every route that changes something: the admin making the change.

    A bearer token in the Authorization header is checked on its own; otherwise the login
    cookie, plus its CSRF token (form field `csrf` or header X-CSRF-Token) on a POST.

    Raises:
        ConsoleError: 401 not logged in, 403 a CSRF token that does not match.
    """
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return _sessions(request).actor(header[7:])
    login = _sessions(request).get(request.cookies.get(COOKIE))
    if login is None:
        raise ConsoleError(
            401, "token: log in with an admin caller's token to change anything", "token"
        )
    if request.method not in ("GET", "HEAD"):
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and "form" in request.headers.get("content-type", ""):
            sent = str((await request.form()).get(CSRF_FIELD, ""))
        if not sent or not hmac.compare_digest(sent, login.csrf):
            raise ConsoleError(403, "csrf: the form is stale or not this login's; reload it")
    return login.actor
