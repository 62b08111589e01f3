"""A steady Rank load on a gateway: open loop (a slow answer does not delay the next request),
each request with its own id and deadline, and what the client saw of each; a click Feedback
for a share of the answers."""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc

OK, DEGRADED, ERROR, PENDING = "ok", "degraded", "error", "pending"


@dataclass(slots=True)
class RankRecord:
    """One Rank request as the client saw it; times on the monotonic clock."""

    request_id: str
    index: int
    sent: float
    deadline_s: float
    candidates: int
    outcome: str = PENDING  # ok, degraded (response.degraded), error; pending: no answer yet
    code: str = ""  # the gRPC status of an error
    detail: str = ""  # and its message
    answered: float | None = None
    model_version: str = ""
    degradations: tuple[str, ...] = ()

    @property
    def latency_s(self) -> float | None:
        return None if self.answered is None else self.answered - self.sent

    @property
    def answered_ok(self) -> bool:
        """Status OK (degraded or not)."""
        return self.outcome in (OK, DEGRADED)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One click Feedback on the top candidate of an answer; `accepted` as the gateway said."""

    request_id: str
    candidate_id: str
    accepted: bool
    code: str = "OK"


@dataclass(frozen=True, slots=True)
class LoadShape:
    """The load: who asks for what, how often, with which deadline.

    Attributes:
        per_request: candidates per request (at most all of `candidates`).
        feedback_every: a click Feedback on every n-th answer (0: none).
        top_k: candidates each answer returns (0: all of them).
        seed: None: the users in turn and a window of the candidates moving along; else both
            drawn at random (seeded).
    """

    users: tuple[str, ...]
    candidates: tuple[str, ...]
    rate_per_s: float = 20.0
    deadline_s: float = 1.0
    per_request: int = 20
    feedback_every: int = 5
    top_k: int = 0
    seed: int | None = None


class LoadRunner:
    """Rank requests as `shape` says to `address` until stopped, from one dispatching thread
    (gRPC futures, so the rate holds while answers are slow), plus a click Feedback on every
    `feedback_every`-th OK answer from a thread of its own.

    Request ids are `<prefix>-<n>`: unique per run when the prefix is (see `unique_prefix`).
    """

    def __init__(self, address: str, prefix: str, shape: LoadShape) -> None:
        self.prefix = prefix
        self.shape = shape
        self.per_request = min(shape.per_request, len(shape.candidates))
        self._random = None if shape.seed is None else random.Random(shape.seed)
        self.records: list[RankRecord] = []
        self.feedback: list[FeedbackRecord] = []
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.RankingServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._clicks: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._dispatch, name="load-rank", daemon=True),
            threading.Thread(target=self._send_feedback, name="load-feedback", daemon=True),
        ]

    def start(self) -> LoadRunner:
        for thread in self._threads:
            thread.start()
        return self

    def stop_sending(self) -> None:
        """Sends no more requests; those in flight still come back."""
        self._stopping.set()
        self._threads[0].join()

    def stop(self) -> None:
        """Stops sending, waits for every answer (each has a deadline), then for the Feedback."""
        self.stop_sending()
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, self.shape.deadline_s + 10.0)
        self._clicks.put(None)
        self._threads[1].join(30.0)
        self._channel.close()

    def __enter__(self) -> LoadRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _dispatch(self) -> None:
        started = time.monotonic()
        n = 0
        while not self._stopping.is_set():
            late = time.monotonic() - (started + n / self.shape.rate_per_s)
            if late < 0 and self._stopping.wait(-late):
                return
            if late > 1.0:  # the machine stalled: carry on at the rate, not in a burst
                started += late
            self._send(n)
            n += 1

    def _pick(self, n: int) -> tuple[str, Sequence[str]]:
        """Request n's user and candidates."""
        users, candidates = self.shape.users, self.shape.candidates
        if self._random is not None:
            return self._random.choice(users), self._random.sample(candidates, self.per_request)
        first = (n * 7) % (len(candidates) - self.per_request + 1)
        return users[n % len(users)], candidates[first : first + self.per_request]

    def _send(self, n: int) -> None:
        user, ids = self._pick(n)
        request = pb.RankRequest(
            request_id=f"{self.prefix}-{n:06d}",
            user_id=user,
            candidates=[pb.Candidate(id=c, type=pb.CANDIDATE_TYPE_ITEM) for c in ids],
            top_k=self.shape.top_k,
        )
        deadline_s = self.shape.deadline_s
        record = RankRecord(request.request_id, n, time.monotonic(), deadline_s, len(ids))
        with self._lock:
            self.records.append(record)
            self._in_flight += 1
        future = self._stub.Rank.future(request, timeout=deadline_s)
        future.add_done_callback(partial(self._answered, record))

    def _answered(self, record: RankRecord, future: Any) -> None:
        answered = time.monotonic()
        click: tuple[str, str] | None = None
        try:
            response = future.result()
        except grpc.RpcError as exc:
            record.outcome, record.code = ERROR, exc.code().name
            record.detail = exc.details() or ""
        except Exception as exc:  # cancelled at shutdown, or a client-side failure
            record.outcome, record.code = ERROR, type(exc).__name__
        else:
            record.outcome = DEGRADED if response.degraded else OK
            record.model_version = response.model_version
            record.degradations = tuple(response.degradations)
            every = self.shape.feedback_every
            if response.candidates and every and record.index % every == 0:
                click = (record.request_id, response.candidates[0].id)
        record.answered = answered
        if click is not None:
            self._clicks.put(click)
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _send_feedback(self) -> None:
        while (click := self._clicks.get()) is not None:
            request_id, candidate_id = click
            event = pb.FeedbackEvent(
                request_id=request_id, candidate_id=candidate_id, type=pb.FEEDBACK_TYPE_CLICK
            )
            try:
                response = self._stub.Feedback(
                    pb.FeedbackRequest(events=[event]), timeout=max(self.shape.deadline_s, 2.0)
                )
                record = FeedbackRecord(request_id, candidate_id, response.accepted == 1)
            except grpc.RpcError as exc:
                record = FeedbackRecord(request_id, candidate_id, False, exc.code().name)
            with self._lock:
                self.feedback.append(record)


def unique_prefix(name: str) -> str:
    """A request id prefix no other run uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"
