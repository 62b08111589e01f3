"""Access to the gateway: TLS credentials, and the interceptor that names the caller of each
request (client certificate or bearer token), checks its allow-list and its limits.

Every RankingService call is checked, before anything else runs (the request is not even
parsed): UNAUTHENTICATED without valid credentials where auth is required (or with bad ones,
always), PERMISSION_DENIED for an RPC not on the caller's list, RESOURCE_EXHAUSTED past its
concurrency or rate limit. Health and reflection are open to everyone (probes, tooling).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import grpc
import structlog

from scoring.core.access import LOCAL_CALLER, Caller, Callers
from scoring.core.settings import AuthSettings, TlsSettings
from scoring.gateway.interceptors import Handler, WrappingInterceptor
from scoring.gateway.prometheus import GatewayMetrics

logger = logging.getLogger(__name__)

# Services every caller may use without credentials: health (grpc.health.v1.Health) and
# reflection (grpc.reflection.v1alpha.ServerReflection, and any later version).
OPEN_SERVICES = ("grpc.health.", "grpc.reflection.")
# Label of the rejections whose caller is not known.
UNKNOWN = "unknown"
_BEARER = "bearer"


class TlsConfigError(ValueError):
    """TLS is on but its files are not set or not readable."""


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """The gateway's TLS credentials: its certificate and key, and under mutual TLS the CA
    that client certificates must be signed by.

    Raises:
        TlsConfigError: a file is not set or cannot be read (the message names the setting).
    """
    if tls.cert_file is None or tls.key_file is None:
        raise TlsConfigError(
            "TLS is on (SCORING_TLS__ENABLED) but SCORING_TLS__CERT_FILE and "
            "SCORING_TLS__KEY_FILE are not both set"
        )
    if tls.require_client_cert and tls.client_ca_file is None:
        raise TlsConfigError(
            "mutual TLS (SCORING_TLS__REQUIRE_CLIENT_CERT) needs SCORING_TLS__CLIENT_CA_FILE"
        )
    key, cert = _read("KEY_FILE", tls.key_file), _read("CERT_FILE", tls.cert_file)
    client_ca = None
    if tls.require_client_cert and tls.client_ca_file is not None:
        client_ca = _read("CLIENT_CA_FILE", tls.client_ca_file)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=tls.require_client_cert
    )


def _read(setting: str, path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"SCORING_TLS__{setting}={path}: {exc.strerror or exc}") from None


def add_port(server: grpc.aio.Server, address: str, tls: TlsSettings) -> int:
    """Adds the gateway's port to `server`: TLS when the settings turn it on; returns the
    port bound."""
    if tls.enabled:
        return server.add_secure_port(address, server_credentials(tls))
    return server.add_insecure_port(address)


class TokenBucket:
    """`rate` requests a second on average, at most `capacity` at once (single event loop:
    no lock)."""

    __slots__ = ("rate", "capacity", "tokens", "stamp", "clock")

    def __init__(
        self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        """Takes one token; False (and nothing taken) when the bucket is empty."""
        now = self.clock()
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class CallerLimits:
    """One caller's requests in flight and its token bucket (per gateway process)."""

    __slots__ = ("caller", "in_flight", "bucket")

    def __init__(self, caller: Caller, clock: Callable[[], float] = time.monotonic) -> None:
        self.caller = caller
        self.in_flight = 0
        self.bucket = (
            TokenBucket(caller.rate_per_s, caller.burst or 1, clock)
            if caller.rate_per_s is not None
            else None
        )

    def admit(self) -> tuple[str, str] | None:
        """Counts a request in (release it after), or (reason, message) when it is over a
        limit: the concurrency limit is checked first, so that it costs no rate token."""
        caller = self.caller
        if caller.max_concurrent is not None and self.in_flight >= caller.max_concurrent:
            return "concurrency", (
                f"caller {caller.name!r} has {self.in_flight} requests in flight, its "
                f"concurrency limit (max_concurrent {caller.max_concurrent}): retry later"
            )
        if self.bucket is not None and not self.bucket.take():
            return "rate", (
                f"caller {caller.name!r} is over its rate limit of {caller.rate_per_s:g} "
                f"requests/s (burst {caller.burst}): retry later"
            )
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight -= 1


