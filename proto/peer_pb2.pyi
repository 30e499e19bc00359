from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class HandshakeRequest(_message.Message):
    __slots__ = ("version", "client_key", "client_ephemeral", "server_id", "timestamp_ms", "nonce", "signature")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    version: int
    client_key: bytes
    client_ephemeral: bytes
    server_id: bytes
    timestamp_ms: int
    nonce: bytes
    signature: bytes
    def __init__(self, version: _Optional[int] = ..., client_key: _Optional[bytes] = ..., client_ephemeral: _Optional[bytes] = ..., server_id: _Optional[bytes] = ..., timestamp_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("server_key", "server_ephemeral", "session_id", "signature")
    SERVER_KEY_FIELD_NUMBER: _ClassVar[int]
    SERVER_EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    server_key: bytes
    server_ephemeral: bytes
    session_id: bytes
    signature: bytes
    def __init__(self, server_key: _Optional[bytes] = ..., server_ephemeral: _Optional[bytes] = ..., session_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
