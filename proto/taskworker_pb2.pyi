from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PushRequest(_message.Message):
    __slots__ = ("file_data", "filename", "user_id", "public", "k", "m", "readers", "stripe_size")
    FILE_DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    READERS_FIELD_NUMBER: _ClassVar[int]
    STRIPE_SIZE_FIELD_NUMBER: _ClassVar[int]
    file_data: bytes
    filename: str
    user_id: str
    public: bool
    k: int
    m: int
    readers: _containers.RepeatedScalarFieldContainer[str]
    stripe_size: int
    def __init__(self, file_data: _Optional[bytes] = ..., filename: _Optional[str] = ..., user_id: _Optional[str] = ..., public: _Optional[bool] = ..., k: _Optional[int] = ..., m: _Optional[int] = ..., readers: _Optional[_Iterable[str]] = ..., stripe_size: _Optional[int] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("file_id", "cid", "size", "k", "m", "fragments_placed", "under_replicated", "warnings")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_PLACED_FIELD_NUMBER: _ClassVar[int]
    UNDER_REPLICATED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    cid: str
    size: int
    k: int
    m: int
    fragments_placed: int
    under_replicated: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, file_id: _Optional[str] = ..., cid: _Optional[str] = ..., size: _Optional[int] = ..., k: _Optional[int] = ..., m: _Optional[int] = ..., fragments_placed: _Optional[int] = ..., under_replicated: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class PushChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PushRequest
    data: bytes
    def __init__(self, header: _Optional[_Union[PushRequest, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("file_id", "user_id", "version")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    user_id: str
    version: str
    def __init__(self, file_id: _Optional[str] = ..., user_id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("file_data", "cid", "filename", "size", "version", "conflicts")
    FILE_DATA_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    file_data: bytes
    cid: str
    filename: str
    size: int
    version: str
    conflicts: _containers.RepeatedCompositeFieldContainer[VersionHead]
    def __init__(self, file_data: _Optional[bytes] = ..., cid: _Optional[str] = ..., filename: _Optional[str] = ..., size: _Optional[int] = ..., version: _Optional[str] = ..., conflicts: _Optional[_Iterable[_Union[VersionHead, _Mapping]]] = ...) -> None: ...

class GetChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: GetResponse
    data: bytes
    def __init__(self, header: _Optional[_Union[GetResponse, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class VersionHead(_message.Message):
    __slots__ = ("version", "cid", "vector", "writer", "time")
    class VectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    version: str
    cid: str
    vector: _containers.ScalarMap[str, int]
    writer: str
    time: float
    def __init__(self, version: _Optional[str] = ..., cid: _Optional[str] = ..., vector: _Optional[_Mapping[str, int]] = ..., writer: _Optional[str] = ..., time: _Optional[float] = ...) -> None: ...

class ReviseRequest(_message.Message):
    __slots__ = ("file_id", "file_data", "user_id", "base_versions")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_DATA_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    file_data: bytes
    user_id: str
    base_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, file_id: _Optional[str] = ..., file_data: _Optional[bytes] = ..., user_id: _Optional[str] = ..., base_versions: _Optional[_Iterable[str]] = ...) -> None: ...

class ReviseResponse(_message.Message):
    __slots__ = ("version", "cid", "vector")
    class VectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    version: str
    cid: str
    vector: _containers.ScalarMap[str, int]
    def __init__(self, version: _Optional[str] = ..., cid: _Optional[str] = ..., vector: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SynchronousRequest(_message.Message):
    __slots__ = ("file_id", "user_id")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    user_id: str
    def __init__(self, file_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class SynchronousResponse(_message.Message):
    __slots__ = ("heads", "records", "replicas_reached", "conflict")
    HEADS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_REACHED_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[VersionHead]
    records: int
    replicas_reached: int
    conflict: bool
    def __init__(self, heads: _Optional[_Iterable[_Union[VersionHead, _Mapping]]] = ..., records: _Optional[int] = ..., replicas_reached: _Optional[int] = ..., conflict: _Optional[bool] = ...) -> None: ...

class StatRequest(_message.Message):
    __slots__ = ("file_id", "user_id", "deep")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEEP_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    user_id: str
    deep: bool
    def __init__(self, file_id: _Optional[str] = ..., user_id: _Optional[str] = ..., deep: _Optional[bool] = ...) -> None: ...

class FragmentInfo(_message.Message):
    __slots__ = ("index", "holder", "address", "reachable", "healthy")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    index: int
    holder: str
    address: str
    reachable: bool
    healthy: bool
    def __init__(self, index: _Optional[int] = ..., holder: _Optional[str] = ..., address: _Optional[str] = ..., reachable: _Optional[bool] = ..., healthy: _Optional[bool] = ...) -> None: ...

class StatResponse(_message.Message):
    __slots__ = ("cid", "size", "k", "m", "fragments", "health", "filename", "owner")
    CID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    cid: str
    size: int
    k: int
    m: int
    fragments: _containers.RepeatedCompositeFieldContainer[FragmentInfo]
    health: str
    filename: str
    owner: str
    def __init__(self, cid: _Optional[str] = ..., size: _Optional[int] = ..., k: _Optional[int] = ..., m: _Optional[int] = ..., fragments: _Optional[_Iterable[_Union[FragmentInfo, _Mapping]]] = ..., health: _Optional[str] = ..., filename: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class LogRequest(_message.Message):
    __slots__ = ("file_id", "user_id")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    user_id: str
    def __init__(self, file_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class LogResponse(_message.Message):
    __slots__ = ("versions", "heads")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[VersionHead]
    heads: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, versions: _Optional[_Iterable[_Union[VersionHead, _Mapping]]] = ..., heads: _Optional[_Iterable[str]] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("file_id", "user_id", "grantee", "revoke", "read")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    user_id: str
    grantee: str
    revoke: bool
    read: bool
    def __init__(self, file_id: _Optional[str] = ..., user_id: _Optional[str] = ..., grantee: _Optional[str] = ..., revoke: _Optional[bool] = ..., read: _Optional[bool] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("ok",)
    OK_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    def __init__(self, ok: _Optional[bool] = ...) -> None: ...

class FunctionCallRequest(_message.Message):
    __slots__ = ("function_name", "args", "kwargs", "timeout")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    KWARGS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    args: _struct_pb2.ListValue
    kwargs: _struct_pb2.Struct
    timeout: float
    def __init__(self, function_name: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., kwargs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout: _Optional[float] = ...) -> None: ...

class UserError(_message.Message):
    __slots__ = ("type", "message", "traceback")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    traceback: str
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ...) -> None: ...

class FunctionCallResponse(_message.Message):
    __slots__ = ("result", "worker_id", "node_id", "attempts", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: _struct_pb2.Value
    worker_id: str
    node_id: str
    attempts: int
    error: UserError
    def __init__(self, result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., worker_id: _Optional[str] = ..., node_id: _Optional[str] = ..., attempts: _Optional[int] = ..., error: _Optional[_Union[UserError, _Mapping]] = ...) -> None: ...

class DNSRequest(_message.Message):
    __slots__ = ("domain", "record_type")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RECORD_TYPE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    record_type: str
    def __init__(self, domain: _Optional[str] = ..., record_type: _Optional[str] = ...) -> None: ...

class DNSRecord(_message.Message):
    __slots__ = ("type", "value", "ttl")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    ttl: int
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ..., ttl: _Optional[int] = ...) -> None: ...

class DNSResponse(_message.Message):
    __slots__ = ("records", "cached", "source")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[DNSRecord]
    cached: bool
    source: str
    def __init__(self, records: _Optional[_Iterable[_Union[DNSRecord, _Mapping]]] = ..., cached: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class ClosestRequest(_message.Message):
    __slots__ = ("key", "n")
    KEY_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    n: int
    def __init__(self, key: _Optional[bytes] = ..., n: _Optional[int] = ...) -> None: ...

class PeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerInfo(_message.Message):
    __slots__ = ("node_id", "address", "last_seen", "roles", "alive")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    last_seen: float
    roles: _containers.RepeatedScalarFieldContainer[str]
    alive: bool
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., last_seen: _Optional[float] = ..., roles: _Optional[_Iterable[str]] = ..., alive: _Optional[bool] = ...) -> None: ...

class PeersResponse(_message.Message):
    __slots__ = ("self_id", "peers")
    SELF_ID_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    self_id: str
    peers: _containers.RepeatedCompositeFieldContainer[PeerInfo]
    def __init__(self, self_id: _Optional[str] = ..., peers: _Optional[_Iterable[_Union[PeerInfo, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("drain",)
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    drain: bool
    def __init__(self, drain: _Optional[bool] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ("ok", "fragments_moved")
    OK_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_MOVED_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    fragments_moved: int
    def __init__(self, ok: _Optional[bool] = ..., fragments_moved: _Optional[int] = ...) -> None: ...
