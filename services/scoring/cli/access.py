"""`scoring access ...`: bearer tokens for the gateway's callers and the registry's admins."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Annotated

import typer

from scoring.cli.common import console, load_settings

app = typer.Typer(
    help="Callers of the gateway: new bearer tokens, their digests, the configured callers.",
    no_args_is_help=True,
)


@app.command("token")
def access_token(
    name: Annotated[str, typer.Argument(help="The caller's name (logs, metrics, audit).")],
    rpc: Annotated[
        list[str] | None,
        typer.Option(help="An RPC it may call (Rank, RankBatch, Feedback, * for all); repeat."),
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option(help="A role (admin: may change the registry); repeat.")
    ] = None,
) -> None:
    """Make a new token for a caller: print it once, with the callers-file entry that holds
    only its SHA-256. Give the token to the caller; add the entry to SCORING_AUTH__CALLERS_FILE
    (to rotate, add the new digest beside the old one, then remove the old one)."""
    import yaml

    from scoring.core.access import new_token, token_sha256
    from scoring.core.settings import CallerSettings

    token = new_token()
    entry = CallerSettings(
        name=name,
        token_sha256=(token_sha256(token),),
        rpcs=tuple(rpc or ()),
        roles=tuple(role or ()),
    )
    document = [entry.model_dump(mode="json", exclude_defaults=True)]
    sys.stderr.write("token (shown once; keep it secret):\n")
    print(token)
    sys.stderr.write("\ncallers file entry:\n")
    print(yaml.safe_dump(document, sort_keys=False).rstrip())


@app.command("digest")
def access_digest() -> None:
    """Print the SHA-256 of a token read from standard input (for a callers-file entry)."""
    from scoring.core.access import token_sha256

    token = sys.stdin.readline().strip()
    if not token:
        raise typer.BadParameter("no token on standard input")
    print(token_sha256(token))


@app.command("callers")
def access_callers() -> None:
    """The configured callers (file and environment), with what they may call and their
    limits; checks the callers file as the gateway would."""
    from rich.table import Table

    from scoring.core.access import AccessError, load_callers

    settings = load_settings()
    try:
        callers = load_callers(settings.auth)
    except AccessError as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(1) from None
    mode = "required" if settings.auth.required else "not required (anonymous callers: local)"
    table = Table(title=f"callers (auth {mode})")
    for col in ("name", "by", "rpcs", "roles", "max in flight", "rate/s (burst)"):
        table.add_column(col)
    by_cn = {c.name: cn for cn, c in callers.by_cn.items()}
    tokens = Counter(caller.name for caller in callers.by_token.values())
    for name, caller in sorted(callers.by_name.items()):
        ways = [f"cert CN {by_cn[name]}"] if name in by_cn else []
        ways += [f"{tokens[name]} token(s)"] if name in tokens else []
        rate = f"{caller.rate_per_s:g} ({caller.burst})" if caller.rate_per_s else "-"
        table.add_row(
            name,
            ", ".join(ways),
            "*" if caller.every_rpc else ", ".join(sorted(caller.rpcs)) or "-",
            ", ".join(sorted(caller.roles)) or "-",
            str(caller.max_concurrent or "-"),
            rate,
        )
    console.print(table)
