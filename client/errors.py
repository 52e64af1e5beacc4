"""vimark's errors: one base class whose subclasses explain themselves to a person.

Each error carries a stable UPPER_SNAKE `reason` that survives the wire (google.rpc.ErrorInfo),
so the SDK turns a server refusal back into the same typed exception.
"""

from __future__ import annotations


class VimarkError(Exception):
    """Base of every error vimark raises on purpose."""

    reason = "VIMARK_ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(VimarkError):
    """A request field is missing or malformed; `field` names it."""

    reason = "INVALID_FIELD"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RuleViolation(VimarkError):
    """The rules forbid this issuance (FAILED_PRECONDITION); `reason` says which rule."""


class NotFound(VimarkError):
    reason = "NOT_FOUND"


class Unavailable(VimarkError):
    """The server or its database cannot answer now; retrying later may succeed."""

    reason = "UNAVAILABLE"


class CertificateError(VimarkError):
    """A QR text that is not a well-formed vimark certificate (the MALFORMED verdict)."""

    reason = "MALFORMED"


class KeyStoreError(VimarkError):
    reason = "KEY_STORE"


class PermissionDenied(VimarkError):
    """The caller's role may not make this call."""

    reason = "PERMISSION_DENIED"


class Unauthenticated(VimarkError):
    """No valid client certificate: none was presented, it names no vimark role, or it is revoked."""

    reason = "UNAUTHENTICATED"


class ResourceExhausted(VimarkError):
    """The caller is over its rate limit (or the server over its capacity); retry after `retry_after` s."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after
