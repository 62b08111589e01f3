"""Train and register: each target trained from Feast, its version recorded in the registry."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scoring.core.settings import Settings
from scoring.core.targets import TARGETS
from scoring.workflows.checks import check_targets, open_feature_store

if TYPE_CHECKING:
    from scoring.trainer.implicit import Holdout
    from scoring.trainer.served import ServedLog
    from scoring.trainer.train import TrainConfig

TrainProgress = Callable[[str, str, int, int, str], None]
"""(target, stage, done, total, note): a training step; stages as `train_target` reports them."""


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A target trained and its version registered (stage `registered`).

    Attributes:
        created: False when the data and config matched the newest version, which was kept.
        seconds: training and registration, wall clock.
    """

    target: str
    version: int
    created: bool
    metrics: dict[str, float]
    manifest: dict[str, Any] = field(repr=False)
    seconds: float = 0.0


def train_and_register(
    settings: Settings,
    targets: Sequence[str] | None,
    cfg: TrainConfig,
    *,
    actor: str | None = None,
    on_progress: TrainProgress | None = None,
    holdout: Holdout = "none",
    served: ServedLog | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> list[RegisteredModel]:
    """Trains each target from Feast into the model repository and registers the version.

    Registration is idempotent: an unchanged version (same data and config) is kept, and its
    record stays as it was. Promotion is a separate step (`bootstrap`, `scoring models promote`).

    Args:
        targets: target names; every target when None or empty.
        actor: who registers (audited); "trainer (<$SCORING_ACTOR or user@host>)" by default.
        holdout: leave out what `scoring evaluate --protocol loo|time|basket` holds out.
        served: also (or only) train on what the gateway served and the Feedback on it.
        on_skip: when given, a target with nothing to train on (a shop without campaigns has
            no activity_ranker data, one without bundles no bundle_ranker data, one without
            baskets of 2 or more items no basket_completer data) is skipped and reported as
            (target, why) instead of failing the whole run, as long as one target trains.

    Raises:
        TrainingDataError: a target has nothing to train on (every target, with `on_skip`);
            the message says what is missing.
    """
    from scoring.registry import Registry
    from scoring.registry.promotion import default_actor, register_version
    from scoring.trainer.implicit import TrainingDataError
    from scoring.trainer.train import train_target

    names = check_targets(targets)
    store = open_feature_store(settings)
    models = settings.triton.model_repository
    registered = []
    skipped: TrainingDataError | None = None
    with Registry(settings.registry.url) as registry:
        for name in names:
            started = time.monotonic()
            hook = None if on_progress is None else functools.partial(on_progress, name)
            try:
                result = train_target(
                    store,
                    TARGETS[name],
                    settings.feast.repo_path,
                    models,
                    cfg,
                    on_progress=hook,
                    implicit=settings.training.implicit.get(name),
                    holdout=holdout,
                    served=served,
                    baskets=settings.training.baskets,
                )
            except TrainingDataError as exc:
                if on_skip is None:
                    raise
                skipped = exc
                on_skip(name, str(exc))
                continue
            register_version(
                registry,
                models,
                name,
                result.version,
                result.manifest,
                actor or f"trainer ({default_actor()})",
            )
            registered.append(
                RegisteredModel(
                    name,
                    result.version,
                    result.created,
                    result.metrics,
                    result.manifest,
                    time.monotonic() - started,
                )
            )
    if not registered and skipped is not None:
        raise skipped
    return registered
