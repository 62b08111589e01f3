"""`scoring evaluate`: offline evaluation of a version on the shop's own log, beside baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scoring.cli.common import console, load_settings


def evaluate(
    protocol: Annotated[
        str,
        typer.Option(
            help="loo (leave-one-out), time (time split) or basket (complete the basket)."
        ),
    ] = "loo",
    negatives: Annotated[int, typer.Option(help="Sampled negatives per held-out item.")] = 100,
    seed: int = 0,
    max_users: Annotated[int, typer.Option(help="Seeded sample of users; 0: all.")] = 5000,
    full_catalogue: Annotated[bool, typer.Option(help="Also rank over all items.")] = False,
    out: Annotated[Path | None, typer.Option(help="Report (.md, and .json beside it).")] = None,
    target: str = "item_ranker",
    version: Annotated[int | None, typer.Option(help="Version; the latest by default.")] = None,
    baselines_only: bool = False,
) -> None:
    """Offline evaluation on your own log (HR@10, NDCG@10, Recall@20, MRR; AUC for basket)."""
    from scoring.evaluation.errors import EvaluationError
    from scoring.evaluation.run import run_evaluation

    args = (protocol, negatives, seed, max_users, full_catalogue, out, target, version)
    try:
        run_evaluation(load_settings(), console, *args, baselines_only=baselines_only)
    except EvaluationError as exc:
        console.print(f"evaluate refused: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(code=2) from None
