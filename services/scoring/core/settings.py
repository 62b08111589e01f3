"""One settings object for every process; defaults run locally, SCORING_* variables override.

Nested sections use a double underscore: `SCORING_TRITON__URL=10.0.0.5:8001`,
`SCORING_GATEWAY__MAX_CANDIDATES=500`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeastSettings(BaseModel):
    """Where the Feast feature repository (feature_store.yaml and definitions) lives."""

    repo_path: Path = Path("features")
    # Store profile: None uses <repo_path>/feature_store.yaml (local: SQLite, files); set
    # features/feature_store.production.yaml for Redis + a PostgreSQL SQL registry.
    fs_yaml: Path | None = None


class TritonSettings(BaseModel):
    """The Triton server the gateway calls, and how the local one is started."""

    url: str = "127.0.0.1:8001"
    http_port: int = 8000
    metrics_port: int = 8002
    model_repository: Path = Path("model_repository")
    # Per-model config file: "cpu" serves configs/cpu.pbtxt (python backend, CPU); "" serves
    # config.pbtxt, the production pytorch_libtorch GPU config.
    config_name: str = "cpu"
    # Build folder for the local backend directory (python backend + TorchScript backend).
    work_dir: Path = Path(".triton")
    startup_timeout_s: float = 120.0


class GatewaySettings(BaseModel):
    """The gRPC gateway: address, limits and the default model per candidate type."""

    host: str = "127.0.0.1"
    port: int = 50051
    # Gateway processes on this machine sharing `port` (SO_REUSEPORT: the kernel spreads new
    # connections over them); worker i serves Prometheus metrics on `metrics_port` + i. 1: one
    # process, no parent. A worker that dies stops the others: the parent exits non-zero.
    workers: int = Field(default=1, ge=1)
    max_candidates: int = Field(default=1000, ge=1)
    # Items a Rank request's cart may hold (RankRequest.cart_item_ids); the basket model reads
    # the first core.targets.CART_SLOTS (20) of them, all of them filter and propose candidates.
    max_cart_items: int = Field(default=50, ge=1)
    # Deadline applied when the caller sends none.
    default_timeout_ms: int = Field(default=1000, ge=1)
    health_poll_interval_s: float = Field(default=1.0, gt=0)
    # Circuit breaker per model: this many failed inferences in a row (timeouts, Triton down,
    # a model failing while READY) and requests skip Triton for the popularity fallback until
    # the health loop's own probe answers again (gateway/breaker.py). A timeout counts only
    # when Triton had at least breaker_min_timeout_ms: a caller's tiny deadline is not a fault.
    breaker_failures: int = Field(default=3, ge=1)
    breaker_min_timeout_ms: int = Field(default=50, ge=0)
    probe_timeout_ms: int = Field(default=1000, ge=1)
    # A model whose probe fails while Triton reports it READY (a dead python-backend stub) is
    # reloaded in Triton, at most once per interval; False leaves that to an operator.
    triton_repair: bool = True
    triton_repair_interval_s: float = Field(default=30.0, gt=0)
    # Threads for Feast SDK reads; one, because the SQLite online store shares a connection.
    feature_workers: int = Field(default=1, ge=1)
    # Feature reads get at most this long (and at most 70% of the request's time left); when
    # they run out, defaults are used and the answer is flagged degraded.
    feature_timeout_ms: int = Field(default=300, ge=1)
    # Prometheus /metrics port on `host`; 0 turns the endpoint off.
    metrics_port: int = Field(default=9464, ge=0)
    # The host other processes reach this gateway at, advertised in its registry heartbeat
    # (the console scrapes its metrics there); None: `host`, or the host name when `host` is
    # a wildcard. k8s sets the pod's IP (a pod name has no DNS record).
    advertise_host: str | None = None
    # Served-feature log: what was scored, appended as Parquet for training joins
    # (<feast.repo_path>/data/served unless set).
    feature_log_dir: Path = Path("features/data/served")
    feature_log_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    feature_log_flush_rows: int = Field(default=5000, ge=1)
    feature_log_flush_interval_s: float = Field(default=5.0, gt=0)
    # At most this many candidate rows wait in memory (queued, or kept while writes fail and
    # are retried); beyond it new requests are not logged, counted in
    # scoring_feature_log_dropped_rows_total{reason="queue_full"}: the request path never waits.
    feature_log_max_rows: int = Field(default=200_000, ge=1)
    # A failed write is retried with a backoff doubling up to this; the rows stay in memory.
    feature_log_retry_max_s: float = Field(default=30.0, gt=0)
    max_batch_requests: int = Field(default=64, ge=1)
    # Candidates of a RankBatch, all its requests together: bounds the batch's work (the loop
    # is shared with other callers) and its answer (~80 bytes a candidate; a gRPC client takes
    # 4 MiB by default, 64 x 1,000 candidates made 5 MB).
    max_batch_candidates: int = Field(default=10_000, ge=1)
    # A batch's requests read features this many at a time, each with its own feature budget
    # from when its turn comes: 64 reads started at once queued behind each other and ran out
    # of budget. 1 suits the SDK path's one worker thread (feature_workers).
    batch_feature_reads: int = Field(default=1, ge=1)
    # How far ahead of the server clock a context or Feedback timestamp may be; later ones are
    # refused (INVALID_ARGUMENT). Past times are accepted: ranking a log as of its time.
    max_clock_skew_s: float = Field(default=300.0, ge=0)
    # Request ids this gateway served last, kept to match Feedback against: Feedback for one it
    # does not hold is still accepted (another replica or an earlier run may have served it),
    # recorded with `matched: false` and counted (scoring_feedback_unmatched_total).
    feedback_match_window: int = Field(default=100_000, ge=0)
    # Online read path: "redis" reads Feast's Redis layout directly (pipelined, cached);
    # "sdk" goes through the Feast SDK; "auto" picks redis when the online store is Redis.
    feature_read: Literal["auto", "sdk", "redis"] = "auto"
    # Cache of candidate (item/activity) rows on the redis path; 0 rows turns it off.
    feature_cache_rows: int = Field(default=100_000, ge=0)
    feature_cache_ttl_s: float = Field(default=30.0, ge=0)
    # Experiment events (JSON lines): the arm that served each request, shadow scores, and the
    # feedback (clicks, purchases) callers send back; `scoring experiments report` joins them
    # (<feast.repo_path>/data/events unless set).
    events_dir: Path = Path("features/data/events")
    # Memory the events waiting to be written may take (queued, or kept while a failed write
    # is retried; about 1 KiB an event plus 32 B per candidate it lists); beyond it events are
    # not recorded, counted in scoring_events_dropped_total{reason="queue_full"}: the request
    # path never waits.
    events_max_queued_mib: int = Field(default=64, ge=1)
    # Shadow scoring runs off the hot path; beyond this many in flight, shadow calls are skipped
    # (and counted) rather than queued behind live traffic.
    shadow_max_in_flight: int = Field(default=8, ge=1)
    # Once serving, move what start-up allocated (Feast, pandas, torch metadata: ~350k objects)
    # out of the garbage collector's reach (gc.freeze): a full collection then scans only what
    # requests allocate, instead of pausing a request for up to 200 ms at N = 1000.
    gc_freeze: bool = True
    # The gateway's event loop: uvloop (libuv, in C) spends less of each request in the loop's
    # own bookkeeping than the standard library's; "asyncio" is the fallback.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"


class PrivacySettings(BaseModel):
    """User ids in logs and metrics, what the served-feature log keeps, and for how long.

    User ids are written as keyed hashes (HMAC-SHA256, scoring.core.privacy) under `secret`,
    else the content of `secret_file`. Locally that file is generated on first use (a random
    key per installation, under .run/); production sets SCORING_PRIVACY__SECRET or
    SCORING_PRIVACY__SECRET_FILE (a mounted secret, the same for every replica and the CLI) and
    SCORING_PRIVACY__GENERATE_SECRET=false, so a missing secret stops the process instead.
    """

    secret: SecretStr | None = None
    secret_file: Path = Path(".run/privacy_secret")
    generate_secret: bool = True
    # Served-feature log columns left out, and columns written as keyed hashes (user_id by
    # default: training needs only a stable user key, since each row holds its model input).
    feature_log_drop: tuple[str, ...] = ()
    feature_log_hash: tuple[str, ...] = ("user_id",)
    # Day folders older than this are deleted (by the gateway as days roll over, or by
    # `scoring privacy expire`); 0 keeps them.
    feature_log_retention_days: int = Field(default=90, ge=0)
    events_retention_days: int = Field(default=90, ge=0)


class TlsSettings(BaseModel):
    """TLS on the gateway's gRPC port (server side), and how clients reach a TLS gateway.

    Off locally (plaintext on 127.0.0.1). With `enabled`, the gateway serves `cert_file` and
    `key_file` (PEM); with `require_client_cert` too (mutual TLS), only clients whose
    certificate `client_ca_file` signed can connect, and the certificate's subject CN names
    the caller (AuthSettings.callers). The client side (scoring rank, the healthcheck, the
    Python client) trusts `ca_file` (the system's roots when unset), presents
    `client_cert_file`/`client_key_file` under mutual TLS, and checks the gateway's
    certificate for `server_name` when the address differs (127.0.0.1 in a container).
    """

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    require_client_cert: bool = False
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    server_name: str | None = None


# An RPC method of the RankingService (Rank, RankBatch, Feedback), or "*" for all of them.
_RPC_NAME = r"^(\*|[A-Z][A-Za-z0-9]*)$"
# A caller's name: it goes into logs, metric labels and the registry's audit trail.
_CALLER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


class CallerSettings(BaseModel):
    """One caller of the gateway: how it is recognised, what it may call, and its limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_CALLER_NAME)
    # Recognised by the subject CN of its client certificate (mutual TLS) ...
    cert_cn: str | None = Field(default=None, min_length=1)
    # ... and/or by a bearer token, kept as the token's SHA-256 (hex), never the token itself
    # (`scoring access token` makes one). Several during a rotation: the old and the new.
    token_sha256: tuple[str, ...] = ()
    # RankingService methods it may call ("*": all); health and reflection need none.
    rpcs: tuple[str, ...] = ()
    # "admin": may change the model registry (promote, canary, shadow, stop, rollback).
    roles: tuple[str, ...] = ()
    # Requests of this caller in flight at once, and a token bucket of `rate_per_s` requests a
    # second holding `burst` (default: the rate, rounded up); past either, RESOURCE_EXHAUSTED.
    # Per gateway replica. None: no limit.
    max_concurrent: int | None = Field(default=None, ge=1)
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)

    @field_validator("token_sha256")
    @classmethod
    def _hex_digests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        digests = tuple(v.strip().lower() for v in value)
        for digest in digests:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(
                    "token_sha256: a hex SHA-256 of the token (64 characters), not the token"
                )
        return digests

    @field_validator("rpcs")
    @classmethod
    def _rpc_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(_RPC_NAME, name):
                raise ValueError(f"rpcs: {name!r} is no method name (Rank, RankBatch, Feedback)")
        return value

    @model_validator(mode="after")
    def _recognisable(self) -> CallerSettings:
        if self.cert_cn is None and not self.token_sha256:
            raise ValueError(f"caller {self.name!r}: needs a cert_cn or a token_sha256")
        if self.burst is not None and self.rate_per_s is None:
            raise ValueError(f"caller {self.name!r}: burst without rate_per_s")
        return self


