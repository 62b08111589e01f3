"""Data-parallel training over several processes: torch.distributed, one rank a process.

`fit_distributed` spawns `cfg.processes` processes (start method "spawn") that rendezvous
over TCP on a free 127.0.0.1 port, backend gloo on the CPU and NCCL on CUDA (rank r on
GPU r). Each rank reads its own row groups of the shards (`BatchReader`, rank::world) with
bounded memory and trains the same model under DistributedDataParallel (gradients averaged
over ranks every step; every rank starts from the parent's weights and the same seed). Each
rank's batch is `batch_size // processes` rows, so a step sees as many rows as a
single-process step.

Early stopping: rank 0 scores the validation shards after each epoch and broadcasts the loss,
so every rank keeps the same best weights and stops at the same epoch. Rank 0 writes the
result (state dict, history, every rank's weight digest) to a file the parent reads back.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn
from torch.nn.parallel import DistributedDataParallel

from scoring.trainer.fit_loop import ProgressHook, clone_state, fit_epochs, optimiser
from scoring.trainer.streaming import (
    BUFFER_GROUPS,
    BatchReader,
    Logits,
    TrainingShards,
    train_epoch,
    valid_logloss,
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's tensors (names and bytes), in key order."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fit_distributed(
    model: Any,
    train: Sequence[TrainingShards],
    cfg: Any,
    valid: Sequence[TrainingShards] | None = None,
    on_progress: ProgressHook | None = None,
    buffer_groups: int = BUFFER_GROUPS,
) -> tuple[Any, list[dict[str, float]], list[str]]:
    """Fits `model` on the shards with `cfg.processes` data-parallel processes.

    Returns:
        The fitted model (on CPU, eval mode), per-epoch losses and each rank's final weight
        digest (equal on every rank when the ranks stayed in step).
    """
    world = int(cfg.processes)
    if world < 1:
        raise ValueError(f"processes: {world}, at least 1")
    cuda = torch.device(cfg.device).type == "cuda"
    if cuda and torch.cuda.device_count() < world:
        raise ValueError(f"{world} processes on {torch.cuda.device_count()} CUDA devices")
    # Every rank must find row groups of its own before a process is started.
    BatchReader(train, max(cfg.batch_size // world, 1), cfg.seed, buffer_groups, 0, world)
    with tempfile.TemporaryDirectory(prefix="scoring-ddp-") as tmp:
        out = Path(tmp) / "result.pt"
        init = f"tcp://127.0.0.1:{free_port()}"
        job = _Job(
            world, init, model.cpu(), list(train), list(valid or []), cfg, buffer_groups, out
        )
        spawn(_run_rank, args=(job,), nprocs=world, join=True)  # type: ignore[no-untyped-call]
        result = torch.load(out, weights_only=True)
    model.load_state_dict(result["state"])
    history: list[dict[str, float]] = result["history"]
    if on_progress is not None:
        for record in history:
            note = f"loss {record['train_logloss']:.4f}"
            if "valid_logloss" in record:
                note += f" valid {record['valid_logloss']:.4f}"
            on_progress("fit", int(record["epoch"]), cfg.epochs, f"{note} ({world} processes)")
    return model.cpu().eval(), history, list(result["digests"])


@dataclass(frozen=True)
class _Job:
    """What every rank process is given (pickled by `spawn`)."""

    world: int
    init: str  # the rendezvous, tcp://127.0.0.1:port
    model: Any
    train: list[TrainingShards]
    valid: list[TrainingShards]
    cfg: Any
    buffer_groups: int
    out: Path  # where rank 0 writes the result


def _run_rank(rank: int, job: _Job) -> None:
    cuda = torch.device(job.cfg.device).type == "cuda"
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.world))
    dist.init_process_group(
        "nccl" if cuda else "gloo", init_method=job.init, rank=rank, world_size=job.world
    )
    try:
        _train_rank(rank, job, cuda)
    finally:
        dist.destroy_process_group()


def _train_rank(rank: int, job: _Job, cuda: bool) -> None:
    world, cfg = job.world, job.cfg
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    model = job.model.to(device)
    ddp = DistributedDataParallel(
        Logits(model),
        device_ids=[rank] if cuda else None,
        forward_sync_buffers=False,  # the buffers (statistics, vocabularies) are fixed
    )
    batch = max(cfg.batch_size // world, 1)
    reader = BatchReader(job.train, batch, cfg.seed, job.buffer_groups, rank, world)
    valid_reader = (
        BatchReader(job.valid, cfg.batch_size, cfg.seed) if job.valid and rank == 0 else None
    )
    optimizer, task_weights = optimiser(model, cfg, reader.tasks, device)

    def epoch_loss(epoch: int) -> float:
        total, rows = train_epoch(reader, epoch, optimizer, ddp, task_weights, device)
        sums = torch.tensor([total, rows], dtype=torch.float64, device=device)
        dist.all_reduce(sums)
        return float(sums[0] / sums[1].clamp_min(1))

    def valid_loss() -> float:
        # Rank 0 scores, every rank gets the loss: the same best epoch and stop everywhere.
        loss_now = torch.zeros(1, dtype=torch.float64, device=device)
        if valid_reader is not None:
            loss_now[0] = valid_logloss(model, valid_reader, device)
        dist.broadcast(loss_now, src=0)
        return float(loss_now[0])

    history = fit_epochs(model, cfg, epoch_loss, valid_loss if job.valid else None)
    state = {k: v.cpu() for k, v in clone_state(model).items()}
    digests: list[Any] = [None] * world
    dist.all_gather_object(digests, state_digest(state))
    if rank == 0:
        torch.save({"state": state, "history": history, "digests": digests}, job.out)
