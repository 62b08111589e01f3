"""The ranking model: DCN-v2 with multi-task heads and exact per-group logit contributions.

Everything a served model needs is inside the module (and so inside the TorchScript file):
numeric statistics (optional signed log1p, mean, std, clipping), categorical vocabularies with
hash buckets for unseen values, and the explanation groups. The gateway sends raw feature
values in contract order.

Contributions (`contrib__1`): DeepLIFT-style attribution against a fixed reference input (numeric
features at their training mean, categorical embeddings at their training-frequency-weighted
mean), propagated exactly through the network: linear maps split linearly, ReLU with the
rescale rule, and the cross layers' products with the Shapley rule for two factors
(d(ab) = (a+a0)/2 db + (b+b0)/2 da). So, per candidate,
    click logit = baseline logit + sum over groups of contrib
up to float rounding. It costs about G forward passes of a small network: cheap at serving.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scoring.trainer.layout import Column

# Which numeric columns get a signed log1p (ModelConfig.log_numeric); the first is the default.
LOG_NUMERIC_RULES = ("nonnegative", "skewed")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Architecture hyper-parameters (recorded in the manifest via TrainConfig)."""

    embedding_dim: int = 8
    cross_layers: int = 2
    # A low-rank cross (4): fewer pairwise terms to overfit on tens of thousands of rows.
    cross_rank: int = 4
    hidden: tuple[int, ...] = (64, 32)
    oov_buckets: int = 16
    oov_rate: float = 0.02
    clip: float = 8.0
    # Which numeric columns get a signed log1p before normalisation: "nonnegative" (counts,
    # prices, ratios: every column without negative values) or "skewed" (only those with a
    # skewness above 2, the rule before stop 13).
    log_numeric: str = LOG_NUMERIC_RULES[0]


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """Statistics and vocabularies fitted on the training matrix."""

    groups: tuple[str, ...]
    numeric: np.ndarray
    numeric_group: np.ndarray
    log1p: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    categorical: np.ndarray
    categorical_group: np.ndarray
    vocabs: tuple[np.ndarray, ...]


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.sign(x) * np.log1p(np.abs(x)))


def fit_preprocessing(
    x: np.ndarray,
    columns: tuple[Column, ...],
    groups: tuple[str, ...],
    max_vocab: int = 1000,
    min_count: int = 3,
    log_numeric: str = LOG_NUMERIC_RULES[0],
) -> Preprocessing:
    """Fits numeric statistics and categorical vocabularies on training rows `x`.

    Numeric columns without negative values get a signed log1p first (`log_numeric` =
    "nonnegative"), or only the heavy-tailed ones among them, skewness > 2 ("skewed").
    A categorical vocabulary keeps values seen at least `min_count` times (at most `max_vocab`,
    most frequent first); the rest go to hash buckets, as unseen values do at serving.
    """
    index = {g: i for i, g in enumerate(groups)}
    num = np.array([i for i, c in enumerate(columns) if not c.categorical], dtype=np.int64)
    cat = np.array([i for i, c in enumerate(columns) if c.categorical], dtype=np.int64)
    if log_numeric not in LOG_NUMERIC_RULES:
        raise ValueError(f"log_numeric: {log_numeric!r} is not one of {LOG_NUMERIC_RULES}")
    xn = x[:, num].astype(np.float64)
    log1p = xn.min(axis=0, initial=0.0) >= 0
    if log_numeric == "skewed":
        skew = ((xn - xn.mean(axis=0)) ** 3).mean(axis=0) / np.maximum(xn.std(axis=0), 1e-12) ** 3
        log1p &= skew > 2.0
    xn = np.where(log1p, _signed_log1p(xn), xn)
    vocabs = []
    for j in cat:
        values, counts = np.unique(np.round(x[:, j]).astype(np.int64), return_counts=True)
        keep = values[np.argsort(-counts, kind="stable")][:max_vocab][
            np.sort(counts)[::-1][:max_vocab] >= min_count
        ]
        vocabs.append(np.sort(keep) if keep.size else values[:1])
    return Preprocessing(
        groups=groups,
        numeric=num,
        numeric_group=np.array([index[columns[i].group] for i in num], dtype=np.int64),
        log1p=log1p,
        mean=xn.mean(axis=0),
        std=np.maximum(xn.std(axis=0), 1e-6),
        categorical=cat,
        categorical_group=np.array([index[columns[i].group] for i in cat], dtype=np.int64),
        vocabs=tuple(vocabs),
    )


