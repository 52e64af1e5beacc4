"""vimark's errors: one base class whose subclasses explain themselves to a person.

Each error carries a stable UPPER_SNAKE `reason`, one of the ErrorReason names in
protos/vimark/v1/errors.proto (the one list of reasons), and the gRPC status `code` it crosses the
wire as; the SDK turns a server refusal back into the same typed exception. An error class that
names no code of its own reads INTERNAL: raising it across the wire is a bug in vimark.
"""

from __future__ import annotations

from vimark.v1 import errors_pb2

REASONS = frozenset(errors_pb2.ErrorReason.keys()) - {"ERROR_REASON_UNSPECIFIED"}


class VimarkError(Exception):
    """Base of every error vimark raises on purpose."""

    reason = "INTERNAL"
    code = "INTERNAL"  # the grpc.StatusCode name it crosses the wire as

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            if reason not in REASONS:
                raise ValueError(f"{reason!r} is not an ErrorReason (protos/vimark/v1/errors.proto)")
            self.reason = reason


class InvalidArgument(VimarkError):
    """A request field is missing or malformed; `field` names it."""

    reason = "INVALID_FIELD"
    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


class FailedPrecondition(VimarkError):
    """The system's state forbids the call now (e.g. no active issuing key); `reason` says which."""

    code = "FAILED_PRECONDITION"


class RuleViolation(FailedPrecondition):
    """The inspection rules forbid this issuance; `reason` says which rule."""


class NotFound(VimarkError):
    reason = "NOT_FOUND"
    code = "NOT_FOUND"


class Unavailable(VimarkError):
    """The server or its database cannot answer now; retrying later may succeed."""

    reason = "UNAVAILABLE"
    code = "UNAVAILABLE"


class PermissionDenied(VimarkError):
    """The caller's role may not make this call."""

    reason = "PERMISSION_DENIED"
    code = "PERMISSION_DENIED"


class Unauthenticated(VimarkError):
    """No valid client certificate: none was presented, it names no vimark role, or it is revoked."""

    reason = "UNAUTHENTICATED"
    code = "UNAUTHENTICATED"


class ResourceExhausted(VimarkError):
    """The caller is over its rate limit (or the server over its capacity); retry after `retry_after` s."""

    reason = "RATE_LIMITED"
    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class InternalError(VimarkError):
    """A failure inside the server; its log has the details."""


# -- raised on the caller's own machine, never sent by a server --------------------------------
class CertificateError(VimarkError):
    """A QR text that is not a well-formed vimark certificate (the MALFORMED verdict)."""

    reason = "MALFORMED"


class KeyStoreError(VimarkError):
    """The issuing key directory is missing, damaged or cannot be used as asked."""

    reason = "KEY_STORE"


class TlsFileError(VimarkError):
    """A TLS file (CA, certificate, key, CRL) is missing, unreadable or wrong."""

    reason = "TLS_FILES"


class PkiError(VimarkError):
    """A `vimark pki` directory cannot be used as asked."""

    reason = "PKI"
