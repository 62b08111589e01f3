"""`scoring rank`: one Rank request to a running gateway."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from scoring.cli.common import console, load_settings, print_ranking
from scoring.core.targets import CandidateKind


def rank(
    user_id: str,
    candidates: Annotated[
        list[str] | None,
        typer.Argument(help="Candidate ids (none with --cart: the gateway proposes them)."),
    ] = None,
    kind: Annotated[
        CandidateKind, typer.Option(help="The candidates' kind: item, activity or bundle.")
    ] = CandidateKind.ITEM,
    cart: Annotated[
        str | None,
        typer.Option(
            help="Item ids in the user's cart, comma-separated (complete-the-basket: ranks the "
            "items to add with basket_completer; without candidates, the cart's co-purchase "
            "neighbours are proposed)."
        ),
    ] = None,
    top_k: int = 0,
    address: Annotated[str | None, typer.Option(help="Gateway host:port.")] = None,
    at: Annotated[
        datetime | None,
        typer.Option(
            help="Rank as of this time (the request context's timestamp; UTC if naive), e.g. "
            "the end of an imported log; now by default."
        ),
    ] = None,
) -> None:
    """Send one Rank request to a running gateway and print the ranking."""
    import grpc

    from scoring.client import RankingClient

    ids = candidates or []
    cart_ids = [c.strip() for c in cart.split(",")] if cart else []
    if not ids and not cart_ids:
        console.print("[red]Give candidate ids, or a cart (--cart) to propose items for.[/]")
        raise typer.Exit(2)
    settings = load_settings()
    # TLS and the bearer token come from the settings (SCORING_TLS__*, SCORING_AUTH__TOKEN).
    with RankingClient.for_settings(settings, address) as client:
        timestamp_s = None
        if at is not None:
            timestamp_s = int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())
        try:
            response = client.rank(
                user_id, ids, kind, top_k, timestamp_s=timestamp_s, cart=cart_ids
            )
        except grpc.RpcError as exc:  # refused (credentials, limits, input) or unreachable
            console.print(f"[red]{exc.code().name}:[/] {exc.details()}", highlight=False)
            raise typer.Exit(1) from None
        title = f"{kind.value}s for {user_id}"
        if cart_ids:
            title = f"items to add to {user_id}'s cart of {len(cart_ids)}"
            if response.proposed:
                title += " (candidates proposed from the cart)"
        print_ranking(title, response)
