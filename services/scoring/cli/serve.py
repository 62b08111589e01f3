"""`scoring serve ...`: run Triton or the gateway in the foreground."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer

from scoring import workflows
from scoring.cli.common import console, load_settings, stop_on_sigterm
from scoring.core.targets import TARGETS

app = typer.Typer(help="Run a server in the foreground.", no_args_is_help=True)


@app.command("triton")
def serve_triton() -> None:
    """Run the local Triton server (CPU, python backend) until Ctrl-C."""
    from scoring.triton.server import TritonServer, servable_models

    settings = load_settings()
    stop_on_sigterm()
    models = servable_models(settings.triton.model_repository, TARGETS)
    if not models:
        console.print(
            f"no trained model in {settings.triton.model_repository}: run `scoring train` first",
            style="red",
        )
        raise typer.Exit(code=2)
    server = TritonServer(settings.triton, models)
    with server:
        for name, versions in workflows.sync_triton(settings).items():
            if name not in models:
                console.print(f"{name}: no trained version, not served")
            else:
                loaded = versions or "none; latest on disk"
                console.print(f"{name}: registry versions {loaded} loaded")
        console.print(f"[green]triton ready[/] on {settings.triton.url} (log {server.log_path})")
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@app.command("gateway")
def serve_gateway(
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Gateway processes sharing the port (default: SCORING_GATEWAY__WORKERS, 1); "
            "worker i serves metrics on the metrics port + i.",
        ),
    ] = None,
) -> None:
    """Run the gRPC gateway until Ctrl-C."""
    from scoring.gateway.__main__ import main

    if workers is not None:
        os.environ["SCORING_GATEWAY__WORKERS"] = str(workers)
    main()
