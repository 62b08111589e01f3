"""TorchScript export parity and atomic version writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scoring.trainer.export import (
    ExportParityError,
    export_torchscript,
    list_versions,
    weights_digest,
    write_version,
)
from scoring.trainer.model import Ranker


def ranker() -> Ranker:
    torch.manual_seed(0)
    return Ranker(np.zeros(4, dtype=np.float32), np.ones(4, dtype=np.float32), (8,))


def test_export_round_trips_within_tolerance() -> None:
    model = ranker()
    sample = torch.randn(32, 4)
    artifact, diff = export_torchscript(model, sample)
    assert diff <= 1e-5
    import io

    reloaded = torch.jit.load(io.BytesIO(artifact))
    torch.testing.assert_close(reloaded(sample), model(sample))


class ScriptsDifferently(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return x + 1.0
        return x


def test_export_refuses_a_broken_script() -> None:
    with pytest.raises(ExportParityError, match="max abs diff"):
        export_torchscript(ScriptsDifferently(), torch.zeros(2, 2))


def test_versions_are_numbered_and_complete(tmp_path: Path) -> None:
    assert write_version(tmp_path, b"one", {"a": 1}) == 1
    assert write_version(tmp_path, b"two", {"a": 2}) == 2
    assert list_versions(tmp_path) == [1, 2]
    assert (tmp_path / "2" / "model.pt").read_bytes() == b"two"
    assert json.loads((tmp_path / "2" / "manifest.json").read_text()) == {"a": 2, "version": 2}


def test_a_crash_mid_write_leaves_no_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_version(tmp_path, b"one", {})

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_version(tmp_path, b"two", {})
    assert list_versions(tmp_path) == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"], "no temp folder left behind"


def test_weights_digest_tracks_weights_and_schema() -> None:
    a, b = ranker(), ranker()
    assert weights_digest(a, "s") == weights_digest(b, "s")
    assert weights_digest(a, "s") != weights_digest(a, "t")
    with torch.no_grad():
        b.mlp[0].weight[0, 0] += 1.0
    assert weights_digest(a, "s") != weights_digest(b, "s")
