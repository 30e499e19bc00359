"""FileService's registration on the local API, with PushStream's chunks parsed without copies.

The generated ``add_FileServiceServicer_to_server`` parses each 1 MiB PushChunk with protobuf,
which copies ``data`` into the parser's arena and again into a new ``bytes`` on every read of
the field: 128 MiB of copies on the pushing node for a 64 MiB stream. Here PushStream's
deserializer takes ``data`` out as a view into the message gRPC received (mesh/wire.py's
split_bytes_field) and parses only the rest; every other method is registered as the generated
code does, from the same service descriptor. A chunk that is not valid protobuf raises, which
the node's MalformedRequestInterceptor answers with INVALID_ARGUMENT as for any method.
"""

from __future__ import annotations

from typing import Any

import grpc

from mesh.wire import split_bytes_field
from proto import taskworker_pb2

SERVICE = "taskworker.FileService"
_DATA_FIELD = taskworker_pb2.PushChunk.DESCRIPTOR.fields_by_name["data"].number


class PushChunkView:
    """A PushChunk whose ``data`` is a view into the received message (read-only)."""

    __slots__ = ("_rest", "data")

    def __init__(self, raw: bytes) -> None:
        head, self.data = split_bytes_field(raw, _DATA_FIELD)
        self._rest = taskworker_pb2.PushChunk.FromString(head)

    @property
    def header(self) -> taskworker_pb2.PushRequest:
        return self._rest.header

    def HasField(self, name: str) -> bool:  # noqa: N802  (the protobuf message's name)
        return self._rest.HasField(name)


_KINDS = {(False, False): grpc.unary_unary_rpc_method_handler,
          (False, True): grpc.unary_stream_rpc_method_handler,
          (True, False): grpc.stream_unary_rpc_method_handler,
          (True, True): grpc.stream_stream_rpc_method_handler}


def add_file_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Register ``servicer``'s FileService methods on ``server``."""
    service = taskworker_pb2.DESCRIPTOR.services_by_name["FileService"]
    handlers = {}
    for method in service.methods:
        request = getattr(taskworker_pb2, method.input_type.name)
        response = getattr(taskworker_pb2, method.output_type.name)
        parse = PushChunkView if method.name == "PushStream" else request.FromString
        kind = _KINDS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(getattr(servicer, method.name), request_deserializer=parse,
                                     response_serializer=response.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    register = getattr(server, "add_registered_method_handlers", None)   # as generated code does
    if register is not None:                                 # (grpc >= 1.62; not in the stubs)
        register(SERVICE, handlers)
