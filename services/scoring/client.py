"""The project's Python client for the RankingService (used by the demo and the `rank` command)."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.core.channels import open_channel
from scoring.core.closeable import Closeable
from scoring.core.settings import Settings, TlsSettings
from scoring.core.targets import CandidateKind

CANDIDATE_TYPES = {
    CandidateKind.ITEM: pb.CANDIDATE_TYPE_ITEM,
    CandidateKind.ACTIVITY: pb.CANDIDATE_TYPE_ACTIVITY,
    CandidateKind.BUNDLE: pb.CANDIDATE_TYPE_BUNDLE,
}


def _timestamp(seconds: int | None) -> Timestamp | None:
    """The message's timestamp; None leaves it unset (the gateway's clock applies)."""
    return None if seconds is None else Timestamp(seconds=seconds)


class RankingClient(Closeable):
    """A blocking client; one channel per instance. Use as a context manager.

    Args:
        tls: how to reach a TLS gateway (CA, client certificate under mutual TLS); plaintext
            when None or not enabled.
        token: a bearer token sent with every call (the caller's identity).
    """

    def __init__(
        self, address: str, tls: TlsSettings | None = None, token: str | None = None
    ) -> None:
        self.channel = open_channel(address, tls, token)
        self.stub = pb_grpc.RankingServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def rank(
        self,
        user_id: str,
        candidate_ids: Sequence[str],
        kind: CandidateKind = CandidateKind.ITEM,
        top_k: int = 0,
        model: str = "",
        timestamp_s: int | None = None,
        device: str = "",
        timeout_s: float = 5.0,
        diversity: float = 0.0,
        keep_unavailable: bool = False,
        disable_fallback: bool = False,
        cart: Sequence[str] = (),
    ) -> pb.RankResponse:
        """Ranks `candidate_ids` (all of one kind) for `user_id`.

        Args:
            kind: the candidates' kind (item, activity, bundle); the default target follows it.
            diversity: MMR strength in [0, 1); 0 ranks by score alone.
            keep_unavailable: keep out-of-stock items, ended activities and bundles.
            disable_fallback: answer UNAVAILABLE rather than a popularity order when the
                model cannot be reached.
            cart: item ids already in the user's cart (complete-the-basket: item candidates go
                to basket_completer by default; those in the cart come back filtered,
                "in_cart"). With a cart, `candidate_ids` may be empty: the gateway proposes
                the cart's co-purchase neighbours (the response's `proposed` is set).
        """
        request = pb.RankRequest(
            user_id=user_id,
            candidates=[pb.Candidate(id=c, type=CANDIDATE_TYPES[kind]) for c in candidate_ids],
            context=pb.RequestContext(device=device, timestamp=_timestamp(timestamp_s)),
            top_k=top_k,
            model=model,
            diversity=diversity,
            keep_unavailable=keep_unavailable,
            disable_fallback=disable_fallback,
            cart_item_ids=list(cart),
        )
        response: pb.RankResponse = self.stub.Rank(request, timeout=timeout_s)
        return response

    def feedback(
        self,
        request_id: str,
        candidate_id: str,
        event: str = "click",
        timestamp_s: int | None = None,
        timeout_s: float = 5.0,
    ) -> int:
        """Reports a click or purchase on a candidate a Rank response returned; returns the
        number of events the gateway accepted."""
        types = {"click": pb.FEEDBACK_TYPE_CLICK, "purchase": pb.FEEDBACK_TYPE_PURCHASE}
        item = pb.FeedbackEvent(
            request_id=request_id,
            candidate_id=candidate_id,
            type=types[event],
            timestamp=_timestamp(timestamp_s),
        )
        response: pb.FeedbackResponse = self.stub.Feedback(
            pb.FeedbackRequest(events=[item]), timeout=timeout_s
        )
        return int(response.accepted)

    @classmethod
    def for_settings(cls, settings: Settings, address: str | None = None) -> RankingClient:
        """A client to `address` (the settings' gateway by default) with the settings' TLS and
        bearer token (SCORING_TLS__*, SCORING_AUTH__TOKEN)."""
        token = settings.auth.token
        return cls(
            address or f"{settings.gateway.host}:{settings.gateway.port}",
            settings.tls,
            token.get_secret_value() if token is not None else None,
        )

    def close(self) -> None:
        self.channel.close()
