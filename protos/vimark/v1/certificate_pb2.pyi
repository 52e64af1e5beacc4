from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IssueReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISSUE_REASON_UNSPECIFIED: _ClassVar[IssueReason]
    ISSUE_REASON_REGISTRATION: _ClassVar[IssueReason]
    ISSUE_REASON_TRANSFER: _ClassVar[IssueReason]
    ISSUE_REASON_CHANGE: _ClassVar[IssueReason]
    ISSUE_REASON_INSPECTION_PASSED: _ClassVar[IssueReason]
    ISSUE_REASON_EXEMPTION: _ClassVar[IssueReason]
    ISSUE_REASON_REDOWNLOAD: _ClassVar[IssueReason]
    ISSUE_REASON_PAPER_LOST: _ClassVar[IssueReason]
    ISSUE_REASON_BACKFILL: _ClassVar[IssueReason]

class Presentation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRESENTATION_UNSPECIFIED: _ClassVar[Presentation]
    PRESENTATION_ONLINE: _ClassVar[Presentation]
    PRESENTATION_OFFLINE: _ClassVar[Presentation]
    PRESENTATION_PRINT: _ClassVar[Presentation]
ISSUE_REASON_UNSPECIFIED: IssueReason
ISSUE_REASON_REGISTRATION: IssueReason
ISSUE_REASON_TRANSFER: IssueReason
ISSUE_REASON_CHANGE: IssueReason
ISSUE_REASON_INSPECTION_PASSED: IssueReason
ISSUE_REASON_EXEMPTION: IssueReason
ISSUE_REASON_REDOWNLOAD: IssueReason
ISSUE_REASON_PAPER_LOST: IssueReason
ISSUE_REASON_BACKFILL: IssueReason
PRESENTATION_UNSPECIFIED: Presentation
PRESENTATION_ONLINE: Presentation
PRESENTATION_OFFLINE: Presentation
PRESENTATION_PRINT: Presentation

class CertificateBody(_message.Message):
    __slots__ = ("serial", "plate_number", "plate_type", "vin", "valid_until_month", "issued_at", "reason", "presentation", "presentation_expires_at", "valid_from_day")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VIN_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_MONTH_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PRESENTATION_FIELD_NUMBER: _ClassVar[int]
    PRESENTATION_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_DAY_FIELD_NUMBER: _ClassVar[int]
    serial: int
    plate_number: str
    plate_type: int
    vin: str
    valid_until_month: int
    issued_at: int
    reason: IssueReason
    presentation: Presentation
    presentation_expires_at: int
    valid_from_day: int
    def __init__(self, serial: _Optional[int] = ..., plate_number: _Optional[str] = ..., plate_type: _Optional[int] = ..., vin: _Optional[str] = ..., valid_until_month: _Optional[int] = ..., issued_at: _Optional[int] = ..., reason: _Optional[_Union[IssueReason, str]] = ..., presentation: _Optional[_Union[Presentation, str]] = ..., presentation_expires_at: _Optional[int] = ..., valid_from_day: _Optional[int] = ...) -> None: ...
