"""The training loop the in-memory, streamed and data-parallel fits share.

`fit_epochs` runs the epochs with early stopping on the validation click logloss (the best
epoch's weights kept); `step` is one optimiser step on a batch's weighted loss
(`weighted_bce`: click, + purchase with `cfg.purchase_weight`, rows weighed when given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

# stage, done, total, note
ProgressHook = Callable[[str, int, int, str], None]


def optimiser(
    model: nn.Module, cfg: Any, tasks: int, device: torch.device
) -> tuple[torch.optim.Adam, torch.Tensor]:
    """Adam on `model` with cfg's (a TrainConfig's) rate and decay, and the tasks' loss weights."""
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    return optimizer, torch.tensor([1.0, cfg.purchase_weight][:tasks], device=device)


def weighted_bce(
    logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, task_weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted loss to minimise, per-task BCE) of a batch; with `w`, each row weighs w."""
    per_row = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    if w is None:
        per_task = per_row.mean(0)
    else:
        per_task = (per_row * w[:, None]).sum(0) / w.sum().clamp_min(1e-12)
    return (per_task * task_weights).sum(), per_task


def step(
    optimizer: torch.optim.Optimizer,
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    task_weights: torch.Tensor,
) -> float:
    """One optimiser step on the batch's `weighted_bce`; returns its click BCE (row mean)."""
    optimizer.zero_grad()
    loss, per_task = weighted_bce(forward(x), y, w, task_weights)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(per_task[0].detach())


def fit_epochs(
    model: nn.Module,
    cfg: Any,
    train_epoch: Callable[[int], float],
    valid_loss: Callable[[], float] | None,
    on_progress: ProgressHook | None = None,
) -> list[dict[str, float]]:
    """Runs cfg.epochs epochs (`train_epoch(epoch)`: the epoch's train logloss) and returns
    the per-epoch losses.

    With `valid_loss`, each epoch is scored by it; training stops after `cfg.patience` epochs
    without improvement and the best epoch's weights are loaded into `model`.
    """
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for epoch in range(cfg.epochs):
        model.train()
        record = {"epoch": epoch + 1, "train_logloss": train_epoch(epoch)}
        note = f"loss {record['train_logloss']:.4f}"
        if valid_loss is not None:
            record["valid_logloss"] = valid_loss()
            note += f" valid {record['valid_logloss']:.4f}"
            if best is None or record["valid_logloss"] < best[0]:
                best = (record["valid_logloss"], clone_state(model))
        history.append(record)
        if on_progress is not None:
            on_progress("fit", epoch + 1, cfg.epochs, note)
        if best is not None and since_best(history) >= cfg.patience:
            if on_progress is not None:
                on_progress("fit", cfg.epochs, cfg.epochs, f"{note} (early stop)")
            break
    if best is not None:
        model.load_state_dict(best[1])
    return history


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def best_epoch(history: list[dict[str, float]]) -> int:
    """The epoch (1-based) of the lowest validation loss."""
    return int(np.argmin([h["valid_logloss"] for h in history])) + 1


def since_best(history: list[dict[str, float]]) -> int:
    """Epochs since the lowest validation loss."""
    return len(history) - best_epoch(history)
