"""Async Triton client for the gateway: one reused channel, deadline-bound calls."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc.aio as tritonaio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from scoring.core.errors import BackendUnavailableError, DeadlineExceededError, ScoringError
from scoring.core.model_io import CONTRIB_OUTPUT, FEATURES_INPUT, SCORE_OUTPUT
from scoring.gateway.breaker import repair_token


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the gateway needs to know about a served model."""

    ready: bool
    max_batch_size: int = 0
    version: str = ""  # the version asked for, or "" (Triton's choice)
    parameters: dict[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    answered: bool = True  # False: Triton did not answer in time (a transient state)


def _no_answer(exc: InferenceServerException) -> bool:
    status = str(exc.status() or "")
    return any(code in status for code in ("DEADLINE_EXCEEDED", "UNAVAILABLE"))


@dataclass(frozen=True, slots=True)
class Scored:
    """Scores of every row, the version that produced them, and per-group contributions."""

    scores: np.ndarray
    version: str
    contributions: np.ndarray | None


class ModelFailedError(BackendUnavailableError):
    """Triton took the request and the model failed it (INTERNAL): a broken worker, such as a
    killed python-backend stub ("Stub process ... is not healthy"), while Triton still reports
    the model READY. The caller gets the fallback; the circuit breaker counts it."""


def _to_scoring_error(exc: InferenceServerException, model: str) -> ScoringError:
    status = str(exc.status() or "")
    message = f"triton ({model}): {exc.message()}"
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in (exc.message() or ""):
        return DeadlineExceededError(message)
    if "UNAVAILABLE" in status or "unknown model" in (exc.message() or ""):
        return BackendUnavailableError(message)
    if "INTERNAL" in status:
        return ModelFailedError(message)
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

    async def model_info(self, model: str, version: str = "") -> ModelInfo:
        """Readiness and config of `model` (of one `version`, or the one Triton picks)."""
        try:
            if not await self.client.is_model_ready(model, version, client_timeout=1.0):
                return ModelInfo(False)
            response = await self.client.get_model_config(model, as_json=True, client_timeout=1.0)
        except InferenceServerException as exc:
            # No answer (timeout, connection) is not the same as "not ready": say which.
            return ModelInfo(False, answered=not _no_answer(exc))
        config = response["config"]
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        outputs = tuple(o["name"] for o in config.get("output", []))
        return ModelInfo(True, int(config.get("max_batch_size", 0)), version, params, outputs)

    async def reload(self, model: str, token: str, timeout_s: float = 120.0) -> None:
        """Makes Triton load fresh instances of `model` with the config it serves now (versions
        included), marked with `token` so that Triton does not skip an unchanged reload."""
        try:
            response = await self.client.get_model_config(model, as_json=True, client_timeout=2.0)
            config = repair_token(response["config"], token)
            await self.client.load_model(model, config=json.dumps(config), client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise _to_scoring_error(exc, model) from exc

    async def _infer(
        self, model: str, rows: np.ndarray, timeout_s: float, contributions: bool, version: str
    ) -> Scored:
        infer_input = InferInput(FEATURES_INPUT, list(rows.shape), "FP32")
        infer_input.set_data_from_numpy(rows)
        outputs = [InferRequestedOutput(SCORE_OUTPUT)]
        if contributions:
            outputs.append(InferRequestedOutput(CONTRIB_OUTPUT))
        try:
            result = await self.client.infer(
                model,
                [infer_input],
                model_version=version,
                outputs=outputs,
                client_timeout=max(timeout_s, 0.001),
            )
        except InferenceServerException as exc:
            raise _to_scoring_error(exc, model) from exc
        scores = result.as_numpy(SCORE_OUTPUT)
        if scores is None or scores.shape[0] != rows.shape[0]:
            raise ScoringError(f"triton ({model}): expected {rows.shape[0]} scores")
        contrib = result.as_numpy(CONTRIB_OUTPUT) if contributions else None
        return Scored(scores.reshape(-1), result.get_response().model_version, contrib)

    async def score(
        self,
        model: str,
        matrix: np.ndarray,
        timeout_s: float,
        max_batch_size: int,
        contributions: bool = False,
        version: str = "",
    ) -> Scored:
        """Scores every row with `version` ("" lets Triton pick), split into batches of at most
        `max_batch_size`, concurrently."""
        step = max_batch_size or len(matrix)
        if len(matrix) <= step:  # one batch: awaited in this task, no task of its own
            return await self._infer(model, matrix, timeout_s, contributions, version)
        parts = await asyncio.gather(
            *(
                self._infer(model, matrix[i : i + step], timeout_s, contributions, version)
                for i in range(0, len(matrix), step)
            )
        )
        versions = {p.version for p in parts}
        if len(versions) > 1:
            # A version switch happened mid-request; scores of two models don't mix.
            raise BackendUnavailableError(f"triton ({model}): version changed during the request")
        contrib = (
            np.concatenate([p.contributions for p in parts if p.contributions is not None])
            if contributions
            else None
        )
        return Scored(np.concatenate([p.scores for p in parts]), versions.pop(), contrib)
