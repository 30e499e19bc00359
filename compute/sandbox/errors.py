"""Errors raised by the sandbox, each carrying the gRPC status the node should return."""

from __future__ import annotations

import grpc


class SandboxError(Exception):
    """Base class: the sandbox could not produce a result."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserCodeError(SandboxError):
    """User code raised; carries the exception type, message and user-only traceback."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, type: str, message: str, traceback: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.user_message = message
        self.traceback = traceback


class LimitExceeded(SandboxError):
    """A resource limit stopped the call."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TimeLimit(LimitExceeded):
    """Wall-clock or CPU time limit."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class MemoryLimit(LimitExceeded):
    """Address-space limit."""


class OutputLimit(LimitExceeded):
    """Result (or any frame sent to the host) larger than the output cap."""


class PolicyViolation(SandboxError):
    """Forbidden import, file access, syscall or other refused operation."""

    code = grpc.StatusCode.PERMISSION_DENIED


class BadArguments(SandboxError):
    """Arguments that are not JSON or do not fit the entry point's signature."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class EntryNotFound(SandboxError):
    """The module defines no function with the requested entry name."""

    code = grpc.StatusCode.NOT_FOUND


class SandboxUnavailable(SandboxError):
    """The pool is stopped, or no worker became available in time."""

    code = grpc.StatusCode.UNAVAILABLE
