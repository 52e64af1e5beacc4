import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from vimark.v1 import certificate_pb2 as _certificate_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_VALID: _ClassVar[Verdict]
    VERDICT_INSPECTION_EXPIRED: _ClassVar[Verdict]
    VERDICT_SUPERSEDED: _ClassVar[Verdict]
    VERDICT_REVOKED: _ClassVar[Verdict]
    VERDICT_VEHICLE_BLOCKED: _ClassVar[Verdict]
    VERDICT_FORGED: _ClassVar[Verdict]
    VERDICT_UNKNOWN_KEY: _ClassVar[Verdict]
    VERDICT_MALFORMED: _ClassVar[Verdict]
    VERDICT_PRESENTATION_EXPIRED: _ClassVar[Verdict]
    VERDICT_UNKNOWN_VEHICLE: _ClassVar[Verdict]
    VERDICT_NOT_VALID: _ClassVar[Verdict]
    VERDICT_NOT_YET_VALID: _ClassVar[Verdict]

class KeyStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATUS_UNSPECIFIED: _ClassVar[KeyStatus]
    KEY_STATUS_ACTIVE: _ClassVar[KeyStatus]
    KEY_STATUS_RETIRED: _ClassVar[KeyStatus]
    KEY_STATUS_REVOKED: _ClassVar[KeyStatus]

class BackfillOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKFILL_OUTCOME_UNSPECIFIED: _ClassVar[BackfillOutcome]
    BACKFILL_OUTCOME_ISSUED: _ClassVar[BackfillOutcome]
    BACKFILL_OUTCOME_ALREADY_MARKED: _ClassVar[BackfillOutcome]
    BACKFILL_OUTCOME_STATUS_FORBIDS_ISSUE: _ClassVar[BackfillOutcome]
    BACKFILL_OUTCOME_OUT_OF_VALIDITY: _ClassVar[BackfillOutcome]
    BACKFILL_OUTCOME_NO_RECORDED_VALIDITY: _ClassVar[BackfillOutcome]
    BACKFILL_OUTCOME_UNKNOWN_PLATE: _ClassVar[BackfillOutcome]
    BACKFILL_OUTCOME_CHANGED: _ClassVar[BackfillOutcome]
VERDICT_UNSPECIFIED: Verdict
VERDICT_VALID: Verdict
VERDICT_INSPECTION_EXPIRED: Verdict
VERDICT_SUPERSEDED: Verdict
VERDICT_REVOKED: Verdict
VERDICT_VEHICLE_BLOCKED: Verdict
VERDICT_FORGED: Verdict
VERDICT_UNKNOWN_KEY: Verdict
VERDICT_MALFORMED: Verdict
VERDICT_PRESENTATION_EXPIRED: Verdict
VERDICT_UNKNOWN_VEHICLE: Verdict
VERDICT_NOT_VALID: Verdict
VERDICT_NOT_YET_VALID: Verdict
KEY_STATUS_UNSPECIFIED: KeyStatus
KEY_STATUS_ACTIVE: KeyStatus
KEY_STATUS_RETIRED: KeyStatus
KEY_STATUS_REVOKED: KeyStatus
BACKFILL_OUTCOME_UNSPECIFIED: BackfillOutcome
BACKFILL_OUTCOME_ISSUED: BackfillOutcome
BACKFILL_OUTCOME_ALREADY_MARKED: BackfillOutcome
BACKFILL_OUTCOME_STATUS_FORBIDS_ISSUE: BackfillOutcome
BACKFILL_OUTCOME_OUT_OF_VALIDITY: BackfillOutcome
BACKFILL_OUTCOME_NO_RECORDED_VALIDITY: BackfillOutcome
BACKFILL_OUTCOME_UNKNOWN_PLATE: BackfillOutcome
BACKFILL_OUTCOME_CHANGED: BackfillOutcome

