"""`scoring`: one subcommand per step or process of the platform. `scoring --help` lists them."""

import typer

from scoring.cli import (
    access,
    console,
    data,
    demo,
    evaluate,
    experiments,
    features,
    models,
    privacy,
    rank,
    serve,
    train,
)

__all__ = ["app"]

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features")
app.add_typer(serve.app, name="serve")
app.add_typer(models.app, name="models")
app.add_typer(experiments.app, name="experiments")
app.add_typer(privacy.app, name="privacy")
app.add_typer(access.app, name="access")
app.command()(train.train)
app.command()(train.report)
app.command()(evaluate.evaluate)
app.command("model-latency")(train.model_latency)
app.command()(rank.rank)
app.command()(demo.demo)
app.command("console")(console.console_command)
