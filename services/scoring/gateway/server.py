"""The gateway process: grpc.aio server with the RankingService, health and reflection."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.core.errors import InvalidRequestError, ScoringError
from scoring.core.privacy import pseudonymizer
from scoring.core.settings import Settings
from scoring.core.targets import TARGETS
from scoring.gateway.event_writer import ServedEventWriter
from scoring.gateway.feature_log import FeatureLog, ServedLogPolicy
from scoring.gateway.feature_source import FeastFeatureSource, FeatureSource
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


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns domain errors into (code, message); anything else into INTERNAL + request id.

    Also counts every finished RPC by method and status code.
    """

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        # The guarded handler of each method, built on its first call (not on every call).
        self._guarded: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        guarded = self._guarded.get(handler_call_details.method)
        if guarded is not None:
            return guarded
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        self._guarded[handler_call_details.method] = guarded = self._guard(
            handler, handler_call_details.method
        )
        return guarded

    def _guard(
        self, handler: grpc.RpcMethodHandler[Any, Any], full_method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        inner = handler.unary_unary
        assert inner is not None
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
    """

    def __init__(
        self, settings: Settings, registry: RoutingSource, features: FeatureSource | None = None
    ) -> None:
        self.settings = settings
        self.features = features or feature_source(settings)
        self.scorer = TritonScorer(settings.triton.url)
        self.instance_id = f"gateway-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
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
            gw.events_dir, self.instance_id, retention_days=privacy.events_retention_days
        )
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(interceptors=[ErrorInterceptor(self.metrics)])
        self.servicer = RankingServicer(
            gw,
            self.features,
            self.scorer,
            self.router,
            self.metrics,
            self.feature_log,
            self.events,
            pseudonym=self.pseudonym,
        )
        pb_grpc.add_RankingServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.servicer, self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.address = f"{settings.gateway.host}:{settings.gateway.port}"
        self.port = self.server.add_insecure_port(self.address)
        self._serving: bool | None = None
        self._frozen = False
        self._health_task: asyncio.Task[None] | None = None

    async def check_once(self) -> bool:
        """One health round: Triton up, feature store readable, every target servable."""
        triton_ok = await self.scorer.server_ready()
        try:
            await asyncio.to_thread(self.features.check)
            features_ok = True
        except Exception as exc:
            logger.warning("feature_store_unreachable error=%s", exc)
            features_ok = False
        targets_ok = await self.router.refresh() if triton_ok and features_ok else False
        serving = triton_ok and features_ok and targets_ok
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
                "health serving=%s triton=%s features=%s targets=%s",
                serving,
                triton_ok,
                features_ok,
                targets_ok,
            )
            status = SERVING if serving else NOT_SERVING
            for name in ("", SERVICE_NAME):
                await self.health.set(name, status)
            self._serving = serving
        return serving

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
        await self.server.start()
        if self.settings.gateway.metrics_port:
            self.metrics.serve(self.settings.gateway.host, self.settings.gateway.metrics_port)
        self._health_task = asyncio.create_task(self._health_loop())
        logger.info("gateway_started address=%s", self.address)

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
            "gateway_stopped feature_log_rows=%s feature_log_dropped=%s feature_log_lost=%s",
            log.rows_written if log else 0,
            log.dropped_rows if log else 0,
            log.lost_rows if log else 0,
        )


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop maker for GatewaySettings.event_loop (None: the standard library's)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run(settings: Settings, registry: RoutingSource) -> None:
    """Runs `serve` until SIGINT/SIGTERM on the event loop the settings ask for."""
    with asyncio.Runner(loop_factory=loop_factory(settings.gateway.event_loop)) as runner:
        runner.run(serve(settings, registry))


async def serve(settings: Settings, registry: RoutingSource) -> None:
    """Runs the gateway until SIGINT/SIGTERM, then drains in-flight requests."""
    gateway = Gateway(settings, registry)
    await gateway.start()
    loop = asyncio.get_running_loop()
    logger.info("event_loop %s", type(loop).__module__)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gateway.stop()
