"""The committed gRPC code is what `make protos` generates from protos/ today."""

from __future__ import annotations

from pathlib import Path

from scoring.devtools.codegen import generate

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path: Path) -> None:
    generated = generate(ROOT / "protos", tmp_path)
    assert generated, "protoc produced nothing"
    for path in generated:
        committed = ROOT / "services" / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} missing: run `make protos`"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `make protos`"
