"""The gateway process: grpc.aio server with the RankingService, health and reflection."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.core.access import load_callers
from scoring.core.errors import InvalidRequestError, ScoringError
from scoring.core.privacy import pseudonymizer
from scoring.core.settings import Settings
from scoring.core.targets import TARGETS
from scoring.gateway.auth import AuthInterceptor, add_port
from scoring.gateway.breaker import Breakers
from scoring.gateway.event_writer import ServedEventWriter
from scoring.gateway.feature_log import FeatureLog, ServedLogPolicy
from scoring.gateway.feature_source import FeastFeatureSource, FeatureSource
from scoring.gateway.interceptors import Handler, WrappingInterceptor
from scoring.gateway.prometheus import GatewayMetrics
from scoring.gateway.redis_source import RedisFeatureSource
from scoring.gateway.routing import ModelRouter
from scoring.gateway.servicer import REQUEST_ID, RankingServicer
from scoring.gateway.triton_client import TritonScorer
from scoring.registry.types import RoutingSource

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RankingService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ErrorInterceptor(WrappingInterceptor):
    """Turns domain errors into (code, message); anything else into INTERNAL + request id.

    Also counts every finished RPC by method and status code.
    """

    def __init__(self, metrics: GatewayMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def wrap(self, handler: Handler, full_method: str) -> Handler:
        inner = handler.unary_unary
        if inner is None:
            return handler
        method = full_method.rsplit("/", 1)[-1]
        requests = self.metrics.requests
        deserialize = handler.request_deserializer

        async def guarded(payload: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                request = payload if deserialize is None else _parse(deserialize, payload)
                response = await inner(request, context)  # type: ignore[arg-type]
            except ScoringError as exc:
                requests.labels(method, exc.code.name).inc()
                await context.abort(exc.code, exc.message)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                requests.labels(method, grpc.StatusCode.CANCELLED.name).inc()
                raise
            except Exception:
                requests.labels(method, grpc.StatusCode.INTERNAL.name).inc()
                logger.exception("internal_error request_id=%s", REQUEST_ID.get())
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error (request_id={REQUEST_ID.get()})"
                )
            requests.labels(method, grpc.StatusCode.OK.name).inc()
            return response

        # The request is parsed in `guarded`, not by gRPC: bytes that are no valid message are
        # the caller's error, which gRPC would answer UNKNOWN naming the exception's class.
        return grpc.unary_unary_rpc_method_handler(
            guarded, response_serializer=handler.response_serializer
        )


def _parse(deserialize: Callable[[bytes], Any], payload: bytes) -> Any:
    """The request message of `payload`; InvalidRequestError when it does not parse."""
    try:
        return deserialize(payload)
    except DecodeError as exc:
        raise InvalidRequestError(f"request: not a valid message ({exc})") from None


def feature_source(settings: Settings) -> FeatureSource:
    """The online read path the settings ask for (see GatewaySettings.feature_read)."""
    mode = settings.gateway.feature_read
    sdk = FeastFeatureSource(
        settings.feast.repo_path, settings.feast.fs_yaml, settings.gateway.feature_workers
    )
    is_redis = sdk.store.config.online_store.type == "redis"
    if mode == "sdk" or (mode == "auto" and not is_redis):
        return sdk
    return RedisFeatureSource(
        settings.feast.repo_path,
        settings.feast.fs_yaml,
        cache_rows=settings.gateway.feature_cache_rows,
        cache_ttl_s=settings.gateway.feature_cache_ttl_s,
    )


class Gateway:
    """Owns the server, its clients and the health loop.

    Args:
        registry: where the routing comes from; its owner (the entrypoint) closes it.
        worker: this process's index among `GatewaySettings.workers` sharing the port (None:
            the only gateway process): the port is bound with SO_REUSEPORT, and the index goes
            into the instance id and the heartbeat.
    """

    def __init__(
        self,
        settings: Settings,
        registry: RoutingSource,
        features: FeatureSource | None = None,
        *,
        worker: int | None = None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.features = features or feature_source(settings)
        self.scorer = TritonScorer(settings.triton.url)
        tag = "" if worker is None else f"w{worker}-"
        self.instance_id = (
            f"gateway-{socket.gethostname()}-{os.getpid()}-{tag}{uuid.uuid4().hex[:6]}"
        )
        self.registry = registry
        self.router = ModelRouter(
            list(TARGETS.values()), self.features, self.scorer, self.registry, self.instance_id
        )
        self.metrics = GatewayMetrics()
        if isinstance(self.features, RedisFeatureSource):
            self.metrics.track_cache(self.features.cache)
        gw, privacy = settings.gateway, settings.privacy
        self.pseudonym = pseudonymizer(privacy)
        self.feature_log = (
            FeatureLog(
                gw.feature_log_dir,
                gw.feature_log_sample_rate,
                gw.feature_log_flush_rows,
                gw.feature_log_flush_interval_s,
                max_rows=gw.feature_log_max_rows,
                policy=ServedLogPolicy(
                    frozenset(privacy.feature_log_drop),
                    frozenset(privacy.feature_log_hash),
                    self.pseudonym,
                ),
                retention_days=privacy.feature_log_retention_days,
                retry_max_s=gw.feature_log_retry_max_s,
            )
            if gw.feature_log_sample_rate > 0
            else None
        )
        if self.feature_log is not None:
            self.metrics.track_feature_log(self.feature_log)
        self.events = ServedEventWriter(
            gw.events_dir,
            self.instance_id,
            retention_days=privacy.events_retention_days,
            max_bytes=gw.events_max_queued_mib * 2**20,
        )
        self.metrics.track_events(self.events)
        self.breakers = Breakers(gw.breaker_failures)
        self.metrics.track_breakers(self.breakers)
        self._repaired_at: dict[str, float] = {}
        self.health = health.aio.HealthServicer()
        # The access check runs first on every call, before the request is even parsed.
        self.auth = AuthInterceptor(
            load_callers(settings.auth), settings.auth, settings.tls, self.metrics
        )
        # Workers share the port: each binds it with SO_REUSEPORT (on by default in gRPC on
        # Linux; set explicitly, as the workers depend on it).
        options = [] if worker is None else [("grpc.so_reuseport", 1)]
        self.server = grpc.aio.server(
            interceptors=[self.auth, ErrorInterceptor(self.metrics)], options=options
        )
        self.servicer = RankingServicer(
            gw,
            self.features,
            self.scorer,
            self.router,
            self.metrics,
            self.feature_log,
            self.events,
            pseudonym=self.pseudonym,
            breakers=self.breakers,
        )
        pb_grpc.add_RankingServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.servicer, self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.address = f"{settings.gateway.host}:{settings.gateway.port}"
        self.port = add_port(self.server, self.address, settings.tls)
        self._serving: bool | None = None
        self._frozen = False
        self._health_task: asyncio.Task[None] | None = None

    async def check_once(self) -> bool:
        """One health round: Triton up, feature store readable, every target servable, no
        model's circuit breaker open (an open one is probed, and repaired when it must be)."""
        triton_ok = await self.scorer.server_ready()
        try:
            await asyncio.to_thread(self.features.check)
            features_ok = True
        except Exception as exc:
            logger.warning("feature_store_unreachable error=%s", exc)
            features_ok = False
        if not triton_ok:
            self._trip_all("triton not ready")
            if features_ok:
                await self.router.read_contracts()  # the fallback needs them
        targets_ok = await self.router.refresh() if triton_ok and features_ok else False
        if triton_ok:
            await self._probe_open()
        breakers_ok = not self.breakers.open_models()
        serving = triton_ok and features_ok and targets_ok and breakers_ok
        if serving and not self._frozen and self.settings.gateway.gc_freeze:
            # Start-up is done (stores open, contracts read, models warmed up): what it left
            # on the heap lives as long as the process. Collect once, then keep it out of
            # every later collection, which would otherwise rescan it.
            gc.collect()
            gc.freeze()
            self._frozen = True
            logger.info("gc_frozen objects=%s", gc.get_freeze_count())
        if serving != self._serving:
            logger.info(
                "health serving=%s triton=%s features=%s targets=%s open_breakers=%s",
                serving,
                triton_ok,
                features_ok,
                targets_ok,
                ",".join(self.breakers.open_models()) or "-",
            )
            status = SERVING if serving else NOT_SERVING
            for name in ("", SERVICE_NAME):
                await self.health.set(name, status)
            self._serving = serving
        return serving

    def _trip_all(self, reason: str) -> None:
        for model in self.breakers.trip_all([t.name for t in self.router.targets], reason):
            self.metrics.breaker_trips.labels(model, "triton_not_ready").inc()
            logger.warning("breaker_opened model=%s reason=%s", model, reason)

    async def _probe_open(self) -> None:
        """Probes every model whose breaker is open with one small inference; closes the
        breaker when it answers. Two failed probes in a row while Triton reports the model
        READY: its worker is broken, so it is reloaded (at most once per repair interval)."""
        gw = self.settings.gateway
        for model in self.breakers.open_models():
            target = TARGETS[model]
            try:
                served = self.router.serving(target).production
            except ScoringError:
                # Nothing routed to probe: the router keeps requests off this model until it
                # serves again (re-checked, warmed up), so the breaker has nothing to guard.
                self._close(model, "not routed")
                continue
            matrix = served.contract.defaults(1).matrix
            try:
                await self.scorer.score(
                    model,
                    matrix,
                    gw.probe_timeout_ms / 1000.0,
                    served.max_batch_size,
                    version=served.version,
                )
            except ScoringError as exc:
                breaker = self.breakers[model]
                breaker.probe_failures += 1
                failures = breaker.probe_failures
                logger.warning("probe_failed model=%s failures=%s error=%s", model, failures, exc)
                if failures >= 2:
                    await self._repair(model, served.version)
                continue
            self._close(model, "probe answered")

    def _close(self, model: str, why: str) -> None:
        breaker = self.breakers[model]
        logger.info("breaker_closed model=%s why=%s open_s=%.2f", model, why, breaker.open_for_s())
        breaker.success()

    async def _repair(self, model: str, version: str) -> None:
        """Reloads `model` in Triton when it still reports it READY (else Triton knows)."""
        gw = self.settings.gateway
        now = time.monotonic()
        if not gw.triton_repair or now - self._repaired_at.get(model, -1e9) < (
            gw.triton_repair_interval_s
        ):
            return
        info = await self.scorer.model_info(model, version)
        if not info.ready:
            return
        self._repaired_at[model] = now
        logger.warning("triton_repair model=%s reason=ready but failing", model)
        try:
            await self.scorer.reload(model, f"{self.instance_id}-{int(time.time())}")
        except ScoringError as exc:
            self.metrics.triton_repairs.labels(model, "failed").inc()
            logger.warning("triton_repair_failed model=%s error=%s", model, exc)
            return
        self.metrics.triton_repairs.labels(model, "reloaded").inc()
        logger.info("triton_repaired model=%s seconds=%.2f", model, time.monotonic() - now)
        self.breakers[model].probe_failures = 0

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:
                logger.exception("health_check_failed")
            await asyncio.sleep(self.settings.gateway.health_poll_interval_s)

    async def start(self) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, NOT_SERVING)
        # The feature contracts before the first request: with them a request is answered
        # (the popularity fallback) even when Triton is not up yet.
        await self.router.read_contracts()
        await self.server.start()
        if self.settings.gateway.metrics_port:
            self.metrics.serve(self.settings.gateway.host, self.settings.gateway.metrics_port)
        self.router.advertised = advertised(self.settings, self.port, self.worker)
        self._health_task = asyncio.create_task(self._health_loop())
        tls, auth = self.settings.tls, self.settings.auth
        logger.info(
            "gateway_started address=%s tls=%s mutual_tls=%s auth_required=%s callers=%s",
            self.address,
            tls.enabled,
            tls.enabled and tls.require_client_cert,
            auth.required,
            len(self.auth.callers.by_name),
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)  # in-flight requests finish (and are logged) first
        await self.servicer.drain_shadow()
        await asyncio.to_thread(self.events.close)
        try:
            await asyncio.to_thread(self.registry.forget_instance, self.instance_id)
        except Exception as exc:
            logger.warning("registry_forget_failed error=%s", exc)
        if self.feature_log is not None:
            await asyncio.to_thread(self.feature_log.close)
        await self.scorer.close()
        await self.features.aclose()
        log = self.feature_log
        logger.info(
            "gateway_stopped feature_log_rows=%s feature_log_dropped=%s feature_log_lost=%s "
            "events_written=%s events_dropped=%s",
            log.rows_written if log else 0,
            log.dropped_rows if log else 0,
            log.lost_rows if log else 0,
            self.events.written,
            sum(self.events.dropped.values()),
        )


