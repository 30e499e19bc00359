from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Fragment(_message.Message):
    __slots__ = ("hash", "holder")
    HASH_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    holder: int
    def __init__(self, hash: _Optional[bytes] = ..., holder: _Optional[int] = ...) -> None: ...

class Stripe(_message.Message):
    __slots__ = ("fragments",)
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    fragments: _containers.RepeatedCompositeFieldContainer[Fragment]
    def __init__(self, fragments: _Optional[_Iterable[_Union[Fragment, _Mapping]]] = ...) -> None: ...

class SealedKey(_message.Message):
    __slots__ = ("recipient", "sealed")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    recipient: bytes
    sealed: bytes
    def __init__(self, recipient: _Optional[bytes] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class ManifestBody(_message.Message):
    __slots__ = ("format", "cid", "file_id", "size", "k", "m", "stripe_size", "codec_format", "packet_size", "matrix", "owner_key", "keys", "public_key", "filename_sealed", "placement_key", "holders", "stripes", "under_replicated", "created_ms", "inline")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    STRIPE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PACKET_SIZE_FIELD_NUMBER: _ClassVar[int]
    MATRIX_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    FILENAME_SEALED_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_KEY_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    STRIPES_FIELD_NUMBER: _ClassVar[int]
    UNDER_REPLICATED_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    format: int
    cid: str
    file_id: str
    size: int
    k: int
    m: int
    stripe_size: int
    codec_format: int
    packet_size: int
    matrix: str
    owner_key: bytes
    keys: _containers.RepeatedCompositeFieldContainer[SealedKey]
    public_key: bytes
    filename_sealed: bytes
    placement_key: bytes
    holders: _containers.RepeatedScalarFieldContainer[bytes]
    stripes: _containers.RepeatedCompositeFieldContainer[Stripe]
    under_replicated: bool
    created_ms: int
    inline: bytes
    def __init__(self, format: _Optional[int] = ..., cid: _Optional[str] = ..., file_id: _Optional[str] = ..., size: _Optional[int] = ..., k: _Optional[int] = ..., m: _Optional[int] = ..., stripe_size: _Optional[int] = ..., codec_format: _Optional[int] = ..., packet_size: _Optional[int] = ..., matrix: _Optional[str] = ..., owner_key: _Optional[bytes] = ..., keys: _Optional[_Iterable[_Union[SealedKey, _Mapping]]] = ..., public_key: _Optional[bytes] = ..., filename_sealed: _Optional[bytes] = ..., placement_key: _Optional[bytes] = ..., holders: _Optional[_Iterable[bytes]] = ..., stripes: _Optional[_Iterable[_Union[Stripe, _Mapping]]] = ..., under_replicated: _Optional[bool] = ..., created_ms: _Optional[int] = ..., inline: _Optional[bytes] = ...) -> None: ...

class SignedManifest(_message.Message):
    __slots__ = ("body", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class DocumentBody(_message.Message):
    __slots__ = ("file_id", "cid", "owner_key", "time_ms", "nonce")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    cid: str
    owner_key: bytes
    time_ms: int
    nonce: bytes
    def __init__(self, file_id: _Optional[str] = ..., cid: _Optional[str] = ..., owner_key: _Optional[bytes] = ..., time_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class SignedDocument(_message.Message):
    __slots__ = ("body", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class StoreFragmentRequest(_message.Message):
    __slots__ = ("file", "index", "hash", "data")
    FILE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file: str
    index: int
    hash: bytes
    data: bytes
    def __init__(self, file: _Optional[str] = ..., index: _Optional[int] = ..., hash: _Optional[bytes] = ..., data: _Optional[bytes] = ...) -> None: ...

class StoreFragmentReply(_message.Message):
    __slots__ = ("hash",)
    HASH_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    def __init__(self, hash: _Optional[bytes] = ...) -> None: ...

class FetchFragmentRequest(_message.Message):
    __slots__ = ("hash",)
    HASH_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    def __init__(self, hash: _Optional[bytes] = ...) -> None: ...

class FetchFragmentReply(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class HasFragmentsRequest(_message.Message):
    __slots__ = ("hashes", "deep")
    HASHES_FIELD_NUMBER: _ClassVar[int]
    DEEP_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    deep: bool
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ..., deep: _Optional[bool] = ...) -> None: ...

class HasFragmentsReply(_message.Message):
    __slots__ = ("present",)
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    present: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, present: _Optional[_Iterable[bool]] = ...) -> None: ...

class DeleteFragmentRequest(_message.Message):
    __slots__ = ("hash", "file", "manifest")
    HASH_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    file: str
    manifest: SignedManifest
    def __init__(self, hash: _Optional[bytes] = ..., file: _Optional[str] = ..., manifest: _Optional[_Union[SignedManifest, _Mapping]] = ...) -> None: ...

class DeleteFragmentReply(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...

class StoreManifestRequest(_message.Message):
    __slots__ = ("manifest", "document")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    manifest: SignedManifest
    document: SignedDocument
    def __init__(self, manifest: _Optional[_Union[SignedManifest, _Mapping]] = ..., document: _Optional[_Union[SignedDocument, _Mapping]] = ...) -> None: ...

class StoreManifestReply(_message.Message):
    __slots__ = ("stored", "document_stored")
    STORED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_STORED_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    document_stored: bool
    def __init__(self, stored: _Optional[bool] = ..., document_stored: _Optional[bool] = ...) -> None: ...

class FetchManifestsRequest(_message.Message):
    __slots__ = ("cid",)
    CID_FIELD_NUMBER: _ClassVar[int]
    cid: str
    def __init__(self, cid: _Optional[str] = ...) -> None: ...

class FetchManifestsReply(_message.Message):
    __slots__ = ("manifests",)
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    manifests: _containers.RepeatedCompositeFieldContainer[SignedManifest]
    def __init__(self, manifests: _Optional[_Iterable[_Union[SignedManifest, _Mapping]]] = ...) -> None: ...

class StoreDocumentRequest(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: SignedDocument
    def __init__(self, document: _Optional[_Union[SignedDocument, _Mapping]] = ...) -> None: ...

class StoreDocumentReply(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    def __init__(self, stored: _Optional[bool] = ...) -> None: ...

class FetchDocumentRequest(_message.Message):
    __slots__ = ("file_id",)
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    def __init__(self, file_id: _Optional[str] = ...) -> None: ...

class FetchDocumentReply(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[SignedDocument]
    def __init__(self, documents: _Optional[_Iterable[_Union[SignedDocument, _Mapping]]] = ...) -> None: ...
