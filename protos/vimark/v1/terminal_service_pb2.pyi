import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from vimark.v1 import mark_service_pb2 as _mark_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OnlineKey(_message.Message):
    __slots__ = ("key_id", "algorithm", "public_key", "start_time", "end_time")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    key_id: int
    algorithm: str
    public_key: bytes
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[int] = ..., algorithm: _Optional[str] = ..., public_key: _Optional[bytes] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SignedOnlineKey(_message.Message):
    __slots__ = ("online_key", "anchor_signature")
    ONLINE_KEY_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    online_key: bytes
    anchor_signature: bytes
    def __init__(self, online_key: _Optional[bytes] = ..., anchor_signature: _Optional[bytes] = ...) -> None: ...

class SignedEnvelope(_message.Message):
    __slots__ = ("payload", "signature", "signer")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: bytes
    signer: SignedOnlineKey
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., signer: _Optional[_Union[SignedOnlineKey, _Mapping]] = ...) -> None: ...

class TrustBundle(_message.Message):
    __slots__ = ("make_time", "max_age_seconds", "issuing_keys", "seal_keys")
    MAKE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ISSUING_KEYS_FIELD_NUMBER: _ClassVar[int]
    SEAL_KEYS_FIELD_NUMBER: _ClassVar[int]
    make_time: _timestamp_pb2.Timestamp
    max_age_seconds: int
    issuing_keys: _containers.RepeatedCompositeFieldContainer[_mark_service_pb2.TrustedKey]
    seal_keys: _containers.RepeatedCompositeFieldContainer[_mark_service_pb2.SealKey]
    def __init__(self, make_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_age_seconds: _Optional[int] = ..., issuing_keys: _Optional[_Iterable[_Union[_mark_service_pb2.TrustedKey, _Mapping]]] = ..., seal_keys: _Optional[_Iterable[_Union[_mark_service_pb2.SealKey, _Mapping]]] = ...) -> None: ...

class StatusSnapshot(_message.Message):
    __slots__ = ("change_id", "make_time", "max_age_seconds", "first_serial", "serial_count", "current_bits", "revoked_serials", "unknown_vehicle_serials", "hotlist", "content_digest", "missing_serials")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    MAKE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SERIAL_FIELD_NUMBER: _ClassVar[int]
    SERIAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_BITS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_SERIALS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_VEHICLE_SERIALS_FIELD_NUMBER: _ClassVar[int]
    HOTLIST_FIELD_NUMBER: _ClassVar[int]
    CONTENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MISSING_SERIALS_FIELD_NUMBER: _ClassVar[int]
    change_id: int
    make_time: _timestamp_pb2.Timestamp
    max_age_seconds: int
    first_serial: int
    serial_count: int
    current_bits: bytes
    revoked_serials: bytes
    unknown_vehicle_serials: bytes
    hotlist: bytes
    content_digest: bytes
    missing_serials: bytes
    def __init__(self, change_id: _Optional[int] = ..., make_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_age_seconds: _Optional[int] = ..., first_serial: _Optional[int] = ..., serial_count: _Optional[int] = ..., current_bits: _Optional[bytes] = ..., revoked_serials: _Optional[bytes] = ..., unknown_vehicle_serials: _Optional[bytes] = ..., hotlist: _Optional[bytes] = ..., content_digest: _Optional[bytes] = ..., missing_serials: _Optional[bytes] = ...) -> None: ...

class StatusDelta(_message.Message):
    __slots__ = ("from_change_id", "from_digest", "to_change_id", "to_digest", "make_time", "max_age_seconds", "first_serial", "serial_count", "flipped_positions", "revoked_added", "unknown_vehicle_serials", "hotlist_changes", "missing_serials")
    FROM_CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TO_CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    TO_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MAKE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SERIAL_FIELD_NUMBER: _ClassVar[int]
    SERIAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    FLIPPED_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_ADDED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_VEHICLE_SERIALS_FIELD_NUMBER: _ClassVar[int]
    HOTLIST_CHANGES_FIELD_NUMBER: _ClassVar[int]
    MISSING_SERIALS_FIELD_NUMBER: _ClassVar[int]
    from_change_id: int
    from_digest: bytes
    to_change_id: int
    to_digest: bytes
    make_time: _timestamp_pb2.Timestamp
    max_age_seconds: int
    first_serial: int
    serial_count: int
    flipped_positions: bytes
    revoked_added: bytes
    unknown_vehicle_serials: bytes
    hotlist_changes: bytes
    missing_serials: bytes
    def __init__(self, from_change_id: _Optional[int] = ..., from_digest: _Optional[bytes] = ..., to_change_id: _Optional[int] = ..., to_digest: _Optional[bytes] = ..., make_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_age_seconds: _Optional[int] = ..., first_serial: _Optional[int] = ..., serial_count: _Optional[int] = ..., flipped_positions: _Optional[bytes] = ..., revoked_added: _Optional[bytes] = ..., unknown_vehicle_serials: _Optional[bytes] = ..., hotlist_changes: _Optional[bytes] = ..., missing_serials: _Optional[bytes] = ...) -> None: ...

class HeldStatus(_message.Message):
    __slots__ = ("signed_snapshot", "delta_applied")
    SIGNED_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DELTA_APPLIED_FIELD_NUMBER: _ClassVar[int]
    signed_snapshot: bytes
    delta_applied: DeltaApplied
    def __init__(self, signed_snapshot: _Optional[bytes] = ..., delta_applied: _Optional[_Union[DeltaApplied, _Mapping]] = ...) -> None: ...

class DeltaApplied(_message.Message):
    __slots__ = ("signed_delta", "state")
    SIGNED_DELTA_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    signed_delta: bytes
    state: bytes
    def __init__(self, signed_delta: _Optional[bytes] = ..., state: _Optional[bytes] = ...) -> None: ...

class GetTrustBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTrustBundleResponse(_message.Message):
    __slots__ = ("signed_bundle",)
    SIGNED_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    signed_bundle: bytes
    def __init__(self, signed_bundle: _Optional[bytes] = ...) -> None: ...

class GetStatusSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusSnapshotResponse(_message.Message):
    __slots__ = ("chunk", "total_size")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    total_size: int
    def __init__(self, chunk: _Optional[bytes] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetStatusDeltaRequest(_message.Message):
    __slots__ = ("since_change_id", "since_digest")
    SINCE_CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    since_change_id: int
    since_digest: bytes
    def __init__(self, since_change_id: _Optional[int] = ..., since_digest: _Optional[bytes] = ...) -> None: ...

class GetStatusDeltaResponse(_message.Message):
    __slots__ = ("signed_delta", "full_download_needed")
    SIGNED_DELTA_FIELD_NUMBER: _ClassVar[int]
    FULL_DOWNLOAD_NEEDED_FIELD_NUMBER: _ClassVar[int]
    signed_delta: bytes
    full_download_needed: bool
    def __init__(self, signed_delta: _Optional[bytes] = ..., full_download_needed: _Optional[bool] = ...) -> None: ...
