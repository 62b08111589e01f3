"""`scoring demo`: everything, end to end, in one command."""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scoring import workflows
from scoring.api.v1 import scoring_pb2 as pb
from scoring.cli.common import (
    console,
    load_settings,
    print_ranking,
    refusals,
    stop_on_sigterm,
    versions_table,
)
from scoring.cli.data import generate
from scoring.cli.features import features_apply, features_materialize
from scoring.cli.models import bootstrap
from scoring.cli.train import train_and_show
from scoring.core.settings import Settings
from scoring.core.targets import TARGETS

if TYPE_CHECKING:
    from scoring.console.process import ConsoleProcess


def print_basket(cart: list[str], held_out: str, answer: pb.RankResponse | None) -> None:
    """The completed basket: the top 5 additions the gateway proposed and ranked, and where
    the basket's real last item came."""
    if answer is None:
        console.print("complete the basket: no basket of two or more items in this data set")
        return
    shown = pb.RankResponse()
    shown.CopyFrom(answer)
    del shown.candidates[5:]
    del shown.filtered[:]
    source = "proposed from the cart's co-purchases" if answer.proposed else "sent"
    print_ranking(
        f"complete the basket {', '.join(cart)} for u_000042: top 5 of "
        f"{len(answer.candidates)} candidates ({source})",
        shown,
    )
    rank = next((c.rank for c in answer.candidates if c.id == held_out), None)
    where = f"ranked {rank} of {len(answer.candidates)}" if rank else "not among the candidates"
    console.print(f"the basket's real last item {held_out}: {where}")


def start_console(settings: Settings, run_dir: Path) -> ConsoleProcess | None:
    """The web console beside the demo's servers, its URL and login printed (None, said, when
    it cannot start: the demo serves on without it)."""
    from scoring.cli.console import LOGIN_TOKEN_ENV
    from scoring.console.auth import admin_configured
    from scoring.console.process import ConsoleProcess, ConsoleStartError
    from scoring.core.access import new_token

    token = None if admin_configured(settings.auth) or settings.auth.required else new_token()
    process = ConsoleProcess(
        settings, run_dir / "console.log", {LOGIN_TOKEN_ENV: token} if token else None
    )
    try:
        with console.status("starting the web console"):
            process.start()
            process.wait_ready()
    except ConsoleStartError as exc:
        process.stop()
        console.print(f"[yellow]web console not started:[/] {exc}")
        return None
    login = f"; log in with {token}" if token else " (log in with an admin caller's token)"
    console.print(f"[green]web console[/] on {process.url}{login}")
    return process


def demo(
    users: Annotated[
        int, typer.Option(help="Data size: items, activities, impressions scale.")
    ] = 1000,
    epochs: int = 20,
    serve: Annotated[
        bool,
        typer.Option(help="After the requests, keep Triton and the gateway up until Ctrl-C."),
    ] = False,
) -> None:
    """Everything, end to end: data, features, training, Triton, gateway, real requests."""
    from scoring.registry import Registry
    from scoring.registry.promotion import default_actor
    from scoring.trainer.train import TrainConfig

    settings = load_settings()
    # Promotion needs an admin identity where auth is required: refuse now, not at step 4.
    with refusals():
        actor = workflows.registry_actor(settings, local_name=f"demo/{default_actor()}")
    stop_on_sigterm()
    started = time.monotonic()
    console.rule("1/6 data")
    data = workflows.demo_data_config(users)
    generate(settings, data, register=False)
    console.rule("2/6 features")
    features_apply()
    features_materialize(full=False)
    console.rule("3/6 training")
    cfg = TrainConfig(epochs=epochs, device="cpu", seed=7)
    train_and_show(settings, list(TARGETS), cfg, report=False)
    # Registry only: Triton is not running yet and loads the production versions when it starts.
    console.rule("4/6 promotion (model registry)")
    with Registry(settings.registry.url) as registry:
        bootstrap(settings, registry, actor, newest=True)
        console.print(versions_table(registry.versions()))
    console.rule("5/6 serving")
    run_dir = Path(".run")
    servers = workflows.Servers(settings, run_dir)
    stopped = None
    try:
        with console.status("starting triton"):
            loaded = servers.start_triton()
        console.print(f"[green]triton ready[/] on {settings.triton.url}, serving {loaded}")
        with console.status("starting gateway"):
            address = servers.start_gateway()
        console.print(f"[green]gateway SERVING[/] on {address}")
        console.rule("6/6 requests")
        now = int(datetime.now(UTC).timestamp())
        answers = workflows.demo_requests(settings, address, data.n_items, now)
        products = answers.products
        print_ranking(f"top 5 of {len(answers.items)} products for u_000042", products)
        console.print(
            f"feedback: {answers.feedback_accepted} click on {products.candidates[0].id} sent "
            f"back (arm {products.arm}); per-arm CTR: [bold]scoring experiments report[/]"
        )
        print_ranking(
            f"top 5 of {len(answers.activities)} activities for u_000042", answers.campaigns
        )
        print_ranking("a brand-new user and a brand-new product", answers.newcomer)
        print_basket(answers.cart, answers.held_out, answers.basket)
        if answers.bundles is None:
            console.print("bundles: none in this data set")
        else:
            print_ranking("top 5 bundles for u_000042", answers.bundles)
        if serve:
            # From here on Ctrl-C (or SIGTERM) is the way out, not an error. The handlers only
            # set an event that the wait checks: an exception raised wherever the signal lands
            # (inside a library that catches it) could be lost, and the demo would serve on.
            stop = threading.Event()
            previous = {
                sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)
            }
            web = start_console(settings, run_dir)
            try:
                console.print(
                    f"[green]serving[/]: gateway on {address}, Triton on {settings.triton.url} "
                    f"(logs in {run_dir}/); Ctrl-C to stop"
                )
                stopped = servers.wait(stop)
            finally:
                if web is not None:
                    web.stop()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    finally:
        with console.status("shutting down"):
            servers.stop()
    if stopped is not None:
        console.print(f"[red]{stopped} exited[/] while serving; its log: {run_dir}/{stopped}.log")
        raise typer.Exit(1)
    console.print(f"[green]demo done[/] in {time.monotonic() - started:.1f}s; logs in {run_dir}/")
