from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignedRecord(_message.Message):
    __slots__ = ("kind", "owner_key", "name", "seq", "timestamp_ms", "expires_ms", "payload", "signature")
    KIND_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    owner_key: bytes
    name: bytes
    seq: int
    timestamp_ms: int
    expires_ms: int
    payload: bytes
    signature: bytes
    def __init__(self, kind: _Optional[str] = ..., owner_key: _Optional[bytes] = ..., name: _Optional[bytes] = ..., seq: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., expires_ms: _Optional[int] = ..., payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PeerRecord(_message.Message):
    __slots__ = ("node_id", "address", "identity_key", "roles", "capacity_bytes", "free_bytes", "load", "version", "mesh", "channel_port", "reserved_bytes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_PORT_FIELD_NUMBER: _ClassVar[int]
    RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    address: str
    identity_key: bytes
    roles: _containers.RepeatedScalarFieldContainer[str]
    capacity_bytes: int
    free_bytes: int
    load: int
    version: str
    mesh: str
    channel_port: int
    reserved_bytes: int
    def __init__(self, node_id: _Optional[bytes] = ..., address: _Optional[str] = ..., identity_key: _Optional[bytes] = ..., roles: _Optional[_Iterable[str]] = ..., capacity_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., load: _Optional[int] = ..., version: _Optional[str] = ..., mesh: _Optional[str] = ..., channel_port: _Optional[int] = ..., reserved_bytes: _Optional[int] = ...) -> None: ...

class RecordSet(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[SignedRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[SignedRecord, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...
