"""What `scoring` printed, read as text: rich boxes messages and wraps them at the terminal's
width, so a test reads the output as one line."""

from __future__ import annotations

from typer.testing import CliRunner

from scoring.cli import app


def flat(output: str) -> str:
    """CLI output as one line: box borders and line breaks folded into single spaces."""
    return " ".join(output.replace("│", " ").split())


def usage_error(args: list[str], env: dict[str, str]) -> str:
    """Runs `scoring ARGS`, which must refuse them as a usage error (exit 2), and returns what
    it printed as one line."""
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    return flat(result.output)
