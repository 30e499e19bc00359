from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorEntry(_message.Message):
    __slots__ = ("writer", "counter")
    WRITER_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    writer: bytes
    counter: int
    def __init__(self, writer: _Optional[bytes] = ..., counter: _Optional[int] = ...) -> None: ...

class FileBinding(_message.Message):
    __slots__ = ("file_id", "owner_key", "nonce")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    file_id: bytes
    owner_key: bytes
    nonce: bytes
    def __init__(self, file_id: _Optional[bytes] = ..., owner_key: _Optional[bytes] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class VersionRecord(_message.Message):
    __slots__ = ("file", "cid", "vector", "parents", "writer_key", "time_ms", "size", "content_ref", "signature")
    FILE_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    WRITER_KEY_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_REF_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    file: FileBinding
    cid: str
    vector: _containers.RepeatedCompositeFieldContainer[VectorEntry]
    parents: _containers.RepeatedScalarFieldContainer[bytes]
    writer_key: bytes
    time_ms: int
    size: int
    content_ref: bytes
    signature: bytes
    def __init__(self, file: _Optional[_Union[FileBinding, _Mapping]] = ..., cid: _Optional[str] = ..., vector: _Optional[_Iterable[_Union[VectorEntry, _Mapping]]] = ..., parents: _Optional[_Iterable[bytes]] = ..., writer_key: _Optional[bytes] = ..., time_ms: _Optional[int] = ..., size: _Optional[int] = ..., content_ref: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GrantRecord(_message.Message):
    __slots__ = ("file", "grantee_key", "revoke", "seq", "vector", "time_ms", "signature", "kept", "kept_floor")
    FILE_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_KEY_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    KEPT_FLOOR_FIELD_NUMBER: _ClassVar[int]
    file: FileBinding
    grantee_key: bytes
    revoke: bool
    seq: int
    vector: _containers.RepeatedCompositeFieldContainer[VectorEntry]
    time_ms: int
    signature: bytes
    kept: _containers.RepeatedScalarFieldContainer[bytes]
    kept_floor: int
    def __init__(self, file: _Optional[_Union[FileBinding, _Mapping]] = ..., grantee_key: _Optional[bytes] = ..., revoke: _Optional[bool] = ..., seq: _Optional[int] = ..., vector: _Optional[_Iterable[_Union[VectorEntry, _Mapping]]] = ..., time_ms: _Optional[int] = ..., signature: _Optional[bytes] = ..., kept: _Optional[_Iterable[bytes]] = ..., kept_floor: _Optional[int] = ...) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("file_id", "grants", "records", "manifests")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    file_id: bytes
    grants: _containers.RepeatedScalarFieldContainer[bytes]
    records: _containers.RepeatedScalarFieldContainer[bytes]
    manifests: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, file_id: _Optional[bytes] = ..., grants: _Optional[_Iterable[bytes]] = ..., records: _Optional[_Iterable[bytes]] = ..., manifests: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("accepted", "duplicate", "refused")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicate: int
    refused: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[int] = ..., duplicate: _Optional[int] = ..., refused: _Optional[_Iterable[str]] = ...) -> None: ...

class DigestRequest(_message.Message):
    __slots__ = ("file_id",)
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    file_id: bytes
    def __init__(self, file_id: _Optional[bytes] = ...) -> None: ...

class Digest(_message.Message):
    __slots__ = ("file_id", "grant_ids", "record_ids", "heads", "head_records", "head_manifests")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_IDS_FIELD_NUMBER: _ClassVar[int]
    RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_RECORDS_FIELD_NUMBER: _ClassVar[int]
    HEAD_MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    file_id: bytes
    grant_ids: _containers.RepeatedScalarFieldContainer[bytes]
    record_ids: _containers.RepeatedScalarFieldContainer[bytes]
    heads: _containers.RepeatedScalarFieldContainer[bytes]
    head_records: _containers.RepeatedScalarFieldContainer[bytes]
    head_manifests: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, file_id: _Optional[bytes] = ..., grant_ids: _Optional[_Iterable[bytes]] = ..., record_ids: _Optional[_Iterable[bytes]] = ..., heads: _Optional[_Iterable[bytes]] = ..., head_records: _Optional[_Iterable[bytes]] = ..., head_manifests: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("file_id", "grant_ids", "record_ids", "all")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_IDS_FIELD_NUMBER: _ClassVar[int]
    RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    file_id: bytes
    grant_ids: _containers.RepeatedScalarFieldContainer[bytes]
    record_ids: _containers.RepeatedScalarFieldContainer[bytes]
    all: bool
    def __init__(self, file_id: _Optional[bytes] = ..., grant_ids: _Optional[_Iterable[bytes]] = ..., record_ids: _Optional[_Iterable[bytes]] = ..., all: _Optional[bool] = ...) -> None: ...
