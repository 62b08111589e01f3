"""`scoring privacy ...`: forget a user on request, expire the gateway's logs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from scoring import workflows
from scoring.cli.common import console, load_settings

app = typer.Typer(help="User data: forget a user, expire old logs.", no_args_is_help=True)


@app.command("forget")
def privacy_forget(
    user: Annotated[str, typer.Argument(help="The user id, as callers send it.")],
    online: Annotated[
        bool, typer.Option(help="Also delete the user's rows in the online store.")
    ] = True,
) -> None:
    """Delete a user's rows from the served-feature and event logs, the offline tables and
    the online store; other users' rows stay as they were."""
    settings = load_settings()
    with console.status(f"forgetting {user}"):
        report = workflows.forget_user(settings, user, online=online)
    table = Table(title=f"removed ({report.request_ids} requests of this user in the logs)")
    for col in ("where", "file / store", "rows"):
        table.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
    for r in report.removed:
        table.add_row(r.where, r.path, str(r.rows))
    console.print(table)
    console.print(f"{report.rows} rows removed", highlight=False)


@app.command("expire")
def privacy_expire() -> None:
    """Delete the served-feature and event log day folders past their retention."""
    settings = load_settings()
    removed = workflows.expire_logs(settings)
    for folder in removed:
        console.print(f"deleted {folder}", highlight=False)
    p = settings.privacy
    console.print(
        f"{len(removed)} day folders past retention deleted (served-feature log: "
        f"{p.feature_log_retention_days} days, events: {p.events_retention_days} days; 0 keeps)",
        highlight=False,
    )