class IssueRequest(_message.Message):
    __slots__ = ("request_id", "plate_number", "plate_type", "vin", "reason", "inspected_on", "station_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VIN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INSPECTED_ON_FIELD_NUMBER: _ClassVar[int]
    STATION_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    plate_number: str
    plate_type: str
    vin: str
    reason: _certificate_pb2.IssueReason
    inspected_on: str
    station_id: str
    def __init__(self, request_id: _Optional[str] = ..., plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ..., vin: _Optional[str] = ..., reason: _Optional[_Union[_certificate_pb2.IssueReason, str]] = ..., inspected_on: _Optional[str] = ..., station_id: _Optional[str] = ...) -> None: ...

class IssueResponse(_message.Message):
    __slots__ = ("serial", "qr_text", "plate_number", "plate_type", "vin", "valid_until", "issue_time", "reason", "key_id", "replayed")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    QR_TEXT_FIELD_NUMBER: _ClassVar[int]
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VIN_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    serial: int
    qr_text: str
    plate_number: str
    plate_type: str
    vin: str
    valid_until: str
    issue_time: _timestamp_pb2.Timestamp
    reason: _certificate_pb2.IssueReason
    key_id: int
    replayed: bool
    def __init__(self, serial: _Optional[int] = ..., qr_text: _Optional[str] = ..., plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ..., vin: _Optional[str] = ..., valid_until: _Optional[str] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[_Union[_certificate_pb2.IssueReason, str]] = ..., key_id: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("qr_text", "at_date")
    QR_TEXT_FIELD_NUMBER: _ClassVar[int]
    AT_DATE_FIELD_NUMBER: _ClassVar[int]
    qr_text: str
    at_date: str
    def __init__(self, qr_text: _Optional[str] = ..., at_date: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("verdict", "explanation", "serial", "plate_number", "plate_type", "vin", "valid_until", "within_validity", "status_codes", "presentation", "issue_time", "reason", "key_id", "current_serial", "current_valid_until", "overdue_cycles", "scrapping_due", "police_alert")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VIN_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    WITHIN_VALIDITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODES_FIELD_NUMBER: _ClassVar[int]
    PRESENTATION_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_SERIAL_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_CYCLES_FIELD_NUMBER: _ClassVar[int]
    SCRAPPING_DUE_FIELD_NUMBER: _ClassVar[int]
    POLICE_ALERT_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    explanation: str
    serial: int
    plate_number: str
    plate_type: str
    vin: str
    valid_until: str
    within_validity: bool
    status_codes: str
    presentation: _certificate_pb2.Presentation
    issue_time: _timestamp_pb2.Timestamp
    reason: _certificate_pb2.IssueReason
    key_id: int
    current_serial: int
    current_valid_until: str
    overdue_cycles: int
    scrapping_due: bool
    police_alert: bool
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., explanation: _Optional[str] = ..., serial: _Optional[int] = ..., plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ..., vin: _Optional[str] = ..., valid_until: _Optional[str] = ..., within_validity: _Optional[bool] = ..., status_codes: _Optional[str] = ..., presentation: _Optional[_Union[_certificate_pb2.Presentation, str]] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[_Union[_certificate_pb2.IssueReason, str]] = ..., key_id: _Optional[int] = ..., current_serial: _Optional[int] = ..., current_valid_until: _Optional[str] = ..., overdue_cycles: _Optional[int] = ..., scrapping_due: _Optional[bool] = ..., police_alert: _Optional[bool] = ...) -> None: ...

class VerifyBatchRequest(_message.Message):
    __slots__ = ("qr_texts", "at_date")
    QR_TEXTS_FIELD_NUMBER: _ClassVar[int]
    AT_DATE_FIELD_NUMBER: _ClassVar[int]
    qr_texts: _containers.RepeatedScalarFieldContainer[str]
    at_date: str
    def __init__(self, qr_texts: _Optional[_Iterable[str]] = ..., at_date: _Optional[str] = ...) -> None: ...

class VerifyBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[VerifyResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[VerifyResponse, _Mapping]]] = ...) -> None: ...

class LookupVehicleStatusRequest(_message.Message):
    __slots__ = ("plate_number", "plate_type", "vin", "at_date")
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VIN_FIELD_NUMBER: _ClassVar[int]
    AT_DATE_FIELD_NUMBER: _ClassVar[int]
    plate_number: str
    plate_type: str
    vin: str
    at_date: str
    def __init__(self, plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ..., vin: _Optional[str] = ..., at_date: _Optional[str] = ...) -> None: ...

class LookupVehicleStatusResponse(_message.Message):
    __slots__ = ("plate_number", "plate_type", "vin", "valid_until", "within_validity", "status_codes", "current_serial", "overdue_cycles", "scrapping_due", "blocked", "police_alert")
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VIN_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    WITHIN_VALIDITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_SERIAL_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_CYCLES_FIELD_NUMBER: _ClassVar[int]
    SCRAPPING_DUE_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    POLICE_ALERT_FIELD_NUMBER: _ClassVar[int]
    plate_number: str
    plate_type: str
    vin: str
    valid_until: str
    within_validity: bool
    status_codes: str
    current_serial: int
    overdue_cycles: int
    scrapping_due: bool
    blocked: bool
    police_alert: bool
    def __init__(self, plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ..., vin: _Optional[str] = ..., valid_until: _Optional[str] = ..., within_validity: _Optional[bool] = ..., status_codes: _Optional[str] = ..., current_serial: _Optional[int] = ..., overdue_cycles: _Optional[int] = ..., scrapping_due: _Optional[bool] = ..., blocked: _Optional[bool] = ..., police_alert: _Optional[bool] = ...) -> None: ...

