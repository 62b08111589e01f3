"""Per target: the live feature contract and the versions that serve it, from the model registry.

The registry says, per target, which version is in production and which (if any) runs as a
canary (a percentage of users) or in shadow. The router follows it without a restart: each
health round reads the registry's revision (one small query) and, when it changed, the routing.
A version is routed to only once Triton reports it ready, its feature schema matches the live
feature service and it has been warmed up; until then the previous routing keeps serving. The
revision the router has fully applied goes back to the registry as this gateway's heartbeat, so a
promotion knows when every gateway switched and the old version can be unloaded; the heartbeat
also says which versions it serves, where it answers and where its metrics are scraped (the
console's Serving page reads them).

A target with no production version in the registry is served "unmanaged": by the version
Triton has loaded (its version policy), checked against the config's schema parameters.

A target whose feature service (or cart feature service) is not in the feature registry cannot
serve: its requests get FAILED_PRECONDITION naming the service. It holds health back only when
a version of it is wanted (the registry) or loaded (Triton): a shop that has not applied the
basket features yet serves its other targets.

Arms are sticky: a user is in the canary when a hash of (experiment salt, user id) falls under
the canary's percentage, so the same user always sees the same arm, and raising the percentage
only moves users into the canary.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field, replace

from feast.errors import FeastObjectNotFoundException, FeatureServiceNotFoundException

from scoring.core.contract import FeatureContract
from scoring.core.errors import (
    BackendUnavailableError,
    ContractMismatchError,
    ModelNotDeployedError,
    ScoringError,
)
from scoring.core.model_io import (
    CONTRIB_OUTPUT,
    PARAM_FEATURE_GROUPS,
    PARAM_FEATURE_SERVICE,
    PARAM_SCHEMA_HASH,
    WARMUP_ROWS,
)
from scoring.core.targets import Target
from scoring.gateway.cart import CartLayout
from scoring.gateway.feature_source import FeatureSource
from scoring.gateway.triton_client import TritonScorer
from scoring.registry.types import Routing, RoutingSource, VersionRecord

logger = logging.getLogger(__name__)
PRODUCTION, CANARY, SHADOW, UNMANAGED = "production", "canary", "shadow", "unmanaged"


class ModelNotReadyError(BackendUnavailableError):
    """Triton answered: the model (or version) is not loaded."""


class TritonSilentError(BackendUnavailableError):
    """Triton did not answer a readiness check in time: keep routing as before (a busy server
    is not a missing model; requests have their own deadline and fallback)."""


class FeatureServiceMissingError(ModelNotDeployedError):
    """A feature service the target reads is not in the feature registry, or lacks what the
    gateway reads in it (FAILED_PRECONDITION): the target cannot serve until the feature repo
    that defines it is applied."""


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One Triton model version that is ready and reads the live feature contract.

    Attributes:
        version: the Triton version scored ("" lets Triton pick: the unmanaged case).
        arm: production, canary, shadow or unmanaged.
    """

    target: Target
    contract: FeatureContract
    max_batch_size: int
    groups: tuple[str, ...] = ()
    version: str = ""
    arm: str = UNMANAGED

    @property
    def explains(self) -> bool:
        """Whether the model returns per-group contributions."""
        return bool(self.groups)


@dataclass(frozen=True, slots=True)
class TargetServing:
    """What serves one target: production, an optional canary share, an optional shadow."""

    production: ServedModel
    canary: ServedModel | None = None
    canary_percent: float = 0.0
    salt: str = ""
    shadow: ServedModel | None = None

    @property
    def versions(self) -> tuple[str, str, str]:
        """(production, canary, shadow) versions ("" for none, or Triton's choice)."""
        return (
            self.production.version,
            self.canary.version if self.canary else "",
            self.shadow.version if self.shadow else "",
        )


