from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    INVALID_FIELD: _ClassVar[ErrorReason]
    PERMISSION_DENIED: _ClassVar[ErrorReason]
    UNAUTHENTICATED: _ClassVar[ErrorReason]
    RATE_LIMITED: _ClassVar[ErrorReason]
    SERVER_BUSY: _ClassVar[ErrorReason]
    NOT_FOUND: _ClassVar[ErrorReason]
    UNAVAILABLE: _ClassVar[ErrorReason]
    INTERNAL: _ClassVar[ErrorReason]
    NO_ACTIVE_KEY: _ClassVar[ErrorReason]
    VEHICLE_BLOCKED: _ClassVar[ErrorReason]
    VEHICLE_STATUS_FORBIDS_ISSUE: _ClassVar[ErrorReason]
    UNPROCESSED_VIOLATION_OR_ACCIDENT: _ClassVar[ErrorReason]
    MARK_REVOKED: _ClassVar[ErrorReason]
    NO_MARK: _ClassVar[ErrorReason]
    NOT_EXEMPT: _ClassVar[ErrorReason]
    TOO_EARLY: _ClassVar[ErrorReason]
    INSPECTION_OVERDUE: _ClassVar[ErrorReason]
    USAGE: _ClassVar[ErrorReason]
    TLS_FILES: _ClassVar[ErrorReason]
    PKI: _ClassVar[ErrorReason]
    KEY_STORE: _ClassVar[ErrorReason]
    LISTEN_FAILED: _ClassVar[ErrorReason]
    DEV_MODE_LOOPBACK_ONLY: _ClassVar[ErrorReason]
    IMAGE_UNREADABLE: _ClassVar[ErrorReason]
    RENDER: _ClassVar[ErrorReason]
    MALFORMED: _ClassVar[ErrorReason]
    AUDIT_WRITE_FAILED: _ClassVar[ErrorReason]
    FORGED: _ClassVar[ErrorReason]
    UNKNOWN_KEY: _ClassVar[ErrorReason]
    REVOKED: _ClassVar[ErrorReason]
    DATABASE: _ClassVar[ErrorReason]
    OFFLINE_DATA_REFUSED: _ClassVar[ErrorReason]
    DELTA_DOES_NOT_APPLY: _ClassVar[ErrorReason]
    NO_ONLINE_KEY: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
INVALID_FIELD: ErrorReason
PERMISSION_DENIED: ErrorReason
UNAUTHENTICATED: ErrorReason
RATE_LIMITED: ErrorReason
SERVER_BUSY: ErrorReason
NOT_FOUND: ErrorReason
UNAVAILABLE: ErrorReason
INTERNAL: ErrorReason
NO_ACTIVE_KEY: ErrorReason
VEHICLE_BLOCKED: ErrorReason
VEHICLE_STATUS_FORBIDS_ISSUE: ErrorReason
UNPROCESSED_VIOLATION_OR_ACCIDENT: ErrorReason
MARK_REVOKED: ErrorReason
NO_MARK: ErrorReason
NOT_EXEMPT: ErrorReason
TOO_EARLY: ErrorReason
INSPECTION_OVERDUE: ErrorReason
USAGE: ErrorReason
TLS_FILES: ErrorReason
PKI: ErrorReason
KEY_STORE: ErrorReason
LISTEN_FAILED: ErrorReason
DEV_MODE_LOOPBACK_ONLY: ErrorReason
IMAGE_UNREADABLE: ErrorReason
RENDER: ErrorReason
MALFORMED: ErrorReason
AUDIT_WRITE_FAILED: ErrorReason
FORGED: ErrorReason
UNKNOWN_KEY: ErrorReason
REVOKED: ErrorReason
DATABASE: ErrorReason
OFFLINE_DATA_REFUSED: ErrorReason
DELTA_DOES_NOT_APPLY: ErrorReason
NO_ONLINE_KEY: ErrorReason
