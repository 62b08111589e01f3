"""What every command shares: the consoles, the settings (with library noise filtered), the
translation of a workflow's refusal into a bad parameter, and the tables more than one command
prints."""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

import typer
from rich.console import Console
from rich.table import Table

from scoring.core.settings import Settings
from scoring.workflows import WorkflowError

if TYPE_CHECKING:
    from scoring.api.v1 import scoring_pb2 as pb
    from scoring.registry import VersionRecord

# Wide enough for the tables when output is piped (CI logs, tests).
console = Console(width=None if sys.stdout.isatty() else 120)
# The registry's tables have more columns.
wide_console = Console(width=None if sys.stdout.isatty() else 160)

# Warnings the platform knows to be harmless, as (message regex, category).
HARMLESS_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # The trainer exports TorchScript, which Triton's python backend serves.
    (r".*torch\.jit.* is deprecated", DeprecationWarning),
    # pandas, as Feast turns event timestamps into datetimes (sub-microsecond parts only).
    ("Discarding nonzero nanoseconds", UserWarning),
    ("On demand feature view is an experimental feature", RuntimeWarning),
)
_showwarning = warnings.showwarning


def _show_unless_harmless(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """`warnings.showwarning` minus HARMLESS_WARNINGS. Filters alone do not hold: Feast puts
    `simplefilter("once", DeprecationWarning)` ahead of them when it is imported."""
    for pattern, kind in HARMLESS_WARNINGS:
        if issubclass(category, kind) and re.match(pattern, str(message), re.IGNORECASE):
            return
    _showwarning(message, category, filename, lineno, file, line)


def quiet_libraries() -> None:
    """Keeps library noise out of the CLI's output: the warnings above, and the embedding
    model's weight-loading progress bar (Feast's materialize lines: workflows.data)."""
    for pattern, kind in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=kind)
    warnings.showwarning = _show_unless_harmless
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def load_settings() -> Settings:
    """The settings (environment, .env), with logging set up for a command-line user."""
    from scoring.core.logging import configure_logging

    quiet_libraries()
    settings = Settings()
    configure_logging("WARNING", settings.log_json)
    return settings


def stop_on_sigterm() -> None:
    """SIGTERM (docker stop, kill) stops like Ctrl-C, as KeyboardInterrupt: the servers the
    command started (and their stubs) are stopped on the way out."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@contextmanager
def refusals() -> Iterator[None]:
    """A workflow's refusal becomes a bad parameter: exit 2 with the message, no traceback."""
    try:
        yield
    except WorkflowError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.option) from None


def fmt_metric(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def versions_table(records: list[VersionRecord]) -> Table:
    table = Table(title="model versions")
    for col in ("target", "version", "stage", "traffic", "AUC", "NDCG@10", "schema", "created"):
        table.add_column(col, justify="right" if col in ("version", "AUC", "NDCG@10") else "left")
    style = {"production": "bold green", "canary": "yellow", "shadow": "cyan", "archived": "dim"}
    for r in records:
        traffic = f"{r.traffic_percent:g}%" if r.traffic_percent else ""
        table.add_row(
            r.target,
            str(r.version),
            f"[{style.get(r.stage, '')}]{r.stage}[/]" if r.stage in style else str(r.stage),
            traffic,
            fmt_metric(r.metrics.get("auc")),
            fmt_metric(r.metrics.get("ndcg@10")),
            r.schema_hash[:12],
            f"{r.created_at:%Y-%m-%d %H:%M} by {r.created_by}",
        )
    return table


def print_ranking(title: str, response: pb.RankResponse) -> None:
    flags = " | unknown user: defaults used" if response.unknown_user else ""
    if response.degraded:
        flags += " | degraded: " + "; ".join(response.degradations)
    caption = (
        f"model {response.model_name} v{response.model_version} | features "
        f"{response.feature_service} | request {response.request_id[:8]}{flags}"
    )
    # The caption goes under the table as a line of its own: a table's caption wraps at the
    # table's width, and the flags (unknown user, degraded) must read as one phrase.
    table = Table(title=title)
    for col in ("rank", "candidate", "score", "why (top feature groups, logit)", "note"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for c in response.candidates:
        why = ", ".join(f"{r.group} {r.contribution:+.2f}" for r in c.reasons[:2])
        note = "unknown: defaults used" if c.unknown else ""
        table.add_row(str(c.rank), c.id, f"{c.score:.4f}", why, note)
    for f in response.filtered:
        table.add_row("-", f.id, "-", "", f"filtered: {f.reason}")
    console.print(table)
    console.print(caption, style="dim", highlight=False)