class CrossLayer(nn.Module):
    """DCN-v2 cross layer x_{l+1} = x0 * (W x_l + b) + x_l, with W low-rank (U V)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.up(self.down(x))
        return out

    def linear_part(self, c: torch.Tensor) -> torch.Tensor:
        """W c without the bias: how a contribution tensor maps through the layer."""
        return F.linear(F.linear(c, self.down.weight), self.up.weight)


class Ranker(nn.Module):
    """DCN-v2 (parallel cross and deep towers) over [normalised numerics, embeddings].

    forward: features [N, F] raw float32 -> (score [N, 1] click probability,
    contrib [N, G] per-group logit contributions).
    """

    num_index: torch.Tensor
    num_log: torch.Tensor
    num_mean: torch.Tensor
    num_inv_std: torch.Tensor
    cat_index: torch.Tensor
    vocab: torch.Tensor
    base_weights: torch.Tensor
    group_mask: torch.Tensor
    vocab_starts: list[int]
    vocab_sizes: list[int]
    row_offsets: list[int]

    def __init__(self, prep: Preprocessing, cfg: ModelConfig, tasks: int = 1) -> None:
        super().__init__()
        self.groups = list(prep.groups)
        self.tasks = tasks
        self.oov_buckets = cfg.oov_buckets
        self.oov_rate = cfg.oov_rate
        self.clip = cfg.clip
        self.register_buffer("num_index", torch.as_tensor(prep.numeric, dtype=torch.long))
        self.register_buffer("num_log", torch.as_tensor(prep.log1p, dtype=torch.bool))
        self.register_buffer("num_mean", torch.as_tensor(prep.mean, dtype=torch.float32))
        self.register_buffer("num_inv_std", torch.as_tensor(1.0 / prep.std, dtype=torch.float32))
        self.register_buffer("cat_index", torch.as_tensor(prep.categorical, dtype=torch.long))
        sizes = [len(v) for v in prep.vocabs]
        self.vocab_sizes = sizes
        self.vocab_starts = [int(s) for s in np.cumsum([0, *sizes[:-1]])] if sizes else []
        rows = [s + cfg.oov_buckets for s in sizes]
        self.row_offsets = [int(s) for s in np.cumsum([0, *rows[:-1]])] if rows else []
        vocab = np.concatenate(prep.vocabs) if prep.vocabs else np.zeros(0)
        self.register_buffer("vocab", torch.as_tensor(vocab, dtype=torch.long))
        total_rows = max(sum(rows), 1)
        self.embedding = nn.Embedding(total_rows, cfg.embedding_dim)
        nn.init.normal_(self.embedding.weight, std=0.05)
        # Row frequencies per categorical feature (set by set_reference), for the reference.
        self.register_buffer("base_weights", torch.zeros(len(sizes), total_rows))

        n_num, n_cat, d = len(prep.numeric), len(prep.categorical), cfg.embedding_dim
        dim = n_num + n_cat * d
        position_group = np.concatenate(
            [prep.numeric_group, np.repeat(prep.categorical_group, d)]
        ).astype(np.int64)
        mask = np.zeros((len(prep.groups), dim), dtype=np.float32)
        mask[position_group, np.arange(dim)] = 1.0
        self.register_buffer("group_mask", torch.from_numpy(mask))

        self.cross = nn.ModuleList(
            [CrossLayer(dim, min(cfg.cross_rank, dim)) for _ in range(cfg.cross_layers)]
        )
        deep: list[nn.Module] = []
        width = dim
        for h in cfg.hidden:
            deep.append(nn.Linear(width, h))
            width = h
        self.deep = nn.ModuleList(deep)
        self.head = nn.Linear(dim + width, tasks)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding rows [N, C]: vocabulary index, else a hash bucket of the raw value."""
        values = torch.round(x.index_select(1, self.cat_index)).long()
        out: list[torch.Tensor] = []
        for c in range(len(self.vocab_sizes)):
            start, size = self.vocab_starts[c], self.vocab_sizes[c]
            vocab = self.vocab[start : start + size]
            v = values[:, c].contiguous()
            pos = torch.searchsorted(vocab, v).clamp(max=size - 1)
            # A fixed integer hash (literals: TorchScript reads no globals).
            bucket = torch.remainder(torch.remainder(v, 1000003) * 40503 + 17, self.oov_buckets)
            oov = size + bucket
            local = torch.where(vocab[pos] == v, pos, oov)
            if self.training and self.oov_rate > 0:
                # Train the hash buckets too: unseen values must not hit untrained rows.
                local = torch.where(
                    torch.rand(v.shape, device=v.device) < self.oov_rate, oov, local
                )
            out.append(local + self.row_offsets[c])
        if not out:
            return torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device)
        return torch.stack(out, 1)

    def represent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network input x0 [N, D] and the reference input [D]."""
        num = x.index_select(1, self.num_index)
        num = torch.where(self.num_log, torch.sign(num) * torch.log1p(num.abs()), num)
        num = ((num - self.num_mean) * self.num_inv_std).clamp(-self.clip, self.clip)
        emb = self.embedding(self._rows(x)).flatten(1)
        base_emb = (self.base_weights @ self.embedding.weight).flatten()
        base_num = torch.zeros_like(self.num_mean)
        return torch.cat([num, emb], 1), torch.cat([base_num, base_emb])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[N, F] raw features -> [N, tasks] logits (click first). The training path."""
        x0, _ = self.represent(x)
        xl = x0
        for layer in self.cross:
            xl = x0 * layer(xl) + xl
        h = x0
        for lin in self.deep:
            h = torch.relu(lin(h))
        out: torch.Tensor = self.head(torch.cat([xl, h], 1))
        return out

    def explain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits [N, tasks], click-logit contributions [N, G] and the reference logit [1]."""
        x0, b0 = self.represent(x)
        c0 = (x0 - b0).unsqueeze(1) * self.group_mask.unsqueeze(0)
        xl, bl, cl = x0, b0, c0
        for layer in self.cross:
            z, zb, cz = layer(xl), layer(bl), layer.linear_part(cl)  # type: ignore[operator]
            prod = 0.5 * (x0 + b0).unsqueeze(1) * cz + 0.5 * (z + zb).unsqueeze(1) * c0
            xl, bl, cl = x0 * z + xl, b0 * zb + bl, prod + cl
        h, hb, ch = x0, b0, c0
        for lin in self.deep:
            z, zb = lin(h), lin(hb)
            cz = F.linear(ch, lin.weight)  # type: ignore[arg-type]
            h, hb = torch.relu(z), torch.relu(zb)
            dz = z - zb
            moved = dz.abs() > 1e-6
            mult = torch.where(
                moved, (h - hb) / torch.where(moved, dz, torch.ones_like(dz)), (z > 0).float()
            )
            ch = cz * mult.unsqueeze(1)
        logits = self.head(torch.cat([xl, h], 1))
        base = self.head(torch.cat([bl, hb]))[:1]
        contrib = F.linear(torch.cat([cl, ch], 2), self.head.weight[:1]).squeeze(2)
        return logits, contrib, base

    @torch.jit.unused
    def set_reference(self, x: torch.Tensor) -> None:
        """Sets the categorical reference to the embedding mean weighted by training frequency."""
        with torch.no_grad():
            rows = self._rows(x)
            for c in range(rows.shape[1]):
                counts = torch.bincount(rows[:, c], minlength=self.base_weights.shape[1])
                self.base_weights[c] = counts.float() / max(int(counts.sum()), 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, F] raw float32 -> (score__0 [N, 1] click probability, contrib__1 [N, G])."""
        logits, contrib, _ = self.explain(features)
        return torch.sigmoid(logits[:, :1]), contrib


class MultiTaskRanker(Ranker):
    """A Ranker with a purchase head: forward adds purchase__2 [N, 1], P(purchase)."""

    def forward(  # type: ignore[override]
        self, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, contrib, _ = self.explain(features)
        return torch.sigmoid(logits[:, :1]), contrib, torch.sigmoid(logits[:, 1:2])


def build_model(prep: Preprocessing, cfg: ModelConfig, tasks: int) -> Ranker:
    """A click-only Ranker, or a MultiTaskRanker when there is a purchase label."""
    return MultiTaskRanker(prep, cfg, tasks) if tasks > 1 else Ranker(prep, cfg, 1)
