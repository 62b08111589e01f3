"""Async Triton client for the gateway: one reused channel, deadline-bound calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as tritonaio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from scoring.core.errors import BackendUnavailableError, DeadlineExceededError, ScoringError
from scoring.triton.config import INPUT_NAME, OUTPUT_NAME


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the gateway needs to know about a served model."""

    ready: bool
    max_batch_size: int
    parameters: dict[str, str]


def _to_scoring_error(exc: InferenceServerException, model: str) -> ScoringError:
    status = str(exc.status() or "")
    message = f"triton ({model}): {exc.message()}"
    if "DEADLINE_EXCEEDED" in status:
        return DeadlineExceededError(message)
    if "UNAVAILABLE" in status or "unknown model" in (exc.message() or ""):
        return BackendUnavailableError(message)
    return ScoringError(message)


class TritonScorer:
    """Scores feature matrices with a Triton model over gRPC."""

    def __init__(self, url: str) -> None:
        self.client = tritonaio.InferenceServerClient(url)

    async def close(self) -> None:
        await self.client.close()

    async def server_ready(self) -> bool:
        try:
            return bool(await self.client.is_server_ready(client_timeout=1.0))
        except InferenceServerException:
            return False

    async def model_info(self, model: str) -> ModelInfo:
        try:
            if not await self.client.is_model_ready(model, client_timeout=1.0):
                return ModelInfo(False, 0, {})
            config = (await self.client.get_model_config(model, as_json=True, client_timeout=1.0))[
                "config"
            ]
        except InferenceServerException:
            return ModelInfo(False, 0, {})
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        return ModelInfo(True, int(config.get("max_batch_size", 0)), params)

    async def _infer(
        self, model: str, rows: np.ndarray, timeout_s: float
    ) -> tuple[np.ndarray, str]:
        infer_input = InferInput(INPUT_NAME, list(rows.shape), "FP32")
        infer_input.set_data_from_numpy(rows)
        try:
            result = await self.client.infer(
                model,
                [infer_input],
                outputs=[InferRequestedOutput(OUTPUT_NAME)],
                client_timeout=max(timeout_s, 0.001),
            )
        except InferenceServerException as exc:
            raise _to_scoring_error(exc, model) from exc
        scores = result.as_numpy(OUTPUT_NAME)
        if scores is None or scores.shape[0] != rows.shape[0]:
            raise ScoringError(f"triton ({model}): expected {rows.shape[0]} scores")
        return scores.reshape(-1), result.get_response().model_version

    async def score(
        self, model: str, matrix: np.ndarray, timeout_s: float, max_batch_size: int
    ) -> tuple[np.ndarray, str]:
        """Scores every row, split into batches of at most `max_batch_size`, concurrently.

        Returns:
            The scores in row order and the model version that produced them.
        """
        step = max_batch_size or len(matrix)
        parts = await asyncio.gather(
            *(
                self._infer(model, matrix[i : i + step], timeout_s)
                for i in range(0, len(matrix), step)
            )
        )
        versions = {version for _, version in parts}
        if len(versions) > 1:
            # A version switch happened mid-request; scores of two models don't mix.
            raise BackendUnavailableError(f"triton ({model}): version changed during the request")
        return np.concatenate([s for s, _ in parts]), versions.pop()
