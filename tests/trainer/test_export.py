"""TorchScript export parity and atomic version writes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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

from .test_model import model as ranker
from .test_model import rows


def test_export_round_trips_within_tolerance() -> None:
    model = ranker(tasks=2)
    sample = torch.from_numpy(rows(32, seed=9))
    artifact, diff = export_torchscript(model, sample)
    assert diff <= 1e-5
    reloaded = torch.jit.load(io.BytesIO(artifact))
    for a, b in zip(reloaded(sample), model(sample), strict=True):
        torch.testing.assert_close(a, b)


class ScriptsDifferently(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # type: ignore[attr-defined]
            return x + 1.0
        return x


class ContribScriptsDifferently(Ranker):
    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, contrib, _ = self.explain(features)
        score = torch.sigmoid(logits[:, :1])
        if torch.jit.is_scripting():  # type: ignore[attr-defined]
            contrib = contrib + 1e-3
        return score, contrib


def test_export_refuses_a_broken_script() -> None:
    with pytest.raises(ExportParityError, match="max abs diff"):
        export_torchscript(ScriptsDifferently(), torch.zeros(2, 2))
    broken = ranker()
    broken.__class__ = ContribScriptsDifferently
    with pytest.raises(ExportParityError, match="max abs diff"):
        export_torchscript(broken, torch.from_numpy(rows(8)))


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


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from scoring.trainer import export

real_fsync, calls = os.fsync, []

def fsync(fd):
    calls.append(fd)
    if len(calls) == 2:  # model.pt is on disk, manifest.json is being written: die now
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)

os.fsync = fsync
export.write_version(Path(sys.argv[1]), b"x" * 1_000_000, {"a": 2})
"""


def test_a_writer_killed_mid_write_leaves_no_visible_version(tmp_path: Path) -> None:
    write_version(tmp_path, b"one", {})
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], timeout=60)
    assert result.returncode == -signal.SIGKILL
    assert list_versions(tmp_path) == [1]
    # What is left is a hidden folder: Triton only loads numeric version folders.
    leftovers = [p for p in tmp_path.iterdir() if p.name != "1"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")
    assert (leftovers[0] / "model.pt").exists()
    # The next write cleans it up and numbers on from the last complete version.
    assert write_version(tmp_path, b"two", {}) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_weights_digest_tracks_weights_and_schema() -> None:
    a, b = ranker(), ranker()
    assert weights_digest(a, "s") == weights_digest(b, "s")
    assert weights_digest(a, "s") != weights_digest(a, "t")
    with torch.no_grad():
        b.head.weight[0, 0] += 1.0
    assert weights_digest(a, "s") != weights_digest(b, "s")
