"""The base of the gateway's server interceptors: each method's handler is wrapped once, on the
method's first call; every later call costs one dict lookup."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

# Generic in the stubs only: a string, so that it is never evaluated.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handler of each method as `wrap` says, once per method."""

    def __init__(self) -> None:
        self._wrapped: dict[str, Handler | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED, not kept: a method may be added later
        wrapped = self._wrapped[method] = self.wrap(handler, method)
        return wrapped

    @abc.abstractmethod
    def wrap(self, handler: Handler, full_method: str) -> Handler | None:
        """The handler that serves `full_method` ("/package.Service/Method") in place of
        `handler`: `handler` itself to leave it as it is, None to refuse the method."""
