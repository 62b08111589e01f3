"""The gateways' Prometheus metrics as the console reads them: one scrape of a /metrics URL, a
sampler thread that keeps a bounded ring of scrapes per gateway, and the arithmetic on two
scrapes of one gateway (counter deltas across a restart, histogram percentiles from bucket
deltas, as Prometheus' `histogram_quantile` computes them).

The Serving page reads rates and percentiles from it; the Features page reads counters of the
newest scrape (`latest`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger(__name__)

# The rates and percentiles of the page are over this much of the newest samples; the charts
# over the whole ring.
WINDOW_S = 60.0
RING_S = 15 * 60.0
# A /metrics answer larger than this is refused (a gateway's is a few hundred kB at most).
MAX_BYTES = 16 * 2**20

Labels = tuple[str, ...]


class ScrapeError(Exception):
    """A /metrics URL did not answer, answered an error, or not in the Prometheus text format."""


@dataclass(frozen=True, slots=True)
class Scrape:
    """One read of a gateway's /metrics: each sample's value by sample name (a counter's
    `scoring_requests_total`, a histogram's `..._bucket`, `..._count`, `..._sum`).

    Attributes:
        at: when it was read (Unix seconds).
    """

    url: str
    at: float
    samples: Mapping[str, tuple[tuple[Mapping[str, str], float], ...]]

    def values(self, name: str, **match: str) -> list[tuple[Mapping[str, str], float]]:
        """The (labels, value) of every sample called `name` whose labels include `match`."""
        return [
            (labels, value)
            for labels, value in self.samples.get(name, ())
            if all(labels.get(k) == v for k, v in match.items())
        ]

    def total(self, name: str, **match: str) -> float:
        """The sum of the samples called `name` whose labels include `match` (0 for none)."""
        return sum(value for _, value in self.values(name, **match))

    def by(self, name: str, labels: Sequence[str], **match: str) -> dict[Labels, float]:
        """The samples called `name` summed per value of `labels` (the other labels summed
        over), e.g. `by("scoring_requests_total", ["code"])` -> {("OK",): 12.0, ...}."""
        out: dict[Labels, float] = {}
        for sample_labels, value in self.values(name, **match):
            key = tuple(sample_labels.get(k, "") for k in labels)
            out[key] = out.get(key, 0.0) + value
        return out

    def has(self, name: str) -> bool:
        """Whether the gateway exposes samples called `name` (a feature cache, say)."""
        return name in self.samples


def parse(url: str, text: str, at: float | None = None) -> Scrape:
    """A Scrape of Prometheus exposition `text`.

    Raises:
        ScrapeError: the text is not in the Prometheus text format.
    """
    samples: dict[str, list[tuple[Mapping[str, str], float]]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    except ValueError as exc:
        raise ScrapeError(f"{url}: not Prometheus metrics ({exc})") from None
    return Scrape(url, time.time() if at is None else at, {k: tuple(v) for k, v in samples.items()})


def scrape(url: str, timeout_s: float = 2.0) -> Scrape:
    """Reads `url` (an http(s) /metrics endpoint) once.

    Raises:
        ScrapeError: not an http(s) URL, not reachable within `timeout_s`, an HTTP error, or
            not Prometheus metrics.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise ScrapeError(f"{url}: not an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ScrapeError(f"{url}: not reachable ({reason})") from None
    if len(body) > MAX_BYTES:
        raise ScrapeError(f"{url}: answer larger than {MAX_BYTES} bytes")
    return parse(url, body.decode("utf-8", errors="replace"))


def increase(before: float, after: float) -> float:
    """How much a counter grew between two reads; a counter that went down was reset (its
    process restarted), so all of `after` is new (Prometheus' `increase`)."""
    return after - before if after >= before else after


def deltas(
    old: Scrape | None, new: Scrape, name: str, labels: Sequence[str], **match: str
) -> dict[Labels, float]:
    """The growth of counter samples `name` per value of `labels` from `old` to `new` (the
    value since the process started when `old` is None)."""
    now = new.by(name, labels, **match)
    if old is None:
        return now
    before = old.by(name, labels, **match)
    return {key: increase(before.get(key, 0.0), value) for key, value in now.items()}


def bucket_deltas(
    old: Scrape | None, new: Scrape, histogram: str, labels: Sequence[str], **match: str
) -> dict[Labels, dict[float, float]]:
    """A histogram's cumulative bucket counts gained from `old` to `new`, per value of
    `labels`: {labels: {upper bound: count}}, the +Inf bucket included."""
    raw = deltas(old, new, f"{histogram}_bucket", [*labels, "le"], **match)
    out: dict[Labels, dict[float, float]] = {}
    for key, count in raw.items():
        out.setdefault(key[:-1], {})[float(key[-1])] = count
    return out


def merge_buckets(parts: Sequence[Mapping[float, float]]) -> dict[float, float]:
    """Buckets of several series (targets, gateways) added up."""
    out: dict[float, float] = {}
    for part in parts:
        for bound, count in part.items():
            out[bound] = out.get(bound, 0.0) + count
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The `q` quantile of cumulative histogram buckets {upper bound: count}, interpolated
    linearly inside its bucket as Prometheus' `histogram_quantile` does (a quantile in the
    +Inf bucket is the highest finite bound). None without observations.
    """
    items = sorted(buckets.items())
    if not items:
        return None
    # Cumulative counts never fall with the bound; bucket deltas across a reset might.
    running, cumulative = 0.0, []
    for bound, count in items:
        running = max(running, count)
        cumulative.append((bound, running))
    total = cumulative[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        if not math.isinf(bound):
            lower = bound
        below = count
    return lower


def window(ring: Sequence[Scrape], seconds: float = WINDOW_S) -> tuple[Scrape | None, Scrape]:
    """(the oldest scrape at most `seconds` older than the newest, the newest): the two
    scrapes the page's rates are taken between. (None, newest) when there is only one.

    Raises:
        ValueError: the ring is empty.
    """
    if not ring:
        raise ValueError("no scrape")
    newest = ring[-1]
    for sample in ring[:-1]:
        if newest.at - sample.at <= seconds:
            return sample, newest
    return None, newest


@dataclass(frozen=True, slots=True)
class EndpointState:
    """How the scrapes of one URL go.

    Attributes:
        ring: its scrapes, oldest first (failed scrapes are not in it).
        error: why the last scrape failed (None: it succeeded).
        tried_at: when the last scrape was tried (Unix seconds).
    """

    url: str
    ring: tuple[Scrape, ...]
    error: str | None
    tried_at: float


class Sampler:
    """Scrapes every gateway's /metrics every `interval_s` in a daemon thread and keeps the
    scrapes of the last RING_S seconds per URL.

    Args:
        urls: the URLs to scrape now (called each round: gateways come and go). Raising keeps
            the URLs of the previous round.
    """

    def __init__(
        self, urls: Callable[[], Sequence[str]], interval_s: float, timeout_s: float = 2.0
    ) -> None:
        self.urls = urls
        self.interval_s = interval_s
        self.timeout_s = min(timeout_s, interval_s)
        self.keep = max(3, min(2000, math.ceil(RING_S / interval_s) + 1))
        self.source_error: str | None = None
        self._rings: dict[str, deque[Scrape]] = {}
        self._errors: dict[str, str] = {}
        self._tried: dict[str, float] = {}
        self._lock = threading.Lock()
        self._round = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Scrapes now and then every `interval_s` until `stop`."""
        self._thread = threading.Thread(target=self._run, name="console-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # never let the page lose its sampler
                logger.exception("console_sample_failed")
            self._stop.wait(self.interval_s)

    def sample_once(self) -> None:
        """One round: scrapes every URL once (in turn; a silent one costs `timeout_s`)."""
        with self._round:
            try:
                urls = list(dict.fromkeys(self.urls()))
                self.source_error = None
            except Exception as exc:
                if str(exc) != self.source_error:
                    logger.warning("console_metrics_urls_unreadable error=%s", exc)
                self.source_error = str(exc)
                urls = list(self._rings)
            results: dict[str, Scrape | str] = {}
            for url in urls:
                try:
                    results[url] = scrape(url, self.timeout_s)
                except ScrapeError as exc:
                    results[url] = str(exc)
            now = time.time()
            with self._lock:
                for url in list(self._rings):
                    if url not in results:  # no longer a gateway: forget it
                        del self._rings[url]
                        self._errors.pop(url, None)
                        self._tried.pop(url, None)
                for url, result in results.items():
                    ring = self._rings.setdefault(url, deque(maxlen=self.keep))
                    self._tried[url] = now
                    if isinstance(result, Scrape):
                        ring.append(result)
                        self._errors.pop(url, None)
                    else:
                        self._errors[url] = result

    def endpoints(self) -> list[EndpointState]:
        """Every URL of the last round, by URL."""
        with self._lock:
            return [
                EndpointState(url, tuple(ring), self._errors.get(url), self._tried.get(url, 0.0))
                for url, ring in sorted(self._rings.items())
            ]

    def latest(self) -> list[Scrape]:
        """The newest scrape of each URL whose last scrape succeeded."""
        return [e.ring[-1] for e in self.endpoints() if e.ring and e.error is None]