def bucket(salt: str, user_id: str) -> float:
    """The user's position in [0, 100) for an experiment: uniform, sticky per (salt, user)."""
    digest = hashlib.blake2b(f"{salt}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100.0


@dataclass
class ModelRouter:
    """Keeps, per target, the contract and serving versions, or the reason it cannot serve.

    Refreshed by the gateway's health loop; `get` never does I/O on the request path.
    """

    targets: list[Target]
    features: FeatureSource
    scorer: TritonScorer
    registry: RoutingSource | None = None
    instance_id: str = "gateway"
    _contracts: dict[str, FeatureContract] = field(default_factory=dict)
    _carts: dict[str, CartLayout] = field(default_factory=dict)
    # Why a target's contract could not be read, when the registry said so (a feature service
    # missing or unusable): its requests get this, not "not read yet".
    _unreadable: dict[str, ScoringError] = field(default_factory=dict)
    _contract_errors: dict[str, str] = field(default_factory=dict)
    _applied: dict[str, TargetServing] = field(default_factory=dict)
    _problems: dict[str, ScoringError] = field(default_factory=dict)
    _warm: set[tuple[str, str]] = field(default_factory=set)
    _routing: Routing | None = None
    _registry_error: str = ""
    applied_revision: int = -1
    # What the heartbeat says besides what is served: where this gateway answers and where
    # its metrics are scraped (the console reads them), set by the gateway once it listens.
    advertised: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in self.targets:
            self._problems[t.name] = BackendUnavailableError(
                f"{t.name}: not checked yet (triton not reached)"
            )

    async def read_contracts(self) -> None:
        """The live contract of every target, read whether or not Triton answers: a request
        needs it to read features and rank by popularity when the model cannot answer (a
        gateway started before Triton served nothing at all)."""
        for target in self.targets:
            try:
                await self._read_contract(target)
            except Exception as exc:
                if self._contract_errors.get(target.name) != str(exc):  # once, not every round
                    logger.warning("contract_unreadable target=%s error=%s", target.name, exc)
                self._contract_errors[target.name] = str(exc)
            else:
                self._contract_errors.pop(target.name, None)

    async def _read_contract(self, target: Target) -> FeatureContract:
        """Reads the live contract of `target` and the layout of its cart's feature service
        (both kept for requests).

        Raises:
            FeatureServiceMissingError: a feature service of the target is not registered, or
                the cart's lacks what the gateway reads.
        """
        service = target.feature_service
        try:
            contract = await asyncio.to_thread(self.features.contract, service)
            cart = None
            if target.cart_feature_service is not None:
                service = target.cart_feature_service
                stored = await asyncio.to_thread(self.features.stored_features, service)
                cart = CartLayout.of(service, stored)
        except FeastObjectNotFoundException as exc:
            what = (
                "is not in the feature registry"
                if isinstance(exc, FeatureServiceNotFoundException)
                else f"is not usable ({exc})"
            )
            problem: ScoringError = FeatureServiceMissingError(
                f"{target.name}: feature service {service} {what}; apply the feature repo that "
                f"defines it (`scoring features apply`), then train and promote {target.name}"
            )
        except ContractMismatchError as exc:  # the cart's service lacks a feature
            problem = FeatureServiceMissingError(f"{target.name}: {exc.message}")
        else:
            self._contracts[target.name] = contract
            if cart is not None:
                self._carts[target.name] = cart
            self._unreadable.pop(target.name, None)
            return contract
        # The registry answered: what was read before is gone, requests are refused with why.
        self._contracts.pop(target.name, None)
        self._carts.pop(target.name, None)
        self._unreadable[target.name] = problem
        raise problem

    async def _model(
        self, target: Target, contract: FeatureContract, record: VersionRecord | None, arm: str
    ) -> ServedModel:
        """The ServedModel of one version (or Triton's own choice), checked and warmed up."""
        version = str(record.version) if record is not None else ""
        info = await self.scorer.model_info(target.name, version)
        what = f"version {version}" if version else "model"
        if not info.answered:
            raise TritonSilentError(f"{target.name}: triton did not answer about {what}")
        if not info.ready:
            raise ModelNotReadyError(f"{target.name}: {what} is not ready in triton")
        if record is not None:
            served_service, served_hash = record.feature_service, record.schema_hash
        else:
            served_service = info.parameters.get(PARAM_FEATURE_SERVICE, "")
            served_hash = info.parameters.get(PARAM_SCHEMA_HASH, "")
        if served_service != contract.service or served_hash != contract.schema_hash:
            label = f"{target.name} v{version}" if version else f"model {target.name}"
            raise ContractMismatchError(
                f"{label} was trained on {served_service} (schema {served_hash}); "
                f"the live feature service is {contract.service} (schema {contract.schema_hash}): "
                "retrain or roll back"
            )
        groups_param = info.parameters.get(PARAM_FEATURE_GROUPS, "")
        explains = CONTRIB_OUTPUT in info.outputs
        groups = tuple(g for g in groups_param.split(",") if g) if explains else ()
        served = ServedModel(target, contract, info.max_batch_size, groups, version, arm)
        key = (target.name, version)
        if key not in self._warm:
            await self._warm_up(served)
            self._warm.add(key)
        return served

    async def _warm_up(self, served: ServedModel) -> None:
        """A few inferences of default rows before the first request: TorchScript optimises on
        its first runs, and a caller's deadline should not pay for that."""
        contract = served.contract
        for rows in WARMUP_ROWS:
            matrix = contract.defaults(rows).matrix
            await self.scorer.score(
                served.target.name,
                matrix,
                10.0,
                served.max_batch_size,
                served.explains,
                served.version,
            )

    async def _read_registry(self) -> Routing | None:
        """The registry's routing when it changed since the last read (None: unchanged)."""
        if self.registry is None:
            return None
        registry = self.registry
        try:
            revision = await asyncio.to_thread(registry.revision)
            if self._routing is not None and revision == self._routing.revision:
                return None
            routing = await asyncio.to_thread(registry.routing)
        except Exception as exc:  # keep serving what was applied; say why it is stale
            if str(exc) != self._registry_error:
                logger.warning("registry_unreadable error=%s", exc)
            self._registry_error = str(exc)
            return None
        self._registry_error = ""
        self._routing = routing
        return routing

    async def _check(self, target: Target) -> TargetServing:
        contract = await self._read_contract(target)
        desired = self._routing.targets.get(target.name) if self._routing else None
        production = desired.production if desired else None
        serving = TargetServing(
            await self._model(target, contract, production, PRODUCTION if production else UNMANAGED)
        )
        if desired is not None and desired.canary is not None:
            canary = desired.canary
            serving = replace(
                serving,
                canary=await self._model(target, contract, canary, CANARY),
                canary_percent=float(canary.traffic_percent or 0.0),
                salt=canary.experiment_salt or f"{target.name}:v{canary.version}",
            )
        if desired is not None and desired.shadow is not None:
            shadow = await self._model(target, contract, desired.shadow, SHADOW)
            serving = replace(serving, shadow=shadow)
        return serving

    async def refresh(self) -> bool:
        """Re-reads the registry and re-checks every target; True when all of them can serve.

        A target whose wanted versions cannot serve yet keeps its previous serving set (and the
        problem is logged); the registry revision counts as applied only when every target
        serves exactly what the registry says.
        """
        await self._read_registry()
        if self.registry is not None and self._routing is None:
            # Never read: which versions serve is unknown (Triton may hold a canary or shadow
            # version), so serve nothing until the registry answers once. After that, a registry
            # outage keeps the last routing.
            for target in self.targets:
                self._problems[target.name] = BackendUnavailableError(
                    f"{target.name}: model registry not reachable yet ({self._registry_error})"
                )
            return False
        revision = self._routing.revision if self._routing is not None else 0
        complete = True
        deployed = []
        for target in self.targets:
            try:
                serving = await self._check(target)
            except ScoringError as exc:
                problem: ScoringError = exc
            except Exception as exc:  # feature registry unreadable, etc.
                problem = BackendUnavailableError(f"{target.name}: {exc}")
            else:
                self._apply(target, serving)
                deployed.append(target)
                continue
            if await self._not_deployed(target, problem):
                # Nothing in the registry and nothing in Triton: not a fault of this gateway,
                # and no reason to stop serving the targets that are deployed.
                self._problems[target.name] = (
                    problem
                    if isinstance(problem, FeatureServiceMissingError)
                    else ModelNotDeployedError(
                        f"{target.name}: no version is deployed (the model registry has none "
                        f"in production, canary or shadow, and triton has none loaded): train "
                        f"one (`scoring train --target {target.name}`) and promote it"
                    )
                )
                continue
            deployed.append(target)
            complete = False
            previous = self._problems.get(target.name)
            if str(previous) != str(problem):
                logger.warning("target_not_switched target=%s reason=%s", target.name, problem)
            self._problems[target.name] = problem
            applied = self._applied.get(target.name)
            silent = isinstance(problem, TritonSilentError)
            if applied is not None and applied.versions == self._wanted(target) and not silent:
                # Not a pending switch: what is served broke (Triton lost the model, the feature
                # service changed under it), so stop routing to it.
                self._applied.pop(target.name, None)
        if complete and revision != self.applied_revision:
            self.applied_revision = revision
        await self._heartbeat()
        return bool(deployed) and all(t.name in self._applied for t in deployed)

    async def _not_deployed(self, target: Target, problem: ScoringError) -> bool:
        """The registry (read) wants no version of `target` and Triton has no model for it."""
        if self.registry is None or self._routing is None or self._wanted(target) != ("", "", ""):
            return False
        if isinstance(problem, FeatureServiceMissingError):
            # Found before Triton was asked (the contract comes first): ask it now. A model
            # loaded for a target that cannot read its features is a fault to report.
            info = await self.scorer.model_info(target.name)
            return info.answered and not info.ready
        return isinstance(problem, ModelNotReadyError)

    def _wanted(self, target: Target) -> tuple[str, str, str]:
        """(production, canary, shadow) versions the registry asks for ("" for none)."""
        desired = self._routing.targets.get(target.name) if self._routing else None
        if desired is None:
            return ("", "", "")
        return tuple(  # type: ignore[return-value]
            str(r.version) if r is not None else ""
            for r in (desired.production, desired.canary, desired.shadow)
        )

    def _apply(self, target: Target, serving: TargetServing) -> None:
        previous = self._applied.get(target.name)
        routing = (serving.versions, serving.canary_percent, serving.salt)
        if previous is None or (previous.versions, previous.canary_percent, previous.salt) != (
            routing
        ):
            production, canary, shadow = serving.versions
            logger.info(
                "routing_applied target=%s production=%s canary=%s percent=%s shadow=%s",
                target.name,
                production or "triton-default",
                canary or "-",
                serving.canary_percent,
                shadow or "-",
            )
        self._applied[target.name] = serving
        self._problems.pop(target.name, None)

    async def _heartbeat(self) -> None:
        if self.registry is None:
            return
        # serving: per target, the (production, canary, shadow) versions applied ("" none;
        # a production "" is Triton's own choice: the unmanaged case).
        detail: dict[str, object] = {
            "serving": {name: list(serving.versions) for name, serving in self._applied.items()},
            **self.advertised,
        }
        try:
            await asyncio.to_thread(
                self.registry.heartbeat, self.instance_id, self.applied_revision, detail
            )
        except Exception as exc:
            logger.warning("registry_heartbeat_failed error=%s", exc)

    def contract(self, target: Target) -> FeatureContract:
        """The live contract of `target` (known once the feature registry was read).

        Raises:
            FeatureServiceMissingError: a feature service of the target is not registered, or
                the cart's lacks what the gateway reads.
            BackendUnavailableError: the feature registry was not read yet.
        """
        contract = self._contracts.get(target.name)
        if contract is None:
            raise self._unreadable.get(
                target.name,
                BackendUnavailableError(f"{target.name}: feature registry not read yet"),
            )
        return contract

    def cart(self, target: Target) -> CartLayout:
        """Where the cart feature service of `target` keeps what the gateway reads (known with
        its contract; see `contract` for what is raised)."""
        cart = self._carts.get(target.name)
        if cart is None:
            self.contract(target)
            raise BackendUnavailableError(f"{target.name}: reads no cart")
        return cart

    def serving(self, target: Target) -> TargetServing:
        """The serving set of `target`, or the error explaining why there is none."""
        serving = self._applied.get(target.name)
        if serving is None:
            raise self._problems.get(
                target.name, BackendUnavailableError(f"{target.name}: not served")
            )
        return serving

    def get(self, target: Target, user_id: str = "") -> ServedModel:
        """The version that scores `user_id`: the canary for the users in its share."""
        serving = self.serving(target)
        if serving.canary is not None and bucket(serving.salt, user_id) < serving.canary_percent:
            return serving.canary
        return serving.production