class Rejected(Exception):
    """A request refused by the access check (code, metric reason, caller label, message)."""

    def __init__(self, code: grpc.StatusCode, reason: str, caller: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.caller, self.message = code, reason, caller, message


class AuthInterceptor(WrappingInterceptor):
    """Resolves, checks and limits the caller of each call; put it first in the chain.

    The wrapped handler of each method is built once; the check itself runs on every call.
    A bearer token, when sent, names the caller; without one, the client certificate's CN
    does under mutual TLS.
    """

    def __init__(
        self,
        callers: Callers,
        auth: AuthSettings,
        tls: TlsSettings,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.callers = callers
        self.required = auth.required
        # The CN names a caller only where gRPC verified the certificate against the CA.
        self.use_certificate = tls.enabled and tls.require_client_cert
        self.metrics = metrics
        self.limits = {
            name: CallerLimits(caller, clock)
            for name, caller in callers.by_name.items()
            if caller.limited
        }

    def wrap(self, handler: Handler, full_method: str) -> Handler | None:
        service, _, rpc = full_method.lstrip("/").rpartition("/")
        if service.startswith(OPEN_SERVICES):
            return handler
        inner = handler.unary_unary
        if inner is None:
            # Only unary methods are checked: fail closed on any other kind.
            logger.error("auth_unsupported_method method=%s", full_method)
            return None
        admit, reject = self.admit, self._reject
        bind_log = structlog.contextvars.bind_contextvars

        async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                caller, limits = admit(context, rpc)
            except Rejected as rejected:
                await reject(context, rpc, rejected)
            bind_log(caller=caller.name)
            try:
                return await inner(request, context)  # type: ignore[arg-type]
            finally:
                if limits is not None:
                    limits.release()

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def admit(
        self, context: grpc.aio.ServicerContext[Any, Any], rpc: str
    ) -> tuple[Caller, CallerLimits | None]:
        """The caller of a call to `rpc`, and its limits, the call counted in (release them
        when it ends).

        Raises:
            Rejected: unauthenticated (see `identify`), not allowed, or over a limit.
        """
        caller = self.identify(context)
        if not caller.allows(rpc):
            raise Rejected(
                grpc.StatusCode.PERMISSION_DENIED,
                "permission_denied",
                caller.name,
                f"caller {caller.name!r} may not call {rpc}",
            )
        limits = self.limits.get(caller.name)
        if limits is not None:
            over = limits.admit()
            if over is not None:
                reason, message = over
                raise Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED, reason, caller.name, message)
        return caller, limits

    def identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The caller of a call.

        Raises:
            Rejected: UNAUTHENTICATED: a bad or unknown token, or no known identity while
                auth is required.
        """
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                return self._with_token(value if isinstance(value, str) else value.decode())
        if self.use_certificate:
            names = context.auth_context().get("x509_common_name")
            cn = next(iter(names), b"").decode() if names else ""
            if cn:
                caller = self.callers.by_cn.get(cn)
                if caller is not None:
                    return caller
                if self.required:
                    raise _unauthenticated(f"the client certificate's CN {cn!r} is no known caller")
        if self.required:
            raise _unauthenticated(
                "no credentials: send `authorization: Bearer <token>`"
                + (" or a client certificate" if self.use_certificate else "")
            )
        return LOCAL_CALLER

    def _with_token(self, header: str) -> Caller:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != _BEARER or not token:
            raise _unauthenticated("authorization: expected `Bearer <token>`")
        caller = self.callers.with_token(token)
        if caller is None:
            raise _unauthenticated("the bearer token is not valid")
        return caller

    async def _reject(
        self, context: grpc.aio.ServicerContext[Any, Any], rpc: str, rejected: Rejected
    ) -> NoReturn:
        self.metrics.auth_rejected.labels(rejected.reason, rejected.caller).inc()
        self.metrics.requests.labels(rpc, rejected.code.name).inc()
        # Refusals over a limit can come by the thousand: counted, logged at debug only.
        level = (
            logging.DEBUG if rejected.code is grpc.StatusCode.RESOURCE_EXHAUSTED else logging.INFO
        )
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "auth_rejected rpc=%s caller=%s reason=%s message=%r",
                rpc,
                rejected.caller,
                rejected.reason,
                rejected.message,
            )
        await context.abort(rejected.code, rejected.message)
        raise AssertionError("abort returned")  # it raises: the stubs do not say so


def _unauthenticated(message: str) -> Rejected:
    return Rejected(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", UNKNOWN, message)
