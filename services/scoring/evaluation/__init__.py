"""Offline evaluation on a shop's own log: protocols, metrics, baselines and reports.

Only the torch-free core is re-exported here; `scoring.evaluation.run` (the CLI's entry) and
`scoring.evaluation.model_scorer` (the trained model's scorer) are imported where they are used,
so that the trainer can import this package without a cycle.
"""

from scoring.evaluation.interactions import (
    EventLogMissingError,
    PositiveEvents,
    load_interactions,
)
from scoring.evaluation.metrics import (
    METRICS,
    EvalReport,
    Scorer,
    evaluate,
    ranking_metrics,
    ranks_from_scores,
)
from scoring.evaluation.protocol import EvalProtocol, EvalTasks, build_tasks

__all__ = [
    "METRICS",
    "EvalProtocol",
    "EvalReport",
    "EvalTasks",
    "EventLogMissingError",
    "PositiveEvents",
    "Scorer",
    "build_tasks",
    "evaluate",
    "load_interactions",
    "ranking_metrics",
    "ranks_from_scores",
]
