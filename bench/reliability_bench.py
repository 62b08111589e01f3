"""Reliability: every fault scenario under a steady load, reconciled, and the attack tests, into
RELIABILITY.md at the repository root.

    make reliability                                   # everything (about 10 minutes)
    .venv/bin/python bench/reliability_bench.py --quick --only redis-restart --no-attacks

Builds a private production-profile stack under a temporary folder (scoring.devtools.fault_stack:
a Redis and a PostgreSQL of its own, which the scenarios stop and restart; a small synthetic
shop, both targets trained for one epoch; Triton and the gateway on free 127.0.0.1 ports), runs
each scenario of scoring.devtools.faults (load before, during and after the fault), and writes
a table per scenario: what was injected, the promise, the figures and the verdict. Then runs the
bad-input and access tests (pytest) and records their results beside their promises.
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from scoring.devtools.fault_stack import FaultStack
from scoring.devtools.faults import SCENARIOS, load_shape, run_all
from scoring.devtools.load import LoadShape
from scoring.devtools.reliability import Phases, ScenarioResult

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "RELIABILITY.md"
ATTACK_TESTS = (
    ROOT / "tests" / "e2e" / "test_bad_input.py",
    ROOT / "tests" / "e2e" / "test_access.py",
)
console = Console(width=140)


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.platform()}"


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


# --- the scenarios ----------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    if value is None:
        return "not recovered"
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


def counted(total: int, parts: dict[str, int]) -> str:
    if not parts:
        return str(total)
    return f"{total} ({', '.join(f'{k} x{v}' for k, v in parts.items())})"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def scenario_section(result: ScenarioResult) -> list[str]:
    rows = [
        ("fault", result.fault),
        ("promised behaviour", result.promise),
        ("requests sent", str(result.sent)),
        ("ok", str(result.ok)),
        ("degraded", counted(result.degraded, result.degradations)),
        ("failed", counted(result.failed, result.errors if result.failed else {})),
        ("over deadline", str(result.over_deadline)),
        ("lost", str(result.lost)),
        ("duplicated", str(result.duplicated)),
        ("recovery time", f"{seconds(result.recovery_s)} (from {result.recovery_from})"),
        ("feedback accepted", f"{result.feedback_accepted} of {result.feedback_sent}"),
        ("verdict", f"**{result.verdict}**"),
    ]
    lines = [f"### {result.name}: {result.verdict}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {cell(value)} |" for name, value in rows]
    lines += ["", "Checks:", ""]
    for check in result.checks:
        mark = "pass" if check.passed else "**FAIL**"
        detail = f": {check.detail}" if check.detail else ""
        lines.append(f"- {mark} {check.name}{cell(detail)}")
    return [*lines, ""]


def summary(results: list[ScenarioResult]) -> list[str]:
    columns = "scenario | verdict | sent | ok | degraded | failed | over deadline | lost | dup."
    lines = [f"| {columns} | recovery |", "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        lines.append(
            f"| [{r.name}](#{r.name}-{r.verdict.lower()}) | {r.verdict} | {r.sent} | {r.ok} | "
            f"{r.degraded} | {r.failed} | {r.over_deadline} | {r.lost} | {r.duplicated} | "
            f"{seconds(r.recovery_s)} |"
        )
    return [*lines, ""]


# --- attacks and bad input ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TestOutcome:
    module: str
    name: str
    promise: str
    counts: Counter[str]


def promises(path: Path) -> tuple[str, dict[str, str]]:
    """A test module's first docstring paragraph, and each test's promise: its docstring's first
    line, else its name as a sentence."""
    tree = ast.parse(path.read_text())
    module = (ast.get_docstring(tree) or "").split("\n\n")[0].replace("\n", " ")
    tests = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test_"
        ):
            doc = ast.get_docstring(node)
            sentence = node.name.removeprefix("test_").replace("_", " ")
            tests[node.name] = (doc.splitlines()[0] if doc else sentence).rstrip(".")
    return module, tests


def run_attack_tests(paths: list[Path]) -> tuple[list[TestOutcome], str]:
    """Runs the test modules with pytest; each test's outcomes (parametrized cases counted)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--junitxml={report}", *map(str, paths)],
            cwd=ROOT, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        took = time.monotonic() - started
        tail = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else ["no output"]
        outcomes: dict[tuple[str, str], Counter[str]] = {}
        if report.exists():
            for case in ET.parse(report).getroot().iter("testcase"):
                module = case.get("classname", "").rsplit(".", 1)[-1]
                name = re.sub(r"\[.*\]$", "", case.get("name", ""))
                kinds = {child.tag for child in case}
                outcome = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
                outcomes.setdefault((module, name), Counter())[outcome] += 1
    rows = []
    for path in paths:
        _, tests = promises(path)
        for name, promise in tests.items():
            counts = outcomes.get((path.stem, name), Counter({"not run": 1}))
            rows.append(TestOutcome(path.stem, name, promise, counts))
    return rows, f"Run with pytest: {tail[0]} ({took:.0f} s)."


