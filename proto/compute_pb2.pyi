from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderRecord(_message.Message):
    __slots__ = ("function", "worker_id", "node_id", "address", "load", "code_cid", "deploy_seq", "entry", "withdrawn", "capacity", "wall_time_s")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    CODE_CID_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_SEQ_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    function: str
    worker_id: str
    node_id: bytes
    address: str
    load: int
    code_cid: str
    deploy_seq: int
    entry: str
    withdrawn: bool
    capacity: int
    wall_time_s: float
    def __init__(self, function: _Optional[str] = ..., worker_id: _Optional[str] = ..., node_id: _Optional[bytes] = ..., address: _Optional[str] = ..., load: _Optional[int] = ..., code_cid: _Optional[str] = ..., deploy_seq: _Optional[int] = ..., entry: _Optional[str] = ..., withdrawn: _Optional[bool] = ..., capacity: _Optional[int] = ..., wall_time_s: _Optional[float] = ...) -> None: ...

class NameClaim(_message.Message):
    __slots__ = ("function", "claimed_ms", "transfer_to", "released", "inherited_from", "deploy")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_MS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_TO_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    INHERITED_FROM_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_FIELD_NUMBER: _ClassVar[int]
    function: str
    claimed_ms: int
    transfer_to: bytes
    released: bool
    inherited_from: bytes
    deploy: ProviderRecord
    def __init__(self, function: _Optional[str] = ..., claimed_ms: _Optional[int] = ..., transfer_to: _Optional[bytes] = ..., released: _Optional[bool] = ..., inherited_from: _Optional[bytes] = ..., deploy: _Optional[_Union[ProviderRecord, _Mapping]] = ...) -> None: ...

class CallRequest(_message.Message):
    __slots__ = ("function", "args", "kwargs", "timeout", "code_cid", "entry", "worker_id", "deploy_seq", "deployer")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    KWARGS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CODE_CID_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_SEQ_FIELD_NUMBER: _ClassVar[int]
    DEPLOYER_FIELD_NUMBER: _ClassVar[int]
    function: str
    args: _struct_pb2.ListValue
    kwargs: _struct_pb2.Struct
    timeout: float
    code_cid: str
    entry: str
    worker_id: str
    deploy_seq: int
    deployer: bytes
    def __init__(self, function: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., kwargs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout: _Optional[float] = ..., code_cid: _Optional[str] = ..., entry: _Optional[str] = ..., worker_id: _Optional[str] = ..., deploy_seq: _Optional[int] = ..., deployer: _Optional[bytes] = ...) -> None: ...

class CallError(_message.Message):
    __slots__ = ("code", "type", "message", "traceback", "user")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    code: int
    type: str
    message: str
    traceback: str
    user: bool
    def __init__(self, code: _Optional[int] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., user: _Optional[bool] = ...) -> None: ...

class CallReply(_message.Message):
    __slots__ = ("result", "worker_id", "node_id", "error", "failed")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    result: _struct_pb2.Value
    worker_id: str
    node_id: bytes
    error: CallError
    failed: bool
    def __init__(self, result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., worker_id: _Optional[str] = ..., node_id: _Optional[bytes] = ..., error: _Optional[_Union[CallError, _Mapping]] = ..., failed: _Optional[bool] = ...) -> None: ...

class StoreCodeRequest(_message.Message):
    __slots__ = ("cid", "code")
    CID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    cid: str
    code: bytes
    def __init__(self, cid: _Optional[str] = ..., code: _Optional[bytes] = ...) -> None: ...

class StoreCodeReply(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    def __init__(self, stored: _Optional[bool] = ...) -> None: ...

class FetchCodeRequest(_message.Message):
    __slots__ = ("cid",)
    CID_FIELD_NUMBER: _ClassVar[int]
    cid: str
    def __init__(self, cid: _Optional[str] = ...) -> None: ...

class FetchCodeReply(_message.Message):
    __slots__ = ("code", "found")
    CODE_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    code: bytes
    found: bool
    def __init__(self, code: _Optional[bytes] = ..., found: _Optional[bool] = ...) -> None: ...

class NameRequest(_message.Message):
    __slots__ = ("function", "action", "to_node_id")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    function: str
    action: str
    to_node_id: bytes
    def __init__(self, function: _Optional[str] = ..., action: _Optional[str] = ..., to_node_id: _Optional[bytes] = ...) -> None: ...

class NameReply(_message.Message):
    __slots__ = ("function", "owner_key", "owner_id", "claimed_ms", "mine")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_MS_FIELD_NUMBER: _ClassVar[int]
    MINE_FIELD_NUMBER: _ClassVar[int]
    function: str
    owner_key: bytes
    owner_id: str
    claimed_ms: int
    mine: bool
    def __init__(self, function: _Optional[str] = ..., owner_key: _Optional[bytes] = ..., owner_id: _Optional[str] = ..., claimed_ms: _Optional[int] = ..., mine: _Optional[bool] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("source", "filename", "names", "worker_id")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    source: bytes
    filename: str
    names: _containers.RepeatedScalarFieldContainer[str]
    worker_id: str
    def __init__(self, source: _Optional[bytes] = ..., filename: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., worker_id: _Optional[str] = ...) -> None: ...

class DeployedFunction(_message.Message):
    __slots__ = ("name", "entry")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    name: str
    entry: str
    def __init__(self, name: _Optional[str] = ..., entry: _Optional[str] = ...) -> None: ...

class DeployResponse(_message.Message):
    __slots__ = ("cid", "deploy_seq", "functions", "code_replicas", "record_acks")
    CID_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_SEQ_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    CODE_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RECORD_ACKS_FIELD_NUMBER: _ClassVar[int]
    cid: str
    deploy_seq: int
    functions: _containers.RepeatedCompositeFieldContainer[DeployedFunction]
    code_replicas: int
    record_acks: int
    def __init__(self, cid: _Optional[str] = ..., deploy_seq: _Optional[int] = ..., functions: _Optional[_Iterable[_Union[DeployedFunction, _Mapping]]] = ..., code_replicas: _Optional[int] = ..., record_acks: _Optional[int] = ...) -> None: ...

class FunctionsRequest(_message.Message):
    __slots__ = ("function",)
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    function: str
    def __init__(self, function: _Optional[str] = ...) -> None: ...

class ProviderInfo(_message.Message):
    __slots__ = ("function", "worker_id", "node_id", "address", "load", "code_cid", "deploy_seq", "alive")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    CODE_CID_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_SEQ_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    function: str
    worker_id: str
    node_id: str
    address: str
    load: int
    code_cid: str
    deploy_seq: int
    alive: bool
    def __init__(self, function: _Optional[str] = ..., worker_id: _Optional[str] = ..., node_id: _Optional[str] = ..., address: _Optional[str] = ..., load: _Optional[int] = ..., code_cid: _Optional[str] = ..., deploy_seq: _Optional[int] = ..., alive: _Optional[bool] = ...) -> None: ...

class FunctionsResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderInfo]
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderInfo, _Mapping]]] = ...) -> None: ...