class AuthSettings(BaseModel):
    """Who may call the gateway and change the model registry (scoring.core.access).

    Callers come from `callers_file` (YAML or JSON: a list of CallerSettings, or a mapping
    with a `callers` list) plus `callers` (SCORING_AUTH__CALLERS, JSON). With `required`
    false (the local default), a caller without credentials is "local" and may call every
    RPC, and registry changes are recorded as unauthenticated; with `required`, unknown
    callers get UNAUTHENTICATED and registry changes need an admin's token. Credentials that
    are presented are checked either way.
    """

    required: bool = False
    callers_file: Path | None = None
    callers: tuple[CallerSettings, ...] = ()
    # The bearer token this process presents to the gateway (scoring rank, the client) ...
    token: SecretStr | None = None
    # ... and the admin token registry changes present (`scoring models promote --token`).
    admin_token: SecretStr | None = None


class RegistrySettings(BaseModel):
    """The model registry (versions, stages, audit) and the promotion policy."""

    # SQLAlchemy URL: SQLite by default, PostgreSQL in production, e.g.
    # postgresql+psycopg://scoring@postgres:5432/scoring
    url: str = "sqlite:///.run/model_registry.db"
    # Quality gate: a candidate may trail production by at most `gate_tolerance` on each of
    # these metrics (higher is better; logloss is compared the other way round) unless forced.
    gate_metrics: tuple[str, ...] = ("auc", "ndcg@10", "logloss")
    gate_tolerance: float = Field(default=0.005, ge=0)
    # A promotion waits this long for every live gateway to apply the new routing ...
    ack_timeout_s: float = Field(default=30.0, gt=0)
    # ... then this long for requests already sent to the old version to finish, and unloads it.
    drain_s: float = Field(default=2.0, ge=0)
    # A gateway counts as live while its heartbeat (each health round) is younger than this.
    heartbeat_max_age_s: float = Field(default=10.0, gt=0)


