"""Replies in parts and reply bodies as views: a FetchFragment reply is the fragment behind its
field key, gathered by the seal, and the reader lifts the fragment out of the opened frame."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.channel.frames import Buffer, decode_reply, encode_reply
from mesh.errors import NotFoundError
from mesh.wire import bytes_field_key, split_bytes_field
from proto import storage_pb2
from storage.documents import DocumentStore
from storage.fraghash import fragment_digest
from storage.fragstore import FragmentStore
from storage.manifest import ManifestStore
from storage.peer import StorageClient, StorageHandlers
from tests.mesh.test_channel import TRANSPORTS, Node
from tests.mesh.test_session import _pair, _wire


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_384, 1 << 20])
def test_a_reply_in_parts_opens_to_the_joined_reply(size: int) -> None:
    c, s = _pair()
    data = os.urandom(size)
    parts: list[Buffer] = [bytes_field_key(1, size), memoryview(data)]
    joined = b"".join(encode_reply(0, "fine", b"".join(parts)))
    plaintext = c.open(_wire(s.seal(5, 0, True, encode_reply(0, "fine", parts))), 5, 0)
    assert plaintext == joined
    code, message, body = decode_reply(plaintext)
    assert (code, message, bytes(body)) == (0, "fine", b"".join(parts))
    assert isinstance(body, memoryview) and body.obj is plaintext     # a view, not a copy
    # the parts are a FetchFragmentReply as protobuf writes it, and split back to the data
    assert storage_pb2.FetchFragmentReply.FromString(bytes(body)).data == data
    assert bytes(split_bytes_field(body, 1)[1]) == data


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 1 << 20])
def test_bytes_field_key_is_protobufs_encoding(size: int) -> None:
    data = os.urandom(size)
    for number, msg in ((1, storage_pb2.FetchFragmentReply(data=data)),
                        (4, storage_pb2.StoreFragmentRequest(data=data))):
        wire = bytes_field_key(number, size) + data
        assert type(msg).FromString(wire) == msg
        if size:                               # proto3 writes no empty field; any reader takes it
            assert wire == msg.SerializeToString()


@pytest.fixture(params=TRANSPORTS)
async def holder(request: pytest.FixtureRequest,
                 tmp_path: Path) -> AsyncIterator[tuple[Node, Node, StorageHandlers]]:
    a, b = Node(transport=request.param), Node(transport=request.param)
    handlers = StorageHandlers(FragmentStore(tmp_path), ManifestStore(tmp_path),
                               DocumentStore(tmp_path))
    handlers.register(b.channel)
    await a.start()
    await b.start()
    yield a, b, handlers
    await a.stop()
    await b.stop()


async def test_fetch_fragment_round_trip(holder: tuple[Node, Node, StorageHandlers]) -> None:
    a, b, handlers = holder
    client = StorageClient.remote(a.peer(b.identity.node_id, b.address))
    for size in (0, 1000, 3 << 20):
        data = os.urandom(size)
        digest = fragment_digest(data)
        handlers.fragments.put(data, "f", 0)
        got = await client.fetch_fragment(digest)
        assert isinstance(got, memoryview) and got == data
    with pytest.raises(NotFoundError, match="not held"):
        await client.fetch_fragment(fragment_digest(b"never stored"))
    # this node's own store answers with the bytes it read, no request round
    local = StorageClient.local(b.identity.node_id, handlers)
    assert await local.fetch_fragment(digest) == data
