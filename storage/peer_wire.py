"""What both halves of the storage peer calls share: size limits, request parsing, and the
StoreBatch framing (handlers: storage/peer_handlers.py, client: storage/peer_client.py).

StoreBatch body: per item ``kind`` (1 byte: 1 StoreFragment, 2 StoreManifest, 3 StoreDocument),
length (4 bytes, big endian), the request. Reply: per item status (1 byte: 0 OK, else the gRPC
status code value), length, then the reply or the UTF-8 error message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from mesh.errors import InvalidArgumentError
from mesh.wire import Buffer, bytes_field_key, parse_message, split_bytes_field
from proto import storage_pb2

MAX_FRAGMENT_BYTES = 48 * 2**20
MAX_STORE_BATCH_ITEMS = 64
_ITEM = struct.Struct(">BI")
_BATCHED = {1: "storage.StoreFragment", 2: "storage.StoreManifest", 3: "storage.StoreDocument"}

M = TypeVar("M", bound=Message)


def _parse(cls: type[M], body: Buffer, limit: int = MAX_FRAGMENT_BYTES + 4096) -> M:
    return parse_message(cls, body, limit)


def _with_data(head: bytes, data: bytes | memoryview) -> list[Buffer]:
    """A serialized StoreFragmentRequest in parts: ``head`` (its other fields), then field 4
    (data) from the caller's buffer. The channel seals the parts into its frame with one copy
    (mesh/channel/frames.py), so the fragment is never joined into a request first."""
    return [head + bytes_field_key(4, memoryview(data).nbytes), data]


def _fragment_request(body: Buffer) -> tuple[storage_pb2.StoreFragmentRequest, memoryview]:
    """A StoreFragmentRequest and its data as a view into ``body`` (mesh/wire.py: upb would
    copy a fragment twice on parsing and again on every read of ``data``)."""
    head, data = split_bytes_field(body, 4)
    return _parse(storage_pb2.StoreFragmentRequest, head, 4096), data


def _frames(body: Buffer) -> list[tuple[int, memoryview]]:
    """The items of a StoreBatch body or reply, as views into it."""
    view = memoryview(body)
    out: list[tuple[int, memoryview]] = []
    pos = 0
    while pos < len(view):
        if pos + _ITEM.size > len(view) or len(out) >= MAX_STORE_BATCH_ITEMS:
            raise InvalidArgumentError("malformed StoreBatch")
        kind, size = _ITEM.unpack_from(view, pos)
        pos += _ITEM.size
        if pos + size > len(view):
            raise InvalidArgumentError("malformed StoreBatch")
        out.append((kind, view[pos:pos + size]))
        pos += size
    return out


def _hex(h: bytes) -> str:
    if len(h) != 32:
        raise InvalidArgumentError("a fragment hash has 32 bytes")
    return h.hex()


@dataclass(frozen=True)
class FragmentItem:
    file: str
    index: int
    data: bytes | memoryview
    digest: bytes          # computed by the caller from ``data`` itself


@dataclass(frozen=True)
class StoreItem:
    """One write in a StoreBatch: a fragment, a manifest (with or without a document record
    riding along, as in StoreManifest), or a document record alone."""

    kind: int
    fragment: FragmentItem | None = None
    manifest: storage_pb2.SignedManifest | None = None
    document: storage_pb2.SignedDocument | None = None

    @classmethod
    def of_fragment(cls, file: str, index: int, data: bytes | memoryview,
                    digest: bytes) -> StoreItem:
        return cls(1, fragment=FragmentItem(file, index, data, digest))

    @classmethod
    def of_records(cls, manifest: storage_pb2.SignedManifest | None,
                   document: storage_pb2.SignedDocument | None) -> StoreItem:
        return cls(2 if manifest is not None else 3, manifest=manifest, document=document)

    def request(self) -> bytes | list[Buffer]:
        if self.kind == 1:
            assert self.fragment is not None
            f = self.fragment
            head = storage_pb2.StoreFragmentRequest(file=f.file, index=f.index, hash=f.digest)
            return _with_data(head.SerializeToString(), f.data)
        if self.kind == 2:
            return storage_pb2.StoreManifestRequest(
                manifest=self.manifest, document=self.document).SerializeToString()
        return storage_pb2.StoreDocumentRequest(document=self.document).SerializeToString()
