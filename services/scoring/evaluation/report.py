"""An evaluation's report: a rich table, a Markdown + JSON file, and a model manifest's entry.

Methods are rows and metrics columns; in each column the best baseline's value carries a `*`,
and each model gets a row with its relative lift over the best baseline of that column.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from scoring.evaluation.metrics import AUC, METRICS, EvalReport

LABELS = {
    "hr@10": "HR@10",
    "ndcg@10": "NDCG@10",
    "recall@20": "Recall@20",
    "mrr": "MRR",
    AUC: "AUC",
}

BASKET_PROTOCOL = (
    "Protocol: baskets are a user's purchases of one order (`order_id`; without one, of one "
    "UTC day). The cut is the time before which `1 - test_fraction` of the baskets of 2 or "
    "more distinct items fall; each user's first such basket at or after it is a test "
    "basket: one of its items (drawn by the seed) is held out, the others are the cart (the "
    "request's cart fields). Only interactions before the cut are training data. The "
    "held-out item is ranked among negatives drawn uniformly from the training catalogue, "
    "none of them an item of the basket (an item the user bought at another time may be "
    "one). AUC: per test basket, the share of negatives scored below the held-out item "
    "(ties half), averaged. `co-occurrence with the cart`: the summed basket co-occurrence "
    "(cosine) of the candidate with the cart's items; `oracle` (synthetic logs): the "
    "generator's planted log-odds of adding the item to the cart."
)


def metric_names(report: EvalReport) -> tuple[str, ...]:
    """The report's metric columns: METRICS, and AUC where the protocol computed it."""
    has_auc = any(AUC in values for values in report.metrics.values())
    return (*METRICS, AUC) if has_auc else METRICS


def best_baselines(
    report: EvalReport, metrics: dict[str, dict[str, float]] | None = None
) -> dict[str, tuple[str, float]]:
    """Metric -> (the baseline with the highest value, that value)."""
    metrics = report.metrics if metrics is None else metrics
    best: dict[str, tuple[str, float]] = {}
    for metric in metric_names(report):
        values = [(name, metrics[name][metric]) for name in report.baselines if name in metrics]
        values = [(n, v) for n, v in values if not math.isnan(v)]
        if values:
            best[metric] = max(values, key=lambda nv: nv[1])
    return best


def lifts(
    report: EvalReport, metrics: dict[str, dict[str, float]] | None = None
) -> dict[str, dict[str, float]]:
    """Model -> metric -> relative lift over the best baseline (0.1 = 10% better)."""
    metrics = report.metrics if metrics is None else metrics
    best = best_baselines(report, metrics)
    out: dict[str, dict[str, float]] = {}
    for name in metrics:
        if name in report.baselines:
            continue
        out[name] = {
            m: (metrics[name][m] / b - 1.0) if b > 0 else float("nan")
            for m, (_, b) in best.items()
            if m in metrics[name]
        }
    return out


def _title(report: EvalReport) -> str:
    p = report.protocol
    if p["kind"] == "basket":
        return (
            f"offline evaluation, complete the basket (cut {report.data.get('cut')}): "
            f"{report.users:,} test baskets, one item held out (the rest the cart) among "
            f"{p['negatives']} sampled negatives (seed {p['seed']})"
        )
    kind = "leave-one-out" if p["kind"] == "loo" else f"time split (cut {report.data.get('cut')})"
    return (
        f"offline evaluation, {kind}: {report.users:,} users, held-out item among "
        f"{p['negatives']} sampled negatives (seed {p['seed']})"
    )


def _rows(report: EvalReport, metrics: dict[str, dict[str, float]]) -> list[tuple[str, list[str]]]:
    best = best_baselines(report, metrics)
    names = metric_names(report)
    rows: list[tuple[str, list[str]]] = []
    for name, values in metrics.items():
        cells = []
        for m in names:
            mark = "*" if name in report.baselines and best.get(m, ("", 0.0))[0] == name else ""
            cells.append(f"{values.get(m, math.nan):.4f}{mark}")
        rows.append((name if name in report.baselines else f"{name} (model)", cells))
    for name, lift in lifts(report, metrics).items():
        rows.append(
            (f"{name}: lift vs best baseline", [f"{lift.get(m, math.nan):+.1%}" for m in names])
        )
    return rows


def report_tables(report: EvalReport) -> list[Table]:
    """The sampled ranking's table, and the full catalogue's when it was computed."""
    parts = [(_title(report), report.metrics)]
    if report.full_catalogue is not None:
        title = f"the same over the full catalogue ({report.data['catalogue_items']:,} items)"
        parts.append((title, report.full_catalogue))
    tables = []
    for title, metrics in parts:
        table = Table(title=title, caption="* best baseline in the column; ties rank pessimistic")
        table.add_column("method")
        for m in metric_names(report):
            table.add_column(LABELS[m], justify="right")
        for name, cells in _rows(report, metrics):
            table.add_row(name, *cells)
        tables.append(table)
    return tables


def markdown(report: EvalReport) -> str:
    """The report as Markdown: protocol, tables, skipped users and the candidates' digest."""
    p = report.protocol
    lines = [f"# {_title(report)}", ""]
    if p["kind"] == "basket":
        lines += [BASKET_PROTOCOL, ""]
    lines.append(f"- protocol: `{json.dumps(p, sort_keys=True)}`")
    lines.append(f"- candidates digest (sha256): `{report.digest}`")
    for key, value in report.data.items():
        lines.append(f"- {key}: {value}")
    for why, n in report.skipped.items():
        lines.append(f"- skipped: {n:,} users ({why})")
    parts = [("Sampled negatives", report.metrics)]
    if report.full_catalogue is not None:
        parts.append(("Full catalogue", report.full_catalogue))
    for heading, metrics in parts:
        lines += ["", f"## {heading}", ""]
        names = metric_names(report)
        lines.append("| method | " + " | ".join(LABELS[m] for m in names) + " |")
        lines.append("|---|" + "---:|" * len(names))
        for name, cells in _rows(report, metrics):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "`*`: the best baseline in the column. Ties rank the held-out item last."]
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """JSON-safe: NaN becomes null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def manifest_entry(report: EvalReport) -> dict[str, Any]:
    """What a model version's manifest keeps (`manifest["offline_evaluation"][kind]`): the
    report, the best baseline per metric and each model's lift over it (NaN as null)."""
    best = best_baselines(report)
    entry = {
        **report.to_dict(),
        "best_baseline": {m: {"method": n, "value": v} for m, (n, v) in best.items()},
        "lift": lifts(report),
    }
    if report.full_catalogue is not None:
        entry["full_catalogue_lift"] = lifts(report, report.full_catalogue)
    return dict(_plain(entry))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_report(report: EvalReport, path: Path) -> list[Path]:
    """Writes `path` (Markdown) and the same name with .json (manifest_entry); returns both."""
    json_path = path.with_suffix(".json")
    if json_path == path:
        path = path.with_suffix(".md")
    _write(path, markdown(report))
    _write(json_path, json.dumps(manifest_entry(report), indent=2, sort_keys=True) + "\n")
    return [path, json_path]


__all__ = [
    "best_baselines",
    "lifts",
    "manifest_entry",
    "markdown",
    "report_tables",
    "write_report",
]
