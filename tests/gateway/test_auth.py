"""Access to the gateway without a server: callers from settings and file, the token bucket,
the concurrency limit, identity resolution (token, certificate CN, anonymous) and the checks
the interceptor makes on each call; and the registry's actor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from scoring.core.access import (
    LOCAL,
    AccessError,
    Actor,
    load_callers,
    registry_actor,
    token_sha256,
)
from scoring.core.settings import AuthSettings, CallerSettings, Settings, TlsSettings, settings_env
from scoring.gateway.auth import (
    AuthInterceptor,
    CallerLimits,
    Rejected,
    TlsConfigError,
    TokenBucket,
    server_credentials,
)
from scoring.gateway.prometheus import GatewayMetrics

from .helpers import Clock

WEB_TOKEN, ADMIN_TOKEN, BATCH_TOKEN = "web-token-1", "admin-token-1", "batch-token-1"
RANK = "/scoring.api.v1.RankingService/Rank"
HEALTH = "/grpc.health.v1.Health/Check"


def caller(name: str, token: str | None = None, **kw: Any) -> CallerSettings:
    digests = (token_sha256(token),) if token else ()
    return CallerSettings(name=name, token_sha256=digests, **kw)


def auth_settings(required: bool = True, **kw: Any) -> AuthSettings:
    return AuthSettings(
        required=required,
        callers=(
            caller("web", WEB_TOKEN, rpcs=("Rank", "Feedback"), max_concurrent=2),
            caller("ops", ADMIN_TOKEN, roles=("admin",)),
            caller("batch", BATCH_TOKEN, rpcs=("*",), rate_per_s=2, burst=3),
            caller("edge", cert_cn="edge.internal", rpcs=("Rank",)),
        ),
        **kw,
    )


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class FakeContext:
    """What the interceptor reads of a servicer context: metadata, the TLS peer, abort."""

    def __init__(self, token: str | None = None, cn: str | None = None, header: str = "") -> None:
        self.metadata: tuple[tuple[str, str], ...] = ()
        if token is not None or header:
            self.metadata = (("authorization", header or f"Bearer {token}"),)
        self.cn = cn

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [self.cn.encode()]} if self.cn else {}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def interceptor(
    auth: AuthSettings | None = None, mtls: bool = False, clock: Clock | None = None
) -> AuthInterceptor:
    auth = auth or auth_settings()
    tls = TlsSettings(enabled=mtls, require_client_cert=mtls)
    return AuthInterceptor(load_callers(auth), auth, tls, GatewayMetrics(), clock or Clock())


def rejected_count(gate: AuthInterceptor, reason: str, caller: str) -> float:
    value = gate.metrics.registry.get_sample_value(
        "scoring_auth_rejected_total", {"reason": reason, "caller": caller}
    )
    return value or 0.0


# --- callers and settings ------------------------------------------------------------------


def test_callers_load_from_a_yaml_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "callers.yaml"
    path.write_text(
        "callers:\n"
        "  - name: web\n"
        f"    token_sha256: ['{token_sha256('t1')}', '{token_sha256('t2').upper()}']\n"
        "    rpcs: [Rank]\n"
        "    rate_per_s: 2.5\n"
        "  - name: edge\n"
        "    cert_cn: edge.internal\n"
    )
    inline = json.dumps([{"name": "ops", "token_sha256": [token_sha256("t3")], "roles": ["admin"]}])
    settings = Settings.model_validate(
        {"auth": {"callers_file": str(path), "callers": json.loads(inline)}}
    )
    callers = load_callers(settings.auth)
    assert set(callers.by_name) == {"web", "edge", "ops"}
    web = callers.by_name["web"]
    assert callers.with_token("t1") is web and callers.with_token("t2") is web  # rotation
    assert callers.with_token("t3") is callers.by_name["ops"]
    assert callers.with_token("nope") is None
    assert web.rate_per_s == 2.5 and web.burst == 3  # the rate, rounded up
    assert callers.by_cn["edge.internal"].name == "edge"
    assert not callers.by_name["edge"].rpcs, "an empty list allows no RPC"


def test_a_list_file_and_json_work_too(tmp_path: Path) -> None:
    path = tmp_path / "callers.json"
    path.write_text(json.dumps([{"name": "a", "cert_cn": "a"}]))
    assert set(load_callers(AuthSettings(callers_file=path)).by_name) == {"a"}


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"name": "x", "token_sha256": ["a-raw-token"]}, "not the token"),
        ({"name": "x"}, "needs a cert_cn or a token_sha256"),
        ({"name": "x", "cert_cn": "x", "rpcs": ["rank me"]}, "no method name"),
        ({"name": "x y", "cert_cn": "x"}, "name"),
        ({"name": "x", "cert_cn": "x", "burst": 3}, "burst without rate_per_s"),
        ({"name": "x", "cert_cn": "x", "token": "t"}, "token"),  # no raw token field
    ],
)
def test_bad_caller_entries_are_refused(entry: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        CallerSettings.model_validate(entry)


def test_a_bad_callers_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "callers.yaml"
    path.write_text("- name: web\n  token_sha256: [secret]\n")
    with pytest.raises(AccessError, match=r"callers.yaml: 0\.token_sha256"):
        load_callers(AuthSettings(callers_file=path))
    with pytest.raises(AccessError, match="missing.yaml"):
        load_callers(AuthSettings(callers_file=tmp_path / "missing.yaml"))


def test_duplicate_names_tokens_and_cns_are_refused() -> None:
    for callers, error in [
        ((caller("a", "t"), caller("a", "u")), "name 'a' is taken"),
        ((caller("a", "t"), caller("b", "t")), "share a token"),
        ((caller("a", cert_cn="x"), caller("b", cert_cn="x")), "share the certificate CN"),
        ((caller(LOCAL, "t"),), "name 'local' is taken"),
    ]:
        with pytest.raises(AccessError, match=error):
            load_callers(AuthSettings(callers=callers))


def test_auth_and_tls_settings_reach_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings.model_validate(
        {
            "auth": auth_settings().model_dump() | {"token": "t", "admin_token": "a"},
            "tls": {"enabled": True, "cert_file": "s.crt", "key_file": "s.key"},
        }
    )
    env = settings_env(original)
    assert env["SCORING_AUTH__TOKEN"] == "t" and env["SCORING_AUTH__ADMIN_TOKEN"] == "a"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_tls_needs_its_files() -> None:
    with pytest.raises(TlsConfigError, match="CERT_FILE"):
        server_credentials(TlsSettings(enabled=True))
    with pytest.raises(TlsConfigError, match="CLIENT_CA_FILE"):
        server_credentials(
            TlsSettings(
                enabled=True, cert_file=Path("c"), key_file=Path("k"), require_client_cert=True
            )
        )
    with pytest.raises(TlsConfigError, match="KEY_FILE=/nonexistent"):
        server_credentials(
            TlsSettings(enabled=True, cert_file=Path("c"), key_file=Path("/nonexistent"))
        )


# --- limits --------------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, capacity=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.25  # half a token
    assert not bucket.take()
    clock.now += 0.25  # one token
    assert bucket.take() and not bucket.take()
    clock.now += 100  # refills up to the burst only
    assert sum(bucket.take() for _ in range(10)) == 3


def test_concurrency_is_checked_before_the_rate_and_released() -> None:
    clock = Clock()
    limits = CallerLimits(load_callers(auth_settings()).by_name["web"], clock)
    assert limits.admit() is None and limits.admit() is None
    over = limits.admit()
    assert over is not None and over[0] == "concurrency"
    assert "'web'" in over[1] and "max_concurrent 2" in over[1]
    limits.release()
    assert limits.admit() is None

    batch = CallerLimits(load_callers(auth_settings()).by_name["batch"], clock)
    results = [batch.admit() for _ in range(4)]
    assert results[:3] == [None, None, None]
    assert results[3] is not None and results[3][0] == "rate"
    assert "rate limit of 2 requests/s (burst 3)" in results[3][1]


# --- identity ------------------------------------------------------------------------------


def test_a_token_names_the_caller() -> None:
    gate = interceptor()
    assert gate.identify(FakeContext(WEB_TOKEN)).name == "web"  # type: ignore[arg-type]
    header = FakeContext(header=f"bearer  {ADMIN_TOKEN} ")
    assert gate.identify(header).name == "ops"  # type: ignore[arg-type]


@pytest.mark.parametrize("required", [True, False])
def test_bad_credentials_are_refused_even_when_auth_is_optional(required: bool) -> None:
    gate = interceptor(auth_settings(required=required))
    for context in (FakeContext("wrong"), FakeContext(header="Basic abc"), FakeContext("")):
        with pytest.raises(Rejected) as refused:
            gate.identify(context)  # type: ignore[arg-type]
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_no_credentials_is_local_unless_auth_is_required() -> None:
    assert interceptor(auth_settings(required=False)).identify(FakeContext()).name == LOCAL  # type: ignore[arg-type]
    with pytest.raises(Rejected, match="no credentials"):
        interceptor().identify(FakeContext())  # type: ignore[arg-type]


def test_the_certificate_cn_names_the_caller_under_mutual_tls_only() -> None:
    gate = interceptor(mtls=True)
    assert gate.identify(FakeContext(cn="edge.internal")).name == "edge"  # type: ignore[arg-type]
    # A token, when sent, decides.
    assert gate.identify(FakeContext(WEB_TOKEN, cn="edge.internal")).name == "web"  # type: ignore[arg-type]
    with pytest.raises(Rejected, match="CN 'stranger' is no known caller"):
        gate.identify(FakeContext(cn="stranger"))  # type: ignore[arg-type]
    # Without mutual TLS nobody verified the certificate: its CN names no one.
    with pytest.raises(Rejected, match="no credentials"):
        interceptor(mtls=False).identify(FakeContext(cn="edge.internal"))  # type: ignore[arg-type]


# --- the interceptor on a call -------------------------------------------------------------


def handler_chain(
    gate: AuthInterceptor, method: str, inner: Callable[[Any, Any], Awaitable[Any]]
) -> grpc.RpcMethodHandler[Any, Any] | None:
    async def continuation(details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(inner)

    class Details:
        def __init__(self, method: str) -> None:
            self.method = method
            self.invocation_metadata = ()

    return asyncio.run(gate.intercept_service(continuation, Details(method)))  # type: ignore[arg-type]


def call(handler: Any, context: FakeContext) -> Any:
    return asyncio.run(handler.unary_unary(b"", context))


def test_each_call_is_checked_and_counted() -> None:
    seen: list[str] = []

    async def rank(request: Any, context: Any) -> str:
        import structlog

        seen.append(structlog.contextvars.get_contextvars().get("caller", "?"))
        return "ranked"

    gate = interceptor()
    handler = handler_chain(gate, RANK, rank)
    assert handler is not None
    assert handler_chain(gate, RANK, rank) is handler, "wrapped once per method"
    assert call(handler, FakeContext(WEB_TOKEN)) == "ranked"
    assert call(handler, FakeContext(BATCH_TOKEN)) == "ranked"
    assert seen == ["web", "batch"]

    with pytest.raises(Aborted) as refused:
        call(handler, FakeContext("wrong"))
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(Aborted) as refused:
        call(handler, FakeContext(ADMIN_TOKEN))  # an admin without RPCs
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details == "caller 'ops' may not call Rank"
    assert rejected_count(gate, "unauthenticated", "unknown") == 1
    assert rejected_count(gate, "permission_denied", "ops") == 1
    assert seen == ["web", "batch"], "a refused call never reaches the service"


def test_a_limited_caller_is_released_when_its_call_ends() -> None:
    gate = interceptor()

    async def failing(request: Any, context: Any) -> str:
        raise RuntimeError("boom")

    handler = handler_chain(gate, RANK, failing)
    for _ in range(3):  # the limit is 2: each failed call released its slot
        with pytest.raises(RuntimeError):
            call(handler, FakeContext(WEB_TOKEN))
    assert gate.limits["web"].in_flight == 0


def test_concurrent_calls_past_the_limit_are_resource_exhausted() -> None:
    gate = interceptor()
    release = asyncio.Event()

    async def slow(request: Any, context: Any) -> str:
        await release.wait()
        return "ok"

    handler = handler_chain(gate, RANK, slow)
    assert handler is not None and handler.unary_unary is not None

    async def scenario() -> list[Any]:
        calls = [
            asyncio.ensure_future(handler.unary_unary(b"", FakeContext(WEB_TOKEN)))  # type: ignore[misc, arg-type]
            for _ in range(3)
        ]
        await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[:2] == ["ok", "ok"]
    assert isinstance(results[2], Aborted)
    assert results[2].code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "'web'" in results[2].details
    assert rejected_count(gate, "concurrency", "web") == 1


def test_health_and_reflection_are_open_to_everyone() -> None:
    async def check(request: Any, context: Any) -> str:
        return "SERVING"

    handler = handler_chain(interceptor(), HEALTH, check)
    assert call(handler, FakeContext()) == "SERVING"
    reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert call(handler_chain(interceptor(), reflection, check), FakeContext()) == "SERVING"


# --- the registry's actor ------------------------------------------------------------------


def test_registry_changes_need_an_admin_token_when_auth_is_required() -> None:
    auth = auth_settings()
    assert registry_actor(auth, ADMIN_TOKEN, "me@host") == Actor("ops", "token")
    with pytest.raises(AccessError, match="need an admin identity"):
        registry_actor(auth, None, "me@host")
    with pytest.raises(AccessError, match="'web' has no 'admin' role"):
        registry_actor(auth, WEB_TOKEN, "me@host")
    with pytest.raises(AccessError, match="matches no caller"):
        registry_actor(auth, "forged", "me@host")


def test_with_auth_off_the_actor_is_marked_unauthenticated() -> None:
    auth = auth_settings(required=False)
    actor = registry_actor(auth, None, "me@host")
    assert actor == Actor("local:me@host (auth off)", "none")
    assert actor.audit() == {"identity": "local:me@host (auth off)", "authenticated_by": "none"}
    # A token given is still checked.
    assert registry_actor(auth, ADMIN_TOKEN, "me@host").name == "ops"
    with pytest.raises(AccessError):
        registry_actor(auth, "forged", "me@host")
