import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CandidateType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANDIDATE_TYPE_UNSPECIFIED: _ClassVar[CandidateType]
    CANDIDATE_TYPE_ITEM: _ClassVar[CandidateType]
    CANDIDATE_TYPE_ACTIVITY: _ClassVar[CandidateType]
    CANDIDATE_TYPE_BUNDLE: _ClassVar[CandidateType]

class FeedbackType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_TYPE_UNSPECIFIED: _ClassVar[FeedbackType]
    FEEDBACK_TYPE_CLICK: _ClassVar[FeedbackType]
    FEEDBACK_TYPE_PURCHASE: _ClassVar[FeedbackType]
CANDIDATE_TYPE_UNSPECIFIED: CandidateType
CANDIDATE_TYPE_ITEM: CandidateType
CANDIDATE_TYPE_ACTIVITY: CandidateType
CANDIDATE_TYPE_BUNDLE: CandidateType
FEEDBACK_TYPE_UNSPECIFIED: FeedbackType
FEEDBACK_TYPE_CLICK: FeedbackType
FEEDBACK_TYPE_PURCHASE: FeedbackType

class Candidate(_message.Message):
    __slots__ = ("id", "type")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: CandidateType
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[CandidateType, str]] = ...) -> None: ...

class RequestContext(_message.Message):
    __slots__ = ("timestamp", "device")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    device: str
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device: _Optional[str] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("user_id", "candidates", "context", "top_k", "model", "request_id", "disable_fallback", "diversity", "keep_unavailable", "cart_item_ids")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DISABLE_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    KEEP_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    CART_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    context: RequestContext
    top_k: int
    model: str
    request_id: str
    disable_fallback: bool
    diversity: float
    keep_unavailable: bool
    cart_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., context: _Optional[_Union[RequestContext, _Mapping]] = ..., top_k: _Optional[int] = ..., model: _Optional[str] = ..., request_id: _Optional[str] = ..., disable_fallback: _Optional[bool] = ..., diversity: _Optional[float] = ..., keep_unavailable: _Optional[bool] = ..., cart_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoredCandidate(_message.Message):
    __slots__ = ("id", "type", "score", "rank", "unknown", "reasons")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: CandidateType
    score: float
    rank: int
    unknown: bool
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[CandidateType, str]] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ..., unknown: _Optional[bool] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("group", "contribution")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    group: str
    contribution: float
    def __init__(self, group: _Optional[str] = ..., contribution: _Optional[float] = ...) -> None: ...

class FilteredCandidate(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("candidates", "model_name", "model_version", "request_id", "unknown_user", "feature_service", "degraded", "degradations", "filtered", "feature_age_s", "arm", "proposed")
    class FeatureAgeSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_USER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADATIONS_FIELD_NUMBER: _ClassVar[int]
    FILTERED_FIELD_NUMBER: _ClassVar[int]
    FEATURE_AGE_S_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[ScoredCandidate]
    model_name: str
    model_version: str
    request_id: str
    unknown_user: bool
    feature_service: str
    degraded: bool
    degradations: _containers.RepeatedScalarFieldContainer[str]
    filtered: _containers.RepeatedCompositeFieldContainer[FilteredCandidate]
    feature_age_s: _containers.ScalarMap[str, float]
    arm: str
    proposed: bool
    def __init__(self, candidates: _Optional[_Iterable[_Union[ScoredCandidate, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., unknown_user: _Optional[bool] = ..., feature_service: _Optional[str] = ..., degraded: _Optional[bool] = ..., degradations: _Optional[_Iterable[str]] = ..., filtered: _Optional[_Iterable[_Union[FilteredCandidate, _Mapping]]] = ..., feature_age_s: _Optional[_Mapping[str, float]] = ..., arm: _Optional[str] = ..., proposed: _Optional[bool] = ...) -> None: ...

class RankBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RankRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RankRequest, _Mapping]]] = ...) -> None: ...

class RankBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RankResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RankResponse, _Mapping]]] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("request_id", "candidate_id", "type", "timestamp")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    candidate_id: str
    type: FeedbackType
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., candidate_id: _Optional[str] = ..., type: _Optional[_Union[FeedbackType, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...
