"""The console's FastAPI app: pages and the JSON API under /api/v1, errors as a message naming
the field (JSON for the API, the page otherwise), the login, and the static assets (everything
the pages use is served from here: no asset from the internet)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

import scoring.console.actions as actions
import scoring.console.experiments as experiments
import scoring.console.features as features
import scoring.console.models as models
import scoring.console.serving as serving
from scoring.console.auth import COOKIE, Login, Sessions, current_login
from scoring.console.context import HERE, ConsoleContext, ConsoleError, get_context, templates
from scoring.core.settings import Settings

logger = logging.getLogger(__name__)
AREAS = (models, actions, experiments, features, serving)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str, field: str | None) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message, "field": field}, status_code=status)
    ctx: ConsoleContext = request.app.state.ctx
    login = ctx.sessions.get(request.cookies.get(COOKIE))
    return ctx.templates.TemplateResponse(
        request,
        "error.html",
        {"page": "", "login": login, "status": status, "message": message, "field": field},
        status_code=status,
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """`name[index].key: what is wrong` and the top-level field it names."""
    error = exc.errors()[0]
    loc = [p for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
    if not loc:
        return str(error.get("msg")), None
    where = str(loc[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    return f"{where}: {error.get('msg')}", str(loc[0])


class SessionIn(BaseModel):
    token: str


def create_app(settings: Settings, *, login_token: str | None = None) -> FastAPI:
    """The console on the configured registry, Feast repo and gateways.

    Args:
        login_token: a one-time admin login for a console where no admin caller is configured
            and auth is not required (`scoring console` makes and prints one then).
    """
    from scoring.registry import Registry

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry(settings.registry.url)
        ctx = ConsoleContext(
            settings=settings,
            registry=registry,
            sessions=Sessions(settings.auth, settings.console.session_ttl_s, login_token),
            templates=templates(),
        )
        app.state.ctx = ctx
        for area in AREAS:
            start = getattr(area, "on_start", None)
            if start is not None:
                start(ctx)
        try:
            yield
        finally:
            for area in reversed(AREAS):
                stop = getattr(area, "on_stop", None)
                if stop is not None:
                    stop(ctx)
            registry.close()

    app = FastAPI(
        title="scoring console",
        summary="Models, experiments, features and serving of the scoring platform.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads its assets from a CDN: /api/docs is served below
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(ConsoleError)
    async def console_error(request: Request, exc: ConsoleError) -> Response:
        return _error(request, exc.status, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        message, field = _validation_message(exc)
        return _error(request, 400, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return _error(request, exc.status_code, message, None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        incident = uuid.uuid4().hex[:12]
        logger.exception("console_error incident=%s path=%s", incident, request.url.path)
        return _error(request, 500, f"internal error (incident {incident}, in the log)", None)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs(
        request: Request,
        ctx: Annotated[ConsoleContext, Depends(get_context)],
        login: Annotated[Login | None, Depends(current_login)],
    ) -> Response:
        """The JSON API's routes, from the OpenAPI schema (/api/openapi.json)."""
        routes = []
        for path, methods in app.openapi().get("paths", {}).items():
            for method, op in methods.items():
                params = [
                    f"{p['name']} ({p['in']}{', required' if p.get('required') else ''})"
                    for p in op.get("parameters", [])
                ]
                if "requestBody" in op:
                    params.append("JSON body")
                routes.append(
                    {
                        "method": method.upper(),
                        "path": path,
                        "summary": op.get("description") or op.get("summary", ""),
                        "params": params,
                    }
                )
        return ctx.templates.TemplateResponse(
            request, "api.html", {"page": "", "login": login, "routes": routes}
        )

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/models", status_code=303)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(
        request: Request,
        ctx: Annotated[ConsoleContext, Depends(get_context)],
        login: Annotated[Login | None, Depends(current_login)],
        next: str = "/models",
    ) -> Response:
        return ctx.templates.TemplateResponse(
            request,
            "login.html",
            {"page": "login", "login": login, "next": _local(next), "message": None},
        )

    @app.post("/login", include_in_schema=False)
    def login_form(
        request: Request,
        ctx: Annotated[ConsoleContext, Depends(get_context)],
        token: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/models",
    ) -> Response:
        try:
            session, _ = ctx.sessions.login(token)
        except ConsoleError as exc:
            return ctx.templates.TemplateResponse(
                request,
                "login.html",
                {"page": "login", "login": None, "next": _local(next), "message": exc.message},
                status_code=exc.status,
            )
        response = RedirectResponse(_local(next), status_code=303)
        _set_cookie(response, session, ctx)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, ctx: Annotated[ConsoleContext, Depends(get_context)]) -> Response:
        ctx.sessions.logout(request.cookies.get(COOKIE))
        response = RedirectResponse("/models", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.post("/api/v1/session", tags=["session"])
    def api_login(body: SessionIn, ctx: Annotated[ConsoleContext, Depends(get_context)]) -> Any:
        """Log in with an admin caller's bearer token: sets the session cookie; returns who
        you are and the CSRF token that POSTs with the cookie must send (X-CSRF-Token)."""
        session, login = ctx.sessions.login(body.token)
        response = JSONResponse({"actor": login.actor.name, "csrf": login.csrf})
        _set_cookie(response, session, ctx)
        return response

    @app.get("/api/v1/session", tags=["session"])
    def api_whoami(login: Annotated[Login | None, Depends(current_login)]) -> dict[str, str]:
        """Who the session cookie belongs to (401 when not logged in)."""
        if login is None:
            raise ConsoleError(401, "token: not logged in", "token")
        return {"actor": login.actor.name, "csrf": login.csrf}

    @app.delete("/api/v1/session", tags=["session"])
    def api_logout(request: Request, ctx: Annotated[ConsoleContext, Depends(get_context)]) -> Any:
        ctx.sessions.logout(request.cookies.get(COOKIE))
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(COOKIE)
        return response

    for area in AREAS:
        app.include_router(area.router)
    return app


def _local(path: str) -> str:
    """A redirect target on this console only (no open redirect to another site)."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/models"
    return quote(path, safe="/?=&%:._-")


def _set_cookie(response: Response, session: str, ctx: ConsoleContext) -> None:
    response.set_cookie(
        COOKIE,
        session,
        max_age=int(ctx.settings.console.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=False,  # TLS ends at the ingress in production; locally it is plain HTTP
    )
