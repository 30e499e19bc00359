"""Reads fall back to the next manifest that serves (storage/reader.py read_first/stream_first);
the system test is tests/system/test_cid_read_fallback.py."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest

from mesh.errors import PermissionDeniedError, UnavailableError
from proto import storage_pb2
from storage.codec import NotEnoughFragmentsError
from storage.manifest import Manifest
from storage.reader import FailedManifests, read_first, stream_first
from storage.results import IntegrityError


def _manifest(tag: bytes, size: int = 10) -> Manifest:
    body = storage_pb2.ManifestBody(cid="c", size=size)
    return Manifest(body, storage_pb2.SignedManifest(body=tag))


class FakeReader:
    def __init__(self, tag: bytes, stripes: list[bytes | Exception]) -> None:
        self.manifest = _manifest(tag)
        self._stripes = stripes
        self.closed = False

    async def read_all(self) -> bytes:
        return b"".join([s async for s in self.stripes()])

    async def stripes(self) -> AsyncGenerator[bytes, None]:
        try:
            for s in self._stripes:
                if isinstance(s, Exception):
                    raise s
                yield s
        finally:
            self.closed = True


async def test_a_read_goes_on_to_the_next_manifest_and_remembers_the_failure() -> None:
    failed = FailedManifests()
    junk = FakeReader(b"junk", [NotEnoughFragmentsError("0 of 4")])
    lying = FakeReader(b"lying", [IntegrityError("content does not match its CID")])
    good = FakeReader(b"good", [b"ab", b"cd"])
    readers: list[Any] = [junk, lying, good]
    data, reader = await read_first(readers, failed)
    assert (data, reader) == (b"abcd", good)
    assert failed.has(junk.manifest) and failed.has(lying.manifest)
    assert not failed.has(good.manifest) and failed.fallbacks == 2


async def test_when_none_serves_the_first_error_is_raised_and_other_errors_are_final() -> None:
    failed = FailedManifests()
    first = FakeReader(b"a", [UnavailableError("stripe 0: missing fragment 1 on ab12")])
    second = FakeReader(b"b", [NotEnoughFragmentsError("0 of 4")])
    with pytest.raises(UnavailableError, match="missing fragment 1"):
        await read_first([first, second], failed)               # type: ignore[list-item]
    # An error that is not about this manifest's fragments is not retried elsewhere.
    refused = FakeReader(b"c", [PermissionDeniedError("no")])
    with pytest.raises(PermissionDeniedError):
        await read_first([refused, FakeReader(b"d", [b"x"])], failed)  # type: ignore[list-item]


async def test_a_stream_falls_back_only_before_its_first_stripe() -> None:
    failed = FailedManifests()
    junk = FakeReader(b"junk", [NotEnoughFragmentsError("0 of 4")])
    good = FakeReader(b"good", [b"ab", b"cd"])
    reader, stripes = await stream_first([junk, good], failed)  # type: ignore[list-item]
    assert reader is good and junk.closed
    assert [s async for s in stripes] == [b"ab", b"cd"]
    # After the first stripe is out the stream fails as it is: no silent switch mid-file.
    late = FakeReader(b"late", [b"ab", IntegrityError("stripe 1")])
    reader, stripes = await stream_first([late, good], failed)  # type: ignore[list-item]
    assert reader is late
    with pytest.raises(IntegrityError):
        _ = [s async for s in stripes]
    empty = FakeReader(b"empty", [])
    reader, stripes = await stream_first([empty], failed)       # type: ignore[list-item]
    assert reader is empty and [s async for s in stripes] == []


def test_failed_manifests_are_bounded() -> None:
    failed = FailedManifests(size=2)
    ms = [_manifest(bytes([i])) for i in range(3)]
    for m in ms:
        failed.add(m)
    assert [failed.has(m) for m in ms] == [False, True, True]