def advertised(settings: Settings, port: int, worker: int | None = None) -> dict[str, object]:
    """What the gateway's heartbeat says about it besides what it serves: its gRPC address,
    the URL of its Prometheus metrics (None when off), its pid and start time, and its worker
    index when it is one of several processes sharing the port. The host is
    `advertise_host` when set; else a wildcard host (0.0.0.0, ::) is advertised as this
    machine's host name, which others can reach."""
    gw = settings.gateway
    host = gw.host if gw.host not in ("", "0.0.0.0", "::", "[::]") else socket.gethostname()
    host = gw.advertise_host or host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    detail: dict[str, object] = {
        "address": f"{host}:{port}",
        "metrics_url": f"http://{host}:{gw.metrics_port}/metrics" if gw.metrics_port else None,
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if worker is not None:
        detail["worker"] = worker
    return detail


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop maker for GatewaySettings.event_loop (None: the standard library's)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(settings: Settings, registry: RoutingSource, worker: int | None = None) -> None:
    """Runs `serve` until SIGINT/SIGTERM on the event loop the settings ask for."""
    with asyncio.Runner(loop_factory=loop_factory(settings.gateway.event_loop)) as runner:
        runner.run(serve(settings, registry, worker))


async def serve(settings: Settings, registry: RoutingSource, worker: int | None = None) -> None:
    """Runs the gateway until SIGINT/SIGTERM, then drains in-flight requests. A worker (see
    scoring.gateway.workers) also stops when its parent is gone."""
    gateway = Gateway(settings, registry, worker=worker)
    await gateway.start()
    loop = asyncio.get_running_loop()
    logger.info("event_loop %s", type(loop).__module__)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    orphan = None if worker is None else asyncio.create_task(_watch_parent(os.getppid(), stop))
    await stop.wait()
    if orphan is not None:
        orphan.cancel()
    await gateway.stop()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Sets `stop` once the parent process is gone (killed without stopping its workers)."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    logger.warning("gateway_parent_gone parent_pid=%s: stopping", parent)
    stop.set()
