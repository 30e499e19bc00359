from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SealedKey(_message.Message):
    __slots__ = ("node_id", "sealed")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    sealed: bytes
    def __init__(self, node_id: _Optional[bytes] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class SecretEnvelope(_message.Message):
    __slots__ = ("name", "allowed", "ciphertext", "recipients", "revoked", "version", "all_compute_nodes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALL_COMPUTE_NODES_FIELD_NUMBER: _ClassVar[int]
    name: str
    allowed: _containers.RepeatedScalarFieldContainer[str]
    ciphertext: bytes
    recipients: _containers.RepeatedCompositeFieldContainer[SealedKey]
    revoked: bool
    version: int
    all_compute_nodes: bool
    def __init__(self, name: _Optional[str] = ..., allowed: _Optional[_Iterable[str]] = ..., ciphertext: _Optional[bytes] = ..., recipients: _Optional[_Iterable[_Union[SealedKey, _Mapping]]] = ..., revoked: _Optional[bool] = ..., version: _Optional[int] = ..., all_compute_nodes: _Optional[bool] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("domain", "record_type", "worker")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    RECORD_TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    domain: str
    record_type: str
    worker: str
    def __init__(self, domain: _Optional[str] = ..., record_type: _Optional[str] = ..., worker: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("type", "value", "ttl")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    ttl: int
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ..., ttl: _Optional[int] = ...) -> None: ...

class ResolveReply(_message.Message):
    __slots__ = ("records", "cached", "source")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    cached: bool
    source: str
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., cached: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class HttpRequest(_message.Message):
    __slots__ = ("url", "method", "headers", "body", "has_body", "timeout", "max_bytes", "allowed_hosts", "worker")
    URL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    HAS_BODY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_HOSTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    url: str
    method: str
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    body: bytes
    has_body: bool
    timeout: float
    max_bytes: int
    allowed_hosts: _containers.RepeatedScalarFieldContainer[str]
    worker: str
    def __init__(self, url: _Optional[str] = ..., method: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., body: _Optional[bytes] = ..., has_body: _Optional[bool] = ..., timeout: _Optional[float] = ..., max_bytes: _Optional[int] = ..., allowed_hosts: _Optional[_Iterable[str]] = ..., worker: _Optional[str] = ...) -> None: ...

class HttpReply(_message.Message):
    __slots__ = ("status", "headers", "body", "url")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    status: int
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    body: bytes
    url: str
    def __init__(self, status: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., body: _Optional[bytes] = ..., url: _Optional[str] = ...) -> None: ...

class SetSecretRequest(_message.Message):
    __slots__ = ("name", "value", "allowed", "nodes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: bytes
    allowed: _containers.RepeatedScalarFieldContainer[str]
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., value: _Optional[bytes] = ..., allowed: _Optional[_Iterable[str]] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class SetSecretReply(_message.Message):
    __slots__ = ("version", "recipients", "stored")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    version: int
    recipients: int
    stored: int
    def __init__(self, version: _Optional[int] = ..., recipients: _Optional[int] = ..., stored: _Optional[int] = ...) -> None: ...

class ListSecretsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SecretInfo(_message.Message):
    __slots__ = ("name", "allowed", "version", "recipients", "revoked", "owner")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    name: str
    allowed: _containers.RepeatedScalarFieldContainer[str]
    version: int
    recipients: int
    revoked: bool
    owner: str
    def __init__(self, name: _Optional[str] = ..., allowed: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ..., recipients: _Optional[int] = ..., revoked: _Optional[bool] = ..., owner: _Optional[str] = ...) -> None: ...

class ListSecretsReply(_message.Message):
    __slots__ = ("secrets",)
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretInfo]
    def __init__(self, secrets: _Optional[_Iterable[_Union[SecretInfo, _Mapping]]] = ...) -> None: ...

class RevokeSecretRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
