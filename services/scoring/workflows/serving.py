"""What serves: promotion on the configured settings, the first deploy's bootstrap, Triton
synced with the registry, and Triton + the gateway run as child processes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from scoring.core.access import AccessError, Actor
from scoring.core.settings import Settings
from scoring.core.targets import TARGETS
from scoring.workflows.checks import WorkflowError, open_feature_store

if TYPE_CHECKING:
    from scoring.gateway.process import GatewayProcess
    from scoring.registry import Registry
    from scoring.registry.promotion import Promoter
    from scoring.triton.server import TritonServer

Say = Callable[[str], None]
"""A progress message for a person (the CLI prints it)."""


def registry_actor(
    settings: Settings, token: str | None = None, local_name: str | None = None
) -> Actor:
    """Who may change the registry: the admin caller whose token is `token` (default
    SCORING_AUTH__ADMIN_TOKEN). Without one and with auth not required, `local_name`
    ($SCORING_ACTOR or user@host by default) marked as not authenticated.

    Raises:
        WorkflowError: auth is required and there is no admin token, or the token is not an
            admin caller's (option --token). Check before opening the registry: a refusal
            writes nothing.
    """
    from scoring.core.access import registry_actor as resolve
    from scoring.registry.promotion import default_actor

    auth = settings.auth
    if token is None and auth.admin_token is not None:
        token = auth.admin_token.get_secret_value()
    try:
        return resolve(auth, token, local_name or default_actor())
    except AccessError as exc:
        raise WorkflowError(str(exc), option="--token") from None


def build_promoter(
    settings: Settings,
    registry: Registry,
    actor: Actor | str | None = None,
    *,
    registry_only: bool = False,
    say: Say | None = None,
    store: Any | None = None,
) -> Promoter:
    """A promoter on the configured feature store (live schemas) and, unless `registry_only`,
    Triton.

    Args:
        actor: who makes the changes: an Actor from `registry_actor`; by default the one the
            settings give (SCORING_AUTH__ADMIN_TOKEN). A plain name is taken as it is while
            auth is not required, and refused when it is (it proves nothing).
        store: the feature store to read live schemas from, where the caller holds one open
            (the console); the configured one is opened otherwise.

    Raises:
        WorkflowError: no admin identity while auth is required.
    """
    from scoring.core.contract import contract_from_store
    from scoring.registry.promotion import GateRefused, Promoter
    from scoring.triton.control import TritonControl

    if actor is None:
        actor = registry_actor(settings)
    elif isinstance(actor, str):
        if settings.auth.required:
            raise WorkflowError(
                f"registry changes need an admin identity (auth is required), not a name "
                f"({actor!r}): pass --token or set SCORING_AUTH__ADMIN_TOKEN",
                option="--token",
            )
        actor = Actor(actor, "none")
    if store is None:
        store = open_feature_store(settings)

    def live_schema(service: str) -> str:
        try:
            return contract_from_store(store, service).schema_hash
        except Exception as exc:  # not registered, or not a contract the gateway can feed
            raise GateRefused(
                f"the live feature service {service} cannot be read from the feature registry "
                f"({exc}): apply the feature repository (scoring features apply) or retrain"
            ) from None

    return Promoter(
        settings,
        registry,
        live_schema,
        None if registry_only else TritonControl(settings.triton),
        actor.name,
        say=say or (lambda message: None),
        actor_auth=actor.audit(),
    )


@dataclass(frozen=True, slots=True)
class BootstrapOutcome:
    """What `bootstrap` did for one target.

    Attributes:
        status: `no version` (nothing registered), `in production` (left as it is),
            `promoted`, or `refused` (a gate said no: `detail`).
        version: the production version, or the one promoted or refused.
    """

    target: str
    status: Literal["no version", "in production", "promoted", "refused"]
    version: int | None = None
    detail: str = ""


def bootstrap(
    settings: Settings,
    registry: Registry,
    actor: Actor | str | None = None,
    *,
    newest: bool = False,
    say: Say | None = None,
    on_outcome: Callable[[BootstrapOutcome], None] | None = None,
) -> list[BootstrapOutcome]:
    """Promotes, for each target without a production version (with `newest`: whose production
    version is not the newest), its newest registered version through the gates.

    Registry only: Triton loads the production versions when it starts (`sync_triton`).

    Args:
        actor: who promotes (see `build_promoter`).
        say: the promoter's progress messages.
        on_outcome: called with each target's outcome as soon as it is known.
    """
    from scoring.registry.promotion import GateRefused

    promoter = build_promoter(settings, registry, actor, registry_only=True, say=say)
    outcomes = []
    for name in TARGETS:
        versions = registry.versions(name)
        routing = registry.routing().targets.get(name)
        current = routing.production if routing else None
        if not versions:
            outcome = BootstrapOutcome(name, "no version")
        elif current is not None and (not newest or current.version == versions[-1].version):
            outcome = BootstrapOutcome(name, "in production", current.version)
        else:
            latest = versions[-1].version
            try:
                promoter.promote(name, latest, reason="newest version" if current else "first")
                outcome = BootstrapOutcome(name, "promoted", latest)
            except GateRefused as exc:
                outcome = BootstrapOutcome(name, "refused", latest, str(exc))
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def sync_triton(settings: Settings, registry: Registry | None = None) -> dict[str, list[int]]:
    """Loads into a running Triton exactly the versions the registry serves, per target, and
    warms them up; returns them (an empty list: none in the registry, Triton keeps its own).

    Args:
        registry: an open registry; the configured one is opened (and closed) when None.
    """
    from scoring.registry import Registry
    from scoring.registry.promotion import sync
    from scoring.triton.control import TritonControl

    control = TritonControl(settings.triton)
    with contextlib.ExitStack() as stack:
        if registry is None:
            registry = stack.enter_context(Registry(settings.registry.url))
        return {name: sorted(sync(registry, control, name)) for name in TARGETS}


@dataclass
class Servers:
    """Triton (serving the registry's versions) and the gateway, as the demo runs them, with
    their logs under `run_dir`. `stop` ends both and is safe at any point."""

    settings: Settings
    run_dir: Path
    triton: TritonServer = field(init=False)
    gateway: GatewayProcess = field(init=False)

    def __post_init__(self) -> None:
        from scoring.gateway.process import GatewayProcess
        from scoring.triton.server import TritonServer

        logs = self.run_dir
        # The models are the targets trained by then: `start_triton` sets them.
        self.triton = TritonServer(self.settings.triton, [], log_path=logs / "triton.log")
        self.gateway = GatewayProcess(self.settings, log_path=logs / "gateway.log")

    def start_triton(self) -> dict[str, list[int]]:
        """Starts Triton, waits until it is ready and loads the registry's versions."""
        from scoring.triton.server import servable_models

        # The targets trained by now (a shop without campaigns has no activity_ranker).
        self.triton.models = servable_models(self.settings.triton.model_repository, TARGETS)
        self.triton.start()
        self.triton.wait_ready()
        return sync_triton(self.settings)

    def start_gateway(self) -> str:
        """Starts the gateway and waits until it reports SERVING; returns its address."""
        self.gateway.start()
        self.gateway.wait_ready()
        return self.gateway.address

    def wait(self, stop: threading.Event, poll_s: float = 0.5) -> str | None:
        """Blocks while both run and `stop` is not set (a signal handler sets it); returns the
        name of the one that stopped, or None when `stop` was set."""
        while not stop.is_set():
            for name, proc in (("triton", self.triton.process), ("gateway", self.gateway.process)):
                if proc is None or proc.poll() is not None:
                    return name
            stop.wait(poll_s)
        return None

    def stop(self) -> None:
        self.gateway.stop()
        self.triton.stop()
