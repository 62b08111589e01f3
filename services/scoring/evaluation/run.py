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
from scoring.evaluation.baselines import BASELINES, fit_baselines
from scoring.evaluation.errors import EvaluationError
from scoring.evaluation.interactions import EventLogMissingError, load_interactions
from scoring.evaluation.metrics import EvalReport, Scorer, ScorerError, evaluate
from scoring.evaluation.protocol import EvalProtocol, Kind, build_tasks
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
    if protocol not in ("loo", "time"):
        raise EvaluationError(f"--protocol: {protocol!r} is not one of loo, time")
    kind: Kind = "loo" if protocol == "loo" else "time"
    try:
        spec = EvalProtocol(kind, negatives, seed, max_users or None, full_catalogue=full_catalogue)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    model = None if baselines_only else _model(settings, target, version, console)
    try:
        with console.status("reading the event log"):
            interactions = load_interactions(settings.feast.repo_path / "data", spec.positives)
        with console.status(f"{kind}: held-out interactions and {negatives} negatives per user"):
            tasks = build_tasks(interactions, spec)
        del interactions
        with console.status(f"fitting the baselines on {len(tasks.train):,} interactions"):
            scorers = fit_baselines(tasks.train)
    except (EventLogMissingError, ValueError) as exc:
        raise EvaluationError(str(exc)) from None
    if model is not None:
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
            report = evaluate(tasks, scorers, BASELINES, step)
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