class PresentRequest(_message.Message):
    __slots__ = ("plate_number", "plate_type")
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    plate_number: str
    plate_type: str
    def __init__(self, plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ...) -> None: ...

class PresentResponse(_message.Message):
    __slots__ = ("live_qr_text", "live_expire_time", "download_qr_text", "print_qr_text", "serial", "valid_until")
    LIVE_QR_TEXT_FIELD_NUMBER: _ClassVar[int]
    LIVE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_QR_TEXT_FIELD_NUMBER: _ClassVar[int]
    PRINT_QR_TEXT_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    live_qr_text: str
    live_expire_time: _timestamp_pb2.Timestamp
    download_qr_text: str
    print_qr_text: str
    serial: int
    valid_until: str
    def __init__(self, live_qr_text: _Optional[str] = ..., live_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., download_qr_text: _Optional[str] = ..., print_qr_text: _Optional[str] = ..., serial: _Optional[int] = ..., valid_until: _Optional[str] = ...) -> None: ...

class GetTrustListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrustedKey(_message.Message):
    __slots__ = ("key_id", "algorithm", "public_key", "start_time", "end_time", "status")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    key_id: int
    algorithm: str
    public_key: bytes
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    status: KeyStatus
    def __init__(self, key_id: _Optional[int] = ..., algorithm: _Optional[str] = ..., public_key: _Optional[bytes] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[KeyStatus, str]] = ...) -> None: ...

class SealKey(_message.Message):
    __slots__ = ("seal_key_id", "algorithm", "key")
    SEAL_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    seal_key_id: int
    algorithm: str
    key: bytes
    def __init__(self, seal_key_id: _Optional[int] = ..., algorithm: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class GetTrustListResponse(_message.Message):
    __slots__ = ("keys", "seal_keys", "generate_time")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SEAL_KEYS_FIELD_NUMBER: _ClassVar[int]
    GENERATE_TIME_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[TrustedKey]
    seal_keys: _containers.RepeatedCompositeFieldContainer[SealKey]
    generate_time: _timestamp_pb2.Timestamp
    def __init__(self, keys: _Optional[_Iterable[_Union[TrustedKey, _Mapping]]] = ..., seal_keys: _Optional[_Iterable[_Union[SealKey, _Mapping]]] = ..., generate_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DescribeMarkRequest(_message.Message):
    __slots__ = ("qr_text",)
    QR_TEXT_FIELD_NUMBER: _ClassVar[int]
    qr_text: str
    def __init__(self, qr_text: _Optional[str] = ...) -> None: ...

class DescribeMarkResponse(_message.Message):
    __slots__ = ("serial", "plate_number", "plate_type", "valid_until")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    serial: int
    plate_number: str
    plate_type: str
    valid_until: str
    def __init__(self, serial: _Optional[int] = ..., plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ..., valid_until: _Optional[str] = ...) -> None: ...

class RevokeMarkRequest(_message.Message):
    __slots__ = ("serial", "reason")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    serial: int
    reason: str
    def __init__(self, serial: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeMarkResponse(_message.Message):
    __slots__ = ("serial",)
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    serial: int
    def __init__(self, serial: _Optional[int] = ...) -> None: ...

class BackfillPlate(_message.Message):
    __slots__ = ("plate_number", "plate_type")
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    plate_number: str
    plate_type: str
    def __init__(self, plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ...) -> None: ...

class BackfillMarksRequest(_message.Message):
    __slots__ = ("plates", "batch_size")
    PLATES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    plates: _containers.RepeatedCompositeFieldContainer[BackfillPlate]
    batch_size: int
    def __init__(self, plates: _Optional[_Iterable[_Union[BackfillPlate, _Mapping]]] = ..., batch_size: _Optional[int] = ...) -> None: ...

class BackfillCount(_message.Message):
    __slots__ = ("outcome", "count")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    outcome: BackfillOutcome
    count: int
    def __init__(self, outcome: _Optional[_Union[BackfillOutcome, str]] = ..., count: _Optional[int] = ...) -> None: ...

class BackfillMarksProgress(_message.Message):
    __slots__ = ("total", "considered", "counts", "done")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONSIDERED_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    total: int
    considered: int
    counts: _containers.RepeatedCompositeFieldContainer[BackfillCount]
    done: bool
    def __init__(self, total: _Optional[int] = ..., considered: _Optional[int] = ..., counts: _Optional[_Iterable[_Union[BackfillCount, _Mapping]]] = ..., done: _Optional[bool] = ...) -> None: ...
