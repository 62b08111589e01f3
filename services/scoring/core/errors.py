"""Domain errors; each carries the gRPC status code the gateway answers with."""

from __future__ import annotations

import grpc


class ScoringError(Exception):
    """Base error: a message for the caller and the gRPC code that goes with it."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ScoringError):
    """The request is malformed; the message names the field (`candidates[3].type: ...`)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFoundError(ScoringError):
    """The requested model target does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class ContractMismatchError(ScoringError):
    """The served model was trained on another feature contract than the live one."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ModelNotDeployedError(ScoringError):
    """The target exists but no version of it is deployed (a shop without campaigns has no
    activity_ranker): nothing to fall back to, and retrying will not help."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class BackendUnavailableError(ScoringError):
    """Triton or the feature store cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ScoringError):
    """The request's deadline passed before an answer was ready."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
