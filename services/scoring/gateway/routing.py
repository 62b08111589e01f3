"""Per target: the live feature contract, and the served model (or why there is none)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from scoring.core.contract import FeatureContract
from scoring.core.errors import BackendUnavailableError, ContractMismatchError, ScoringError
from scoring.core.targets import Target
from scoring.gateway.features import FeatureSource
from scoring.gateway.triton_client import TritonScorer
from scoring.triton.config import CONTRIB_NAME as CONTRIB_OUTPUT
from scoring.triton.config import PARAM_FEATURE_GROUPS, PARAM_FEATURE_SERVICE, PARAM_SCHEMA_HASH

logger = logging.getLogger(__name__)
WARMUP_ROWS = (1, 16, 128, 1, 16, 128)


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A target whose Triton model is ready and reads the live feature contract."""

    target: Target
    contract: FeatureContract
    max_batch_size: int
    groups: tuple[str, ...] = ()

    @property
    def explains(self) -> bool:
        """Whether the model returns per-group contributions."""
        return bool(self.groups)


class ModelRouter:
    """Keeps, per target, the contract and served model or the reason it cannot serve.

    Refreshed by the gateway's health loop; `get` never does I/O on the request path.
    """

    def __init__(self, targets: list[Target], features: FeatureSource, scorer: TritonScorer):
        self.targets = targets
        self.features = features
        self.scorer = scorer
        self._contracts: dict[str, FeatureContract] = {}
        self._served: dict[str, ServedModel] = {}
        self._problems: dict[str, ScoringError] = {
            t.name: BackendUnavailableError(f"{t.name}: not checked yet") for t in targets
        }

    async def _check(self, target: Target) -> ServedModel:
        contract = await asyncio.to_thread(self.features.contract, target.feature_service)
        self._contracts[target.name] = contract
        info = await self.scorer.model_info(target.name)
        if not info.ready:
            raise BackendUnavailableError(f"model {target.name} is not ready in triton")
        served_service = info.parameters.get(PARAM_FEATURE_SERVICE)
        served_hash = info.parameters.get(PARAM_SCHEMA_HASH)
        if served_service != contract.service or served_hash != contract.schema_hash:
            raise ContractMismatchError(
                f"model {target.name} was trained on {served_service} (schema {served_hash}); "
                f"the live feature service is {contract.service} (schema {contract.schema_hash}): "
                "retrain or roll back"
            )
        groups_param = info.parameters.get(PARAM_FEATURE_GROUPS, "")
        explains = CONTRIB_OUTPUT in info.outputs
        groups = tuple(g for g in groups_param.split(",") if g) if explains else ()
        served = ServedModel(target, contract, info.max_batch_size, groups)
        if target.name not in self._served:
            await self._warm_up(served)
        return served

    async def _warm_up(self, served: ServedModel) -> None:
        """A few inferences of default rows before the first request: TorchScript optimises on
        its first runs, and a caller's deadline should not pay for that."""
        contract = served.contract
        for rows in WARMUP_ROWS:
            matrix = contract.defaults(rows).matrix
            await self.scorer.score(
                served.target.name, matrix, 10.0, served.max_batch_size, served.explains
            )

    async def refresh(self) -> bool:
        """Re-checks every target; returns True when all of them can serve."""
        for target in self.targets:
            try:
                served = await self._check(target)
            except ScoringError as exc:
                problem: ScoringError = exc
            except Exception as exc:  # feature registry unreadable, etc.
                problem = BackendUnavailableError(f"{target.name}: {exc}")
            else:
                if target.name not in self._served:
                    logger.info(
                        "target_ready target=%s schema=%s", target.name, served.contract.schema_hash
                    )
                self._served[target.name] = served
                self._problems.pop(target.name, None)
                continue
            previous = self._problems.get(target.name)
            if target.name in self._served or str(previous) != str(problem):
                logger.warning("target_unavailable target=%s reason=%s", target.name, problem)
            self._served.pop(target.name, None)
            self._problems[target.name] = problem
        return not self._problems

    def contract(self, target: Target) -> FeatureContract:
        """The live contract of `target` (known once the feature registry was read)."""
        contract = self._contracts.get(target.name)
        if contract is None:
            raise BackendUnavailableError(f"{target.name}: feature registry not read yet")
        return contract

    def get(self, target: Target) -> ServedModel:
        """The served model of `target`, or the error explaining why there is none."""
        served = self._served.get(target.name)
        if served is None:
            raise self._problems.get(
                target.name, BackendUnavailableError(f"{target.name}: not served")
            )
        return served
