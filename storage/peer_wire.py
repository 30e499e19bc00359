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
from mesh.wire import parse_message
from proto import storage_pb2

MAX_FRAGMENT_BYTES = 48 * 2**20
MAX_STORE_BATCH_ITEMS = 64
_ITEM = struct.Struct(">BI")
_BATCHED = {1: "storage.StoreFragment", 2: "storage.StoreManifest", 3: "storage.StoreDocument"}

M = TypeVar("M", bound=Message)


def _parse(cls: type[M], body: bytes, limit: int = MAX_FRAGMENT_BYTES + 4096) -> M:
    return parse_message(cls, body, limit)


def _with_data(head: bytes, data: bytes | memoryview) -> bytes:
    """A serialized StoreFragmentRequest: ``head`` (its other fields) plus field 4 (data),
    written straight from the caller's buffer (one copy instead of bytes() then Serialize)."""
    size = memoryview(data).nbytes
    length = bytearray()
    while True:
        length.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            break
    return b"".join((head, b"\x22", length, data))      # 0x22: field 4, length-delimited


def _frames(body: bytes) -> list[tuple[int, bytes]]:
    view = memoryview(body)
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(view):
        if pos + _ITEM.size > len(view) or len(out) >= MAX_STORE_BATCH_ITEMS:
            raise InvalidArgumentError("malformed StoreBatch")
        kind, size = _ITEM.unpack_from(view, pos)
        pos += _ITEM.size
        if pos + size > len(view):
            raise InvalidArgumentError("malformed StoreBatch")
        out.append((kind, bytes(view[pos:pos + size])))
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

    def request(self) -> bytes:
        if self.kind == 1:
            assert self.fragment is not None
            f = self.fragment
            head = storage_pb2.StoreFragmentRequest(file=f.file, index=f.index, hash=f.digest)
            return _with_data(head.SerializeToString(), f.data)
        if self.kind == 2:
            return storage_pb2.StoreManifestRequest(
                manifest=self.manifest, document=self.document).SerializeToString()
        return storage_pb2.StoreDocumentRequest(document=self.document).SerializeToString()
