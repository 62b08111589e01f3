"""Client channels to the gateway as the settings ask: plaintext or TLS (with a client
certificate under mutual TLS), and a bearer token on every call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from scoring.core.settings import TlsSettings


def _read(path: Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """Trusts `tls.ca_file` (the system's roots when unset); presents the client certificate
    when one is set (mutual TLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.client_key_file),
        certificate_chain=_read(tls.client_cert_file),
    )


def open_channel(address: str, tls: TlsSettings | None = None, token: str | None = None) -> Any:
    """A blocking channel to `address`: TLS when `tls.enabled`, with `authorization: Bearer
    <token>` on every call when a token is given. Close it (or use it as a context manager).

    Typed Any: grpc.intercept_channel's result is a grpc.Channel the stubs accept, without a
    type of its own in the stubs.
    """
    if tls is not None and tls.enabled:
        options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
        channel = grpc.secure_channel(address, channel_credentials(tls), options=options)
    else:
        channel = grpc.insecure_channel(address)
    if token:
        return grpc.intercept_channel(channel, BearerToken(token))
    return channel


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to each call's metadata."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)
