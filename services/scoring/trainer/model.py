"""The ranking model: normalisation baked in, an MLP, a click probability out.

No `from __future__ import annotations` here: TorchScript reads the annotations at runtime.
"""

import numpy as np
import torch
from torch import nn


class Ranker(nn.Module):
    """Scores raw feature rows: standardises with training statistics, then an MLP + sigmoid.

    The statistics are buffers, so the exported TorchScript takes raw feature values and the
    gateway computes nothing twice.
    """

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: tuple[int, ...] = (64, 32)):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer(
            "inv_std", torch.as_tensor(1.0 / np.maximum(std, 1e-6), dtype=torch.float32)
        )
        layers: list[nn.Module] = []
        width = len(mean)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.mlp((features - self.mean) * self.inv_std)
        return out

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[N, F] raw float32 features -> [N, 1] click probabilities."""
        return torch.sigmoid(self.logits(features))
