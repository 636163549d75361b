"""Errors that become gRPC status codes (contract 3), raised anywhere in `i2i.serving`.

Each carries the status code it maps to and a message meant for the person who sent
the request: what was wrong and what to do about it.
"""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """A request failed in a way the caller should hear about, with this status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # Only RESOURCE_EXHAUSTED is ever retried by clients; False marks one a retry cannot fix.
    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServingError):
    """A bad image or a bad parameter."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServingError):
    """An unknown model, version or direction."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ServingError):
    """The image (or message) is too large: retrying the same request cannot help."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = False


class QueueFull(ResourceExhausted):
    """The queue is full: retry with backoff, or on another replica."""

    retryable = True


class DeadlineExceeded(ServingError):
    """The request's deadline passed before it was computed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(ServingError):
    """The server is starting or draining."""

    code = grpc.StatusCode.UNAVAILABLE


class Internal(ServingError):
    """The backend failed on this request's batch."""

    code = grpc.StatusCode.INTERNAL
