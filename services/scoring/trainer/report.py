"""A version's report, rendered from its manifest: evaluation table, baselines, contributions."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from scoring.trainer.evaluate import METRICS

# Rows in the order a reader compares them: the model, the ceiling, then the baselines.
METHOD_ORDER = ("model", "oracle", "popularity", "user_top_category")


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def overview_table(manifest: dict[str, Any]) -> Table:
    """Version, contract, data window, rows, code version, seed and the reproduce command."""
    t = manifest["training"]
    table = Table(title=f"{manifest['target']} version {manifest.get('version', '?')}")
    table.add_column("field")
    table.add_column("value")
    contract = manifest["contract"]
    rows = [
        ("feature service", f"{contract['feature_service']} (schema {contract['schema_hash']})"),
        ("model", manifest["model"]["architecture"]),
        ("outputs", ", ".join(manifest["model"]["outputs"])),
        ("train window", " .. ".join(t["train_window"])),
        ("test window", " .. ".join(t["test_window"])),
        ("rows (train / test)", f"{t['train_rows']:,} / {t['test_rows']:,}"),
        ("code version", manifest["code_version"]),
        ("seed / device", f"{t['config']['seed']} / {t['config']['device']}"),
        ("training time", f"{t['seconds']:.1f}s"),
        ("parity (eager vs TorchScript)", f"{manifest['parity_max_abs_diff']:.2g}"),
        ("reproduce", t["reproduce"]),
    ]
    for field, value in rows:
        table.add_row(field, value)
    return table


def evaluation_table(manifest: dict[str, Any]) -> Table:
    """Every method's metrics on the test window (the time split's latest events)."""
    ev = manifest["evaluation"]
    table = Table(
        title="test-window evaluation",
        caption=(
            f"ranking per {ev['ranking_unit']}; precision/recall/F1 at threshold "
            f"{ev['threshold']:.3f} ({ev['threshold_rule']})"
        ),
    )
    table.add_column("method")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    methods = [m for m in METHOD_ORDER if m in ev["table"]]
    methods += sorted(set(ev["table"]) - set(methods))
    for method in methods:
        row = ev["table"][method]
        table.add_row(method, *(_fmt(row.get(metric, float("nan"))) for metric in METRICS))
    return table


def contributions_table(manifest: dict[str, Any]) -> Table:
    """Mean |click-logit contribution| of each feature group on the test window."""
    means = manifest["contributions"]["mean_abs_on_test"]
    baseline = manifest["model"]["contrib_baseline_logit"]
    table = Table(
        title="feature groups (contrib__1)",
        caption=f"click logit = {baseline:.4f} + sum of the groups' contributions",
    )
    table.add_column("group")
    table.add_column("mean |contribution|", justify="right")
    for group, value in sorted(means.items(), key=lambda kv: -kv[1]):
        table.add_row(group, f"{value:.4f}")
    return table


def report_tables(manifest: dict[str, Any]) -> list[Table]:
    """All tables of `scoring report`."""
    return [overview_table(manifest), evaluation_table(manifest), contributions_table(manifest)]
