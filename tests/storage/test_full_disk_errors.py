"""This node's own disk or database failing maps to RESOURCE_EXHAUSTED (full) or UNAVAILABLE,
never INTERNAL: checked on a real full tmpfs with the real version store and peer handlers."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.errors import ResourceExhaustedError
from mesh.identity import Identity
from proto import versions_pb2
from storage.cid import cid_for
from storage.durable import local_failure
from storage.versions.peer import FaultHooks, VersionHandlers
from storage.versions.records import encode, new_binding
from storage.versions.store import VersionStore
from tests.support.tmpfs import small_tmpfs

OWNER = Identity.from_seed(b"full-disk-owner")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    yield from small_tmpfs(tmp_path, "1m")


def fill(mnt: Path) -> None:
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_classification() -> None:
    full = local_failure(sqlite3.OperationalError("database or disk is full"))
    assert full is not None and full[0] and "disk is full" in full[1]
    broken = local_failure(sqlite3.DatabaseError("database disk image is malformed"))
    assert broken is not None and not broken[0] and "database failed" in broken[1]
    nospace = local_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert nospace is not None and nospace[0]
    eio = local_failure(OSError(errno.EIO, "Input/output error"))
    assert eio is not None and not eio[0] and "storage failed" in eio[1]
    assert local_failure(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) is None
    assert local_failure(ValueError("bad input")) is None


async def test_version_records_pushed_to_a_full_replica(tiny_disk: Path, tmp_path: Path) -> None:
    src = VersionStore(tmp_path / "src", durable=False)
    binding = new_binding(OWNER.public_key)
    records = [src.revise(OWNER, binding, cid_for(os.urandom(8))) for _ in range(3)]
    store = VersionStore(tiny_disk / "replica")
    handlers = VersionHandlers(store, FaultHooks(tiny_disk / "replica"))
    fill(tiny_disk)
    bundle = versions_pb2.Bundle(file_id=binding.file_id,
                                 records=[encode(r) for r in records] * 200)
    with pytest.raises(ResourceExhaustedError, match="cannot store the records here"):
        for r in records:  # one at a time: the first commit that needs a page fails
            await handlers.push(versions_pb2.Bundle(
                file_id=binding.file_id, records=[encode(r)]).SerializeToString())
        await handlers.push(bundle.SerializeToString())
    (tiny_disk / "filler").unlink()  # space back: the same push is accepted, nothing lost
    reply = versions_pb2.PushReply.FromString(await handlers.push(
        versions_pb2.Bundle(file_id=binding.file_id,
                            records=[encode(r) for r in records]).SerializeToString()))
    assert reply.accepted + reply.duplicate == 3
    assert len(store.get(binding.file_id).valid_ids()) == 3
