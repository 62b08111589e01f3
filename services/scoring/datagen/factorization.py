"""Implicit-feedback matrix factorisation (ALS with conjugate-gradient steps), numpy + scipy.

The model of Hu, Koren and Volinsky (2008): each observed (user, item) pair has a preference
of 1 and a confidence c = 1 + alpha * log1p(r), where r is the pair's weighted interaction
count; every unobserved pair has preference 0 and confidence 1. Users and items get `factors`
dimensional vectors minimising sum c (p - x_u . y_i)^2 + reg (|x|^2 + |y|^2), by alternating
least squares. Each half step solves every user's (item's) normal equations at once with a few
conjugate-gradient iterations started from the current vectors (Takacs, Pilaszy and Tikk, 2011,
as the `implicit` library does), so a step costs O(nnz * factors) vectorized operations and no
per-user Python loop. `fit` can start from an earlier fit's vectors (warm start): the weekly
refits of scoring.datagen.collaborative then need a few iterations each. A new entity starts
from vectors derived from its code (`initial_vectors`), so a fit depends on the interactions it
is given and nothing else (not on which other users or items the log holds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True, slots=True)
class ALSConfig:
    """Hyper-parameters (defaults: common choices for implicit ALS, not tuned to a data set)."""

    factors: int = 32
    reg: float = 0.1
    alpha: float = 10.0
    iterations: int = 12
    # Iterations of a fit that starts from an earlier fit's vectors.
    warm_iterations: int = 4
    cg_steps: int = 3
    seed: int = 7


@dataclass(frozen=True, slots=True)
class Factors:
    """User vectors [users, factors] and item vectors [items, factors] (float32)."""

    users: np.ndarray
    items: np.ndarray


def confidence(counts: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """c - 1 = alpha * log1p(r) on the observed pairs (same sparsity as `counts`)."""
    out = counts.copy().astype(np.float32)
    out.data = (alpha * np.log1p(out.data)).astype(np.float32)
    return out


def _solve(conf: sp.csr_matrix, x: np.ndarray, y: np.ndarray, reg: float, steps: int) -> np.ndarray:
    """Rows of x solving (Y'Y + reg I + Y' (C_u - I) Y) x_u = Y' C_u 1, a few CG steps each.

    `conf` holds c - 1 per observed pair (rows: the side being solved, columns: y's rows).
    """
    if conf.nnz == 0:
        return np.zeros_like(x)
    rows = np.repeat(np.arange(conf.shape[0]), np.diff(conf.indptr))
    cols = conf.indices
    c1 = conf.data.astype(np.float32)
    gram = (y.T @ y).astype(np.float32) + reg * np.eye(y.shape[1], dtype=np.float32)
    y_at = y[cols]  # [nnz, factors], reused by every product below

    def times_a(v: np.ndarray) -> np.ndarray:
        weights = c1 * np.einsum("ij,ij->i", y_at, v[rows])
        spread = sp.csr_matrix((weights, cols, conf.indptr), shape=conf.shape)
        return np.asarray(v @ gram + spread @ y, dtype=np.float32)

    b = np.asarray(sp.csr_matrix((c1 + 1.0, cols, conf.indptr), shape=conf.shape) @ y)
    x = x.astype(np.float32, copy=True)
    r = (b - times_a(x)).astype(np.float32)
    p = r.copy()
    rs = np.einsum("ij,ij->i", r, r)
    for _ in range(steps):
        ap = times_a(p)
        denom = np.einsum("ij,ij->i", p, ap)
        step = np.divide(rs, denom, out=np.zeros_like(rs), where=denom > 1e-20)
        x += step[:, None] * p
        r -= step[:, None] * ap
        rs_new = np.einsum("ij,ij->i", r, r)
        beta = np.divide(rs_new, rs, out=np.zeros_like(rs), where=rs > 1e-20)
        p = r + beta[:, None] * p
        rs = rs_new
    return x


def initial_vectors(codes: np.ndarray, factors: int, seed: int) -> np.ndarray:
    """Small random vectors (sd 0.01), each a function of its entity's code and the seed only:
    an entity starts the same whatever else the log holds (splitmix64, then Box-Muller)."""
    with np.errstate(over="ignore"):
        base = np.asarray(codes, dtype=np.float64).astype(np.uint64) * np.uint64(2 * factors)
        counter = base[:, None] + np.arange(2 * factors, dtype=np.uint64)[None, :]
        z = counter + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    uniform = ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    u1, u2 = uniform[:, :factors], uniform[:, factors:]
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return (normal * 0.01).astype(np.float32)


def fit(
    counts: sp.csr_matrix, start: Factors, cfg: ALSConfig = ALSConfig(), warm: bool = False
) -> Factors:
    """Fits user and item vectors to a users x items matrix of weighted interaction counts.

    Args:
        counts: r per (user, item); zeros are unobserved pairs.
        start: the vectors to start from (`initial_vectors`, or an earlier fit's).
        cfg: hyper-parameters.
        warm: `start` comes from an earlier fit: `cfg.warm_iterations` iterations, not
            `cfg.iterations`.

    Returns:
        The fitted vectors; deterministic for a given input, config and start.
    """
    users, items = start.users.astype(np.float32), start.items.astype(np.float32)
    conf = confidence(counts.tocsr(), cfg.alpha)
    conf_t = conf.T.tocsr()
    for _ in range(cfg.warm_iterations if warm else cfg.iterations):
        users = _solve(conf, users, items, cfg.reg, cfg.cg_steps)
        items = _solve(conf_t, items, users, cfg.reg, cfg.cg_steps)
    return Factors(users, items)


__all__ = ["ALSConfig", "Factors", "confidence", "fit", "initial_vectors"]
