"""`scoring features ...`: the Feast feature repository."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from scoring import workflows
from scoring.cli.common import console, load_settings

app = typer.Typer(help="The Feast feature repository.", no_args_is_help=True)


@app.command("apply")
def features_apply() -> None:
    """Register the feature definitions (`feast apply`)."""
    settings = load_settings()
    with console.status("feast apply"):
        workflows.apply_features(settings)
    console.print(f"[green]applied[/] feature repo {settings.feast.repo_path}")


@app.command("materialize")
def features_materialize(
    full: Annotated[
        bool, typer.Option(help="Reload every view over its TTL (e.g. after adding a feature).")
    ] = False,
) -> None:
    """Load new feature rows into the online store (`feast materialize-incremental`, up to now)."""
    settings = load_settings()
    with console.status("materializing into the online store"):
        end = workflows.materialize_features(settings, full=full)
    console.print(f"[green]materialized[/] up to {end:%Y-%m-%d %H:%M:%S} UTC")


@app.command("contract")
def features_contract(service: str) -> None:
    """Print a FeatureService's contract: ordered features, dtypes, defaults, schema hash."""
    from scoring.core.contract import contract_from_store
    from scoring.core.feature_repo import open_store

    settings = load_settings()
    store = open_store(settings.feast.repo_path, settings.feast.fs_yaml)
    contract = contract_from_store(store, service)
    table = Table(title=f"{contract.service}: schema {contract.schema_hash}")
    for col in ("#", "feature", "dtype", "default", "entity", "columns"):
        table.add_column(col)
    for i, f in enumerate(contract.features):
        table.add_row(
            str(i),
            f.ref,
            f.dtype,
            f"{f.default:g}",
            f.entity or "(request time)",
            str(f.length),
        )
    console.print(table)
    console.print(
        f"model input: {contract.value_width} value columns + {len(contract.features)} "
        f"missing indicators = {contract.width}"
    )
    console.print(f"request fields: {', '.join(contract.request_fields) or '-'}")
