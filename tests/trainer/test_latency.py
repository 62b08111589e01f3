"""`scoring model-latency`: a TorchScript model timed by device and batch size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from scoring.cli import app
from scoring.trainer.latency import measure

from ..cli_output import usage_error

N_FEATURES = 6


class Tiny(nn.Module):
    """The served models' interface: one float32 matrix in, (score, contributions) out."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(N_FEATURES, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.layer(x)
        return torch.sigmoid(out[:, :1]), out[:, 1:]


def write_model(repository: Path, version: int = 1) -> Path:
    """A model version as `scoring train` lays it out: model.pt and the manifest's columns."""
    folder = repository / "item_ranker" / str(version)
    folder.mkdir(parents=True)
    torch.jit.save(torch.jit.script(Tiny()), str(folder / "model.pt"))
    columns = [f"f{i}" for i in range(N_FEATURES)]
    (folder / "manifest.json").write_text(
        json.dumps({"version": version, "model": {"columns": columns}})
    )
    return folder / "model.pt"


def test_measure_gives_one_row_per_device_and_batch_in_order(tmp_path: Path) -> None:
    path = write_model(tmp_path)
    threads = torch.get_num_threads()
    rows = measure(path, N_FEATURES, ["cpu"], batches=(1, 7), repeats=5, warmup=1, threads=3)
    assert torch.get_num_threads() == threads  # the caller's setting is given back
    assert [(r.device, r.batch) for r in rows] == [("cpu", 1), ("cpu", 7)]
    for r in rows:
        assert 0 < r.compute_p50_ms <= r.compute_p99_ms
        assert 0 < r.copy_p50_ms <= r.copy_p99_ms
        assert r.rows_per_s == pytest.approx(r.batch / r.compute_p50_ms * 1000)


def test_a_model_of_another_width_fails_loudly(tmp_path: Path) -> None:
    path = write_model(tmp_path)
    with pytest.raises(RuntimeError):  # the input does not fit the first layer
        measure(path, N_FEATURES + 1, ["cpu"], batches=(2,), repeats=1, warmup=0)


def test_cli_prints_and_writes_the_table(tmp_path: Path) -> None:
    write_model(tmp_path / "repo")
    out = tmp_path / "latency.md"
    env = {"SCORING_TRITON__MODEL_REPOSITORY": str(tmp_path / "repo")}
    args = ["model-latency", "--device", "cpu", "--batch", "1", "--batch", "5", "--repeats", "3"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith(f"item_ranker v1: {N_FEATURES} inputs")
    rows = [ln.split(" | ") for ln in lines if ln.startswith("| cpu |")]
    assert [r[1] for r in rows] == ["1", "5"]
    assert all(r[5].strip(" |") == "1.0x" for r in rows)  # the CPU is its own baseline


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--target", "nope"], "unknown target"),
        (["--version", "9"], "no version 9"),
        (["--batch", "0"], "at least 1"),
        (["--repeats", "0"], "--repeats"),
        (["--device", "gpu0"], "not a torch device"),
    ],
)
def test_cli_refuses_bad_options_by_name(tmp_path: Path, args: list[str], says: str) -> None:
    write_model(tmp_path)
    env = {"SCORING_TRITON__MODEL_REPOSITORY": str(tmp_path)}
    assert says in usage_error(["model-latency", *args], env)


def test_cli_without_a_trained_version_says_to_train(tmp_path: Path) -> None:
    env = {"SCORING_TRITON__MODEL_REPOSITORY": str(tmp_path)}
    text = usage_error(["model-latency"], env)
    assert "no trained version" in text and "scoring train" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_measure_on_the_gpu_next_to_the_cpu(tmp_path: Path) -> None:
    path = write_model(tmp_path)
    rows = measure(path, N_FEATURES, ["cpu", "cuda"], batches=(1, 1000), repeats=5, warmup=2)
    assert [(r.device, r.batch) for r in rows] == [
        ("cpu", 1), ("cpu", 1000), ("cuda", 1), ("cuda", 1000)
    ]  # fmt: skip
    assert all(r.compute_p50_ms > 0 for r in rows)
