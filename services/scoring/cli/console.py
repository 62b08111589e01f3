"""`scoring console`: the web console for MLOps and feature engineers (pages and a JSON API)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from scoring.cli.common import console, load_settings

# The one-time login of a console without an admin caller (auth off), when its starter picks it.
LOGIN_TOKEN_ENV = "SCORING_CONSOLE_LOGIN_TOKEN"


def console_command(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: SCORING_CONSOLE__HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: SCORING_CONSOLE__PORT, 8090).")
    ] = None,
) -> None:
    """Serve the web console: models (compare, promote, canary, shadow, stop, roll back),
    experiments, features (catalogue, freshness) and serving, on the configured registry,
    Feast repo and gateways. Actions need an admin caller's token (the login page)."""
    import uvicorn

    from scoring.console import create_app
    from scoring.console.auth import admin_configured
    from scoring.core.access import new_token

    settings = load_settings()
    if host is not None:
        settings.console.host = host
    if port is not None:
        settings.console.port = port
    login_token = None
    if not admin_configured(settings.auth):
        if settings.auth.required:
            console.print(
                "[yellow]no admin caller is configured (SCORING_AUTH__CALLERS_FILE): the "
                "console shows everything but nobody can change the registry[/]"
            )
        else:
            # Like a notebook server: a one-time login for this run, for the person who
            # started it (auth is off and no admin caller exists to log in as); `scoring demo
            # --serve`, which starts the console, hands it the one it prints.
            login_token = os.environ.get(LOGIN_TOKEN_ENV) or new_token()
    app = create_app(settings, login_token=login_token)
    url = f"http://{settings.console.host}:{settings.console.port}"
    from sqlalchemy.engine import make_url

    registry = make_url(settings.registry.url).render_as_string(hide_password=True)
    console.print(f"[green]console[/] on {url} (registry {registry})")
    if login_token is not None:
        console.print(f"log in with this one-time token (auth off): {login_token}")
    console.file.flush()  # seen at once also when the output goes to a log file
    uvicorn.run(
        app,
        host=settings.console.host,
        port=settings.console.port,
        log_level="warning",
        access_log=False,
    )
