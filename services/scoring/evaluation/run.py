"""`scoring evaluate`: the log, the protocol's tasks, the baselines (and a model), the report."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from scoring.core.settings import Settings
from scoring.core.targets import TARGETS, CandidateKind
from scoring.evaluation.baselines import (
    BASELINES,
    BASKET_BASELINES,
    fit_baselines,
    fit_basket_baselines,
)
from scoring.evaluation.basket_protocol import (
    ORACLE,
    build_basket_tasks,
    item_categories,
    oracle_scorer,
)
from scoring.evaluation.errors import EvaluationError
from scoring.evaluation.interactions import EventLogMissingError, load_interactions
from scoring.evaluation.metrics import EvalReport, Scorer, ScorerError, evaluate
from scoring.evaluation.protocol import KINDS, EvalProtocol, EvalTasks, Kind, build_tasks
from scoring.evaluation.report import manifest_entry, report_tables, write_report

MANIFEST = "manifest.json"


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _model(
    settings: Settings, target: str, version: int | None, console: Console
) -> tuple[str, Scorer, Path] | None:
    """The trained version's name, scorer and folder; None (and why, printed) when there is none."""
    model_dir = settings.triton.model_repository / target
    versions = _versions(model_dir)
    if version is not None and version not in versions:
        raise EvaluationError(f"{target}: no version {version} in {model_dir} (have {versions})")
    if not versions:
        console.print(f"no trained {target} in {model_dir}: baselines only")
        return None
    from scoring.evaluation.model_scorer import model_scorer  # may import torch

    chosen = versions[-1] if version is None else version
    scorer = model_scorer(settings, target, chosen)
    if scorer is None:
        console.print(
            f"{target} v{chosen}: no model scorer yet (evaluation.model_scorer); baselines only"
        )
        return None
    return f"{target} v{chosen}", scorer, model_dir / str(chosen)


def _warn_holdout(version_dir: Path, kind: Kind, console: Console) -> None:
    """Says when the version was trained without leaving out what this protocol holds out."""
    manifest = json.loads((version_dir / MANIFEST).read_text())
    holdout = manifest.get("training", {}).get("sources", {}).get("holdout")
    if holdout is not None and holdout != kind:
        console.print(
            f"note: {version_dir.parent.name} v{version_dir.name} was trained with --holdout "
            f"{holdout}, not {kind}: it may have seen held-out interactions (optimistic figures)",
            style="yellow",
            markup=False,
            highlight=False,
        )


def _record(version_dir: Path, kind: str, entry: dict[str, object]) -> Path:
    """Adds the evaluation to the version's manifest (offline_evaluation[kind]), atomically."""
    path = version_dir / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.setdefault("offline_evaluation", {})[kind] = entry
    tmp = version_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def run_evaluation(
    settings: Settings,
    console: Console,
    protocol: str = "loo",
    negatives: int = 100,
    seed: int = 0,
    max_users: int | None = 5000,
    full_catalogue: bool = False,
    out: Path | None = None,
    target: str = "item_ranker",
    version: int | None = None,
    baselines_only: bool = False,
) -> EvalReport:
    """Evaluates the baselines (and the target's trained version, when it has a scorer) on the
    feature repo's event log, prints the table and writes the report.

    `protocol` "basket" (scoring.evaluation.basket_protocol) completes the baskets after a
    time cut, each from its cart: its baselines are BASKET_BASELINES, it reports AUC too, and a
    synthetic log (the build wrote item_oracle.parquet) adds the generator's planted log-odds
    as the `oracle` row.

    Args:
        out: the Markdown report (and a .json beside it); .run/evaluation/<target>-<kind>.md
            by default.
        max_users: None or 0: every user.

    Raises:
        EvaluationError: no event log, a bad option, or nothing to evaluate.
    """
    if target not in TARGETS:
        raise EvaluationError(f"--target: unknown target {target!r}; known: {sorted(TARGETS)}")
    if TARGETS[target].kind is not CandidateKind.ITEM:
        kind_of = TARGETS[target].kind.value
        raise EvaluationError(
            f"--target: {target} ranks {kind_of} candidates; evaluate ranks items"
        )
    if protocol not in KINDS:
        raise EvaluationError(f"--protocol: {protocol!r} is not one of {', '.join(KINDS)}")
    kind: Kind = next(k for k in KINDS if k == protocol)
    if TARGETS[target].cart_feature_service is not None and kind != "basket":
        raise EvaluationError(
            f"--target: {target} completes a cart; evaluate it with --protocol basket"
        )
    try:
        spec = EvalProtocol(kind, negatives, seed, max_users or None, full_catalogue=full_catalogue)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    model = None if baselines_only else _model(settings, target, version, console)
    data_dir = settings.feast.repo_path / "data"
    tasks: EvalTasks
    try:
        with console.status("reading the event log"):
            interactions = load_interactions(data_dir, spec.positives)
        with console.status(f"{kind}: held-out interactions and {negatives} negatives per user"):
            if kind == "basket":
                tasks = build_basket_tasks(interactions, spec, item_categories(data_dir))
            else:
                tasks = build_tasks(interactions, spec)
        del interactions
        with console.status(f"fitting the baselines on {len(tasks.train):,} interactions"):
            if kind == "basket":
                scorers = fit_basket_baselines(tasks.train)
            else:
                scorers = fit_baselines(tasks.train)
    except (EventLogMissingError, ValueError) as exc:
        raise EvaluationError(str(exc)) from None
    if kind == "basket":
        oracle = oracle_scorer(data_dir, tasks.items)
        if oracle is not None:
            scorers[ORACLE] = oracle
    if model is not None:
        _warn_holdout(model[2], kind, console)
        from scoring.evaluation.model_scorer import ModelScorer

        if isinstance(model[1], ModelScorer):  # read the evaluated users' features only
            model[1].only_users(tasks.heldout["user_id"].astype(str))
        scorers[model[0]] = model[1]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bars: dict[str, TaskID] = {}

        def step(name: str, done: int, total: int) -> None:
            if name not in bars:
                bars[name] = progress.add_task(name, total=total)
            progress.update(bars[name], completed=done)

        try:
            report = evaluate(
                tasks, scorers, BASKET_BASELINES if kind == "basket" else BASELINES, step
            )
        except ScorerError as exc:
            raise EvaluationError(str(exc)) from None
    for table in report_tables(report):
        console.print(table)
    for why, n in report.skipped.items():
        console.print(f"skipped {n:,} users: {why}")
    path = out or Path(".run") / "evaluation" / f"{target}-{kind}.md"
    written = write_report(report, path)
    console.print(
        f"wrote {', '.join(str(p) for p in written)} (candidates digest {report.digest[:12]})"
    )
    if model is not None:
        manifest = _record(model[2], kind, manifest_entry(report))
        console.print(f"recorded in {manifest} (offline_evaluation.{kind})")
    return report


__all__ = ["EvaluationError", "run_evaluation"]