def attack_section(paths: list[Path], run: bool) -> list[str]:
    lines = ["## Attacks and bad input", ""]
    present = [p for p in paths if p.exists()]
    for path in paths:
        if path.exists():
            module, _ = promises(path)
            lines.append(f"- `{path.relative_to(ROOT)}`: {module}")
        else:
            lines.append(f"- `{path.relative_to(ROOT)}`: not present in this checkout")
    lines.append("")
    if not present:
        return lines
    if run:
        rows, said = run_attack_tests(present)
    else:
        rows = [
            TestOutcome(p.stem, name, promise, Counter({"not run": 1}))
            for p in present
            for name, promise in promises(p)[1].items()
        ]
        said = "Not run (--no-attacks)."
    lines += [said, "", "| test | promised behaviour | result |", "|---|---|---|"]
    for row in rows:
        counts = row.counts
        cases = sum(counts.values())
        if "not run" in counts:
            result = "not run"
        elif counts["passed"] == cases:
            result = "passed" if cases == 1 else f"passed ({cases} cases)"
        else:
            result = ", ".join(f"{k} {v}" for k, v in counts.most_common())
        lines.append(f"| `{row.module}::{row.name}` | {cell(row.promise)} | {result} |")
    return [*lines, ""]


# --- the report -------------------------------------------------------------------------------


def report(
    results: list[ScenarioResult],
    phases: Phases,
    shape: LoadShape,
    context: dict[str, str],
    attacks: list[str],
) -> str:
    passed = sum(r.passed for r in results)
    lines = [
        "# Reliability",
        "",
        f"Regenerated by `make reliability` (`bench/reliability_bench.py`) on {context['date']}: "
        f"{context['machine']}. Load average (1/5/15 min) {context['load_start']} at the start, "
        f"{context['load_end']} at the end (other work on the machine shares its cores). "
        f"{passed} of {len(results)} scenarios kept their promise.",
        "",
        "## How each scenario runs",
        "",
        "A private production-profile stack (`scoring.devtools.fault_stack`): a Redis and a "
        "PostgreSQL server of its own (the Feast online store and SQL registry, the model "
        "registry), a small synthetic shop with both targets trained for one epoch, Triton (CPU, "
        "python backend) and the gateway, all on 127.0.0.1"
        + (
            "; the served-feature log on a tmpfs of its own (so a full disk is a real ENOSPC)."
            if context["tmpfs"] == "yes"
            else "; no tmpfs could be mounted, so the full disk is simulated by a file in place "
            "of the log's folder."
        ),
        "",
        f"- **Load**: {shape.rate_per_s:g} Rank requests a second (open loop: a slow answer "
        f"does not hold the next request back), {shape.per_request} candidates each, a "
        f"{shape.deadline_s:g} s deadline each (the client's own timeout, checked again on the "
        f"latency), a unique request id each; a click Feedback on the top candidate of every "
        f"{shape.feedback_every}th answer.",
        f"- **Phases**: {phases.before_s:g} s of load before the fault, {phases.during_s:g} s "
        f"with it, {phases.after_s:g} s after it is removed.",
        "- **ok / degraded / failed**: answered OK (`degraded` as the response flags it), or an "
        "error code the promise does not allow (the codes are listed).",
        "- **over deadline**: not answered within its deadline (DEADLINE_EXCEEDED, no answer, "
        "or answered late).",
        "- **lost / duplicated**: after the gateway flushed, every OK answer must be in the "
        "served-feature log (Parquet, a row per candidate) and in the request events (JSON "
        "lines) exactly once, by request id, and every accepted Feedback in the feedback events "
        "exactly once; lost = answered but missing (or partly missing), duplicated = more than "
        "once. Where the promise is a bounded queue (feature-log-queue-full), the log may miss "
        "exactly the rows the gateway counted as dropped, no more.",
        "- **recovery time**: from the moment the fault was removed (the restore returned: "
        "Redis, PostgreSQL or Triton up again) to the answer of the first of 5 requests in a row "
        "answered OK and not degraded (and, where the scenario has one, its own sign of health: "
        "heartbeats in the registry again, the served-feature log's queue empty). A fault that "
        "nothing removes (the killed stub) counts from the fault itself.",
        "- After each scenario the stack must answer normally without a restart; when it does "
        "not, the harness restarts what is needed and the scenario fails.",
        "",
        "## Summary",
        "",
        *summary(results),
        "## Scenarios",
        "",
    ]
    for result in results:
        lines += scenario_section(result)
    lines += attacks
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (2/4/6 s)")
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="these scenarios")
    parser.add_argument("--no-attacks", action="store_true", help="list the attack tests only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    phases = Phases(2.0, 4.0, 6.0) if args.quick else Phases(3.0, 6.0, 10.0)
    context = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_start": load_average(),
    }
    started = time.monotonic()

    def say(message: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:6.0f} s[/] {message}")

    def show(result: ScenarioResult) -> None:
        colour = "green" if result.passed else "red"
        say(
            f"[{colour}]{result.name}: {result.verdict}[/] sent {result.sent}, ok {result.ok}, "
            f"degraded {result.degraded}, failed {result.failed}, over deadline "
            f"{result.over_deadline}, lost {result.lost}, duplicated {result.duplicated}, "
            f"recovery {seconds(result.recovery_s)}"
        )
        for failure in result.failures():
            console.print(f"         [red]{failure}")

    with tempfile.TemporaryDirectory(prefix="scoring-reliability-") as tmp:
        text_cache = ROOT / ".bench" / "text_cache.parquet"
        text_cache.parent.mkdir(exist_ok=True)
        with FaultStack(Path(tmp), say=say) as stack:
            stack.build(ROOT / "features", text_cache=text_cache)
            context["tmpfs"] = "yes" if stack.feature_log_on_tmpfs else "no"
            shape = load_shape(stack)
            results = run_all(stack, args.only, phases, shape, on_result=show)
    say("attack and bad-input tests" if not args.no_attacks else "attack tests listed")
    attacks = attack_section(list(ATTACK_TESTS), run=not args.no_attacks)
    context["load_end"] = load_average()
    args.out.write_text(report(results, phases, shape, context, attacks))
    say(f"wrote {args.out}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