class ConsoleSettings(BaseModel):
    """The web console for MLOps and feature engineers (`scoring console`, scoring.console)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0)
    # The gateways' Prometheus /metrics URLs; empty: the one each live gateway's heartbeat
    # advertises (the embedded default). Compose and k8s list their replicas here.
    metrics_urls: tuple[str, ...] = ()
    # How often the Serving page's sampler scrapes them (rates come from two samples).
    scrape_interval_s: float = Field(default=5.0, gt=0)
    # A view without a ttl counts as stale once its newest online row is older than this; a
    # view with one, once its newest row is older than its ttl (the gateway then serves its
    # features' defaults).
    stale_after_s: float = Field(default=2 * 86400.0, gt=0)
    # A login lasts this long.
    session_ttl_s: float = Field(default=8 * 3600.0, gt=0)
    # Feast's own UI (`feast ui`), linked from the Features page where it shows more.
    feast_ui_url: str | None = None


class ImplicitFeedbackSettings(BaseModel):
    """How a target learns from a log's positive events (scoring.trainer.implicit).

    `mode`: "auto" uses the labelled impressions when there are at least `min_impressions` of
    them and adds implicit examples otherwise; "both" always combines them; "impressions" and
    "implicit" use one source only.
    """

    mode: Literal["auto", "impressions", "implicit", "both"] = "auto"
    min_impressions: int = Field(default=1000, ge=0)
    # Event type -> weight (0: not a positive); the defaults are
    # scoring.evaluation.PositiveEvents' (a test pins them).
    positive_events: dict[str, float] = Field(
        default_factory=lambda: {"purchase": 1.0, "add_to_cart": 0.7, "click": 0.5, "view": 0.3}
    )
    # Sampled negatives per positive, and the share of them drawn by popularity (the rest
    # uniformly), from the items the user had not interacted with at the positive's time.
    # Uniform by default: on Ta-Feng, half by popularity ranked 7.8% below the most-bought
    # baseline (HR@10), all uniform 8.3% above it (docs/data.md).
    negatives: int = Field(default=4, ge=1)
    popularity_share: float = Field(default=0.0, ge=0.0, le=1.0)
    # Implicit examples (positives and negatives) at most: a seeded sample of positive episodes.
    max_rows: int = Field(default=300_000, ge=100)
    seed: int = 7


class BasketExamplesSettings(BaseModel):
    """How a basket target (one with a cart feature service) learns from a log's baskets
    (scoring.trainer.baskets): one item of each basket held out, the rest its cart."""

    # Sampled negatives per held-out item, and the share of them drawn by popularity (the rest
    # uniformly): popular items that do not go with the cart are the hard negatives. 16 rather
    # than 8: a shop with few, large baskets (Online Retail: 14k baskets) learns the cart
    # features better from more negatives per basket (HR@10 0.7889 -> 0.7910); training rows
    # and time about double.
    negatives: int = Field(default=16, ge=1)
    popularity_share: float = Field(default=0.25, ge=0.0, le=1.0)
    # Baskets used at most (a seeded sample): Ta-Feng has about 120,000.
    max_baskets: int = Field(default=25_000, ge=10)
    seed: int = 7


class TrainingSettings(BaseModel):
    """Per-target training data settings (targets without an entry train on impressions)."""

    implicit: dict[str, ImplicitFeedbackSettings] = Field(
        default_factory=lambda: {"item_ranker": ImplicitFeedbackSettings()}
    )
    baskets: BasketExamplesSettings = BasketExamplesSettings()


class SparkSettings(BaseModel):
    """Where the offline jobs run when they run on Spark (scoring.core.spark).

    `master`: "local[N]" (N cores of this machine, the tests' and one machine's default) or a
    cluster's master URL (spark://host:7077, yarn, k8s://...); under spark-submit the
    session it provides is used as is.
    """

    master: str = "local[2]"
    app_name: str = "scoring"
    # The driver's JVM heap (in local mode the executors share it).
    driver_memory: str = "1g"
    # Shuffle partitions (Spark's default of 200 is far too many for one machine).
    shuffle_partitions: int = Field(default=8, ge=1)
    # Spark's scratch space (shuffle files, spills); None: Spark's default (/tmp).
    local_dir: Path | None = None
    # Further Spark properties, e.g. {"spark.executor.memory": "8g"}.
    conf: dict[str, str] = Field(default_factory=dict)


class Settings(BaseSettings):
    """All settings, built once in an entrypoint and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="SCORING_", env_nested_delimiter="__", extra="ignore"
    )

    feast: FeastSettings = FeastSettings()
    triton: TritonSettings = TritonSettings()
    gateway: GatewaySettings = GatewaySettings()
    registry: RegistrySettings = RegistrySettings()
    privacy: PrivacySettings = PrivacySettings()
    tls: TlsSettings = TlsSettings()
    auth: AuthSettings = AuthSettings()
    console: ConsoleSettings = ConsoleSettings()
    training: TrainingSettings = TrainingSettings()
    spark: SparkSettings = SparkSettings()
    # Where `scoring data generate|import` computes the feature tables: "pandas" (in this
    # process, the embedded default) or "spark" (a PySpark job on settings.spark.master).
    build_engine: Literal["pandas", "spark"] = "pandas"
    log_json: bool = False
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _logs_follow_the_feature_repo(self) -> Settings:
        """The gateway's served-feature and event logs live in the feature repo's data folder
        unless set: another repo (SCORING_FEAST__REPO_PATH) gets its own logs."""
        data = self.feast.repo_path / "data"
        if "feature_log_dir" not in self.gateway.model_fields_set:
            self.gateway.feature_log_dir = data / "served"
        if "events_dir" not in self.gateway.model_fields_set:
            self.gateway.events_dir = data / "events"
        return self


def settings_env(settings: Settings) -> dict[str, str]:
    """The SCORING_* environment variables that reproduce `settings` in a child process."""
    env: dict[str, str] = {}
    for section, value in settings.model_dump(mode="json").items():
        if isinstance(value, dict):
            for key, item in value.items():
                if item is not None:  # unset optional settings stay unset in the child
                    text = json.dumps(item) if isinstance(item, list | dict) else str(item)
                    env[f"SCORING_{section.upper()}__{key.upper()}"] = text
        else:
            env[f"SCORING_{section.upper()}"] = str(value)
    secrets = {  # dumped masked above
        "SCORING_PRIVACY__SECRET": settings.privacy.secret,
        "SCORING_AUTH__TOKEN": settings.auth.token,
        "SCORING_AUTH__ADMIN_TOKEN": settings.auth.admin_token,
    }
    for name, secret in secrets.items():
        if secret is not None:
            env[name] = secret.get_secret_value()
    return env
