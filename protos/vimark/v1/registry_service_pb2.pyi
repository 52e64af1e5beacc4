from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vehicle(_message.Message):
    __slots__ = ("plate_number", "plate_type", "vin", "category", "registered_on", "valid_until", "status_codes", "seats", "exemption_lost")
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VIN_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_ON_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODES_FIELD_NUMBER: _ClassVar[int]
    SEATS_FIELD_NUMBER: _ClassVar[int]
    EXEMPTION_LOST_FIELD_NUMBER: _ClassVar[int]
    plate_number: str
    plate_type: str
    vin: str
    category: str
    registered_on: str
    valid_until: str
    status_codes: str
    seats: int
    exemption_lost: bool
    def __init__(self, plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ..., vin: _Optional[str] = ..., category: _Optional[str] = ..., registered_on: _Optional[str] = ..., valid_until: _Optional[str] = ..., status_codes: _Optional[str] = ..., seats: _Optional[int] = ..., exemption_lost: _Optional[bool] = ...) -> None: ...

class UpsertVehiclesRequest(_message.Message):
    __slots__ = ("vehicles",)
    VEHICLES_FIELD_NUMBER: _ClassVar[int]
    vehicles: _containers.RepeatedCompositeFieldContainer[Vehicle]
    def __init__(self, vehicles: _Optional[_Iterable[_Union[Vehicle, _Mapping]]] = ...) -> None: ...

class UpsertVehiclesResponse(_message.Message):
    __slots__ = ("created_count", "updated_count")
    CREATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    created_count: int
    updated_count: int
    def __init__(self, created_count: _Optional[int] = ..., updated_count: _Optional[int] = ...) -> None: ...

class ImportVehiclesRequest(_message.Message):
    __slots__ = ("sequence", "vehicles")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    VEHICLES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    vehicles: _containers.RepeatedCompositeFieldContainer[Vehicle]
    def __init__(self, sequence: _Optional[int] = ..., vehicles: _Optional[_Iterable[_Union[Vehicle, _Mapping]]] = ...) -> None: ...

class ImportVehiclesResponse(_message.Message):
    __slots__ = ("sequence", "created_count", "updated_count")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_COUNT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    created_count: int
    updated_count: int
    def __init__(self, sequence: _Optional[int] = ..., created_count: _Optional[int] = ..., updated_count: _Optional[int] = ...) -> None: ...

class SetVehicleStatusRequest(_message.Message):
    __slots__ = ("plate_number", "plate_type", "status_codes")
    PLATE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PLATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODES_FIELD_NUMBER: _ClassVar[int]
    plate_number: str
    plate_type: str
    status_codes: str
    def __init__(self, plate_number: _Optional[str] = ..., plate_type: _Optional[str] = ..., status_codes: _Optional[str] = ...) -> None: ...

class SetVehicleStatusResponse(_message.Message):
    __slots__ = ("status_codes",)
    STATUS_CODES_FIELD_NUMBER: _ClassVar[int]
    status_codes: str
    def __init__(self, status_codes: _Optional[str] = ...) -> None: ...
