"""Which model serves each target, and whether its feature contract matches the live one."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from scoring.core.contract import FeatureContract
from scoring.core.errors import BackendUnavailableError, ContractMismatchError
from scoring.core.targets import Target
from scoring.gateway.features import FeatureSource
from scoring.gateway.triton_client import TritonScorer
from scoring.triton.config import PARAM_FEATURE_SERVICE, PARAM_SCHEMA_HASH

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A target whose Triton model is ready and reads the live feature contract."""

    target: Target
    contract: FeatureContract
    max_batch_size: int


class ModelRouter:
    """Keeps, per target, the served model or the reason it cannot serve (refreshed by polling)."""

    def __init__(self, targets: list[Target], features: FeatureSource, scorer: TritonScorer):
        self.targets = targets
        self.features = features
        self.scorer = scorer
        self._served: dict[str, ServedModel] = {}
        self._problems: dict[str, ContractMismatchError | BackendUnavailableError] = {
            t.name: BackendUnavailableError(f"{t.name}: not checked yet") for t in targets
        }

    async def _check(self, target: Target) -> ServedModel:
        info = await self.scorer.model_info(target.name)
        if not info.ready:
            raise BackendUnavailableError(f"model {target.name} is not ready in triton")
        contract = await asyncio.to_thread(self.features.contract, target.feature_service)
        served_service = info.parameters.get(PARAM_FEATURE_SERVICE)
        served_hash = info.parameters.get(PARAM_SCHEMA_HASH)
        if served_service != contract.service or served_hash != contract.schema_hash:
            raise ContractMismatchError(
                f"model {target.name} was trained on {served_service} (schema {served_hash}); "
                f"the live feature service is {contract.service} (schema {contract.schema_hash}): "
                "retrain or roll back"
            )
        return ServedModel(target, contract, info.max_batch_size)

    async def refresh(self) -> bool:
        """Re-checks every target; returns True when all of them can serve."""
        for target in self.targets:
            try:
                served = await self._check(target)
            except (ContractMismatchError, BackendUnavailableError) as exc:
                if target.name in self._served or type(exc) is not type(
                    self._problems.get(target.name)
                ):
                    logger.warning("target_unavailable target=%s reason=%s", target.name, exc)
                self._served.pop(target.name, None)
                self._problems[target.name] = exc
            except Exception as exc:  # feature registry unreadable, etc.
                self._served.pop(target.name, None)
                self._problems[target.name] = BackendUnavailableError(f"{target.name}: {exc}")
            else:
                if target.name not in self._served:
                    logger.info(
                        "target_ready target=%s schema=%s", target.name, served.contract.schema_hash
                    )
                self._served[target.name] = served
                self._problems.pop(target.name, None)
        return not self._problems

    def get(self, target: Target) -> ServedModel:
        """The served model of `target`, or the error explaining why there is none."""
        served = self._served.get(target.name)
        if served is None:
            raise self._problems.get(
                target.name, BackendUnavailableError(f"{target.name}: not served")
            )
        return served
