"""Version peer calls over the sealed channel, and test-only fault hooks.

Methods (all unary; bodies are proto/versions.proto messages):
    versions.Digest  DigestRequest -> Digest      ids of the valid records and grants held, and
                                                  the heads' records and the manifests of their
                                                  content it holds (a reader's read-ahead)
    versions.Pull    PullRequest   -> Bundle      the named (or all) valid records and grants
    versions.Push    Bundle        -> PushReply   verify every record, keep what passes; a
                                                  Revise's push also carries the content's
                                                  manifest (verified, handed to manifest_sink)
A replica answers only with records that are valid in its set, and keeps only what passes
VersionSet.add: a record with a bad signature is refused and so is never forwarded.

Test hooks (only when the environment has TW_MESH_VERSIONS_TEST_HOOKS=1): the node reads
DATA/versions-test.json at each call: {"block": [node id hex prefixes], "withhold": true}.
"block" drops version exchange with those peers both ways (a partition between two nodes
without touching the rest of the mesh); "withhold" makes this node answer Digest/Pull as if it
held only each file's first versions (a replica withholding newer ones).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from mesh.errors import InvalidArgumentError, MeshError, ResourceExhaustedError, UnavailableError
from mesh.wire import parse_message
from proto import storage_pb2, versions_pb2
from storage.manifest import Manifest, verify_manifest
from storage.versions.errors import VersionError
from storage.versions.precheck import prepare
from storage.versions.records import FILE_ID_BYTES, decode_version, encode, record_id
from storage.versions.store import VersionStore
from storage.versions.vset import VersionSet

HOOKS_ENV = "TW_MESH_VERSIONS_TEST_HOOKS"
HOOKS_FILE = "versions-test.json"
MAX_BODY = 32 * 2**20
MAX_IDS = 100_000
MAX_MANIFESTS = 4


class FaultHooks:
    """Partitions and withholding for system tests; inert unless HOOKS_ENV is set."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / HOOKS_FILE
        self.enabled = os.environ.get(HOOKS_ENV) == "1"

    def _read(self) -> dict[str, Any]:
        if not self.enabled:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def blocked(self, node_id: bytes) -> bool:
        prefixes = self._read().get("block", [])
        h = node_id.hex()
        return any(isinstance(p, str) and p and h.startswith(p) for p in prefixes)

    def withhold(self) -> bool:
        return bool(self._read().get("withhold", False))


def parse(cls: type[Any], body: bytes) -> Any:
    return parse_message(cls, body, MAX_BODY)


def _check_file(file_id: bytes) -> bytes:
    if len(file_id) != FILE_ID_BYTES:
        raise InvalidArgumentError("a file_id has 16 bytes")
    return file_id


class VersionHandlers:
    """The server half: this node's replica of every file's version set."""

    def __init__(self, store: VersionStore, hooks: FaultHooks) -> None:
        self.store = store
        self.hooks = hooks
        self.refused = 0
        self.calls = 0
        self.verifying = 0        # Pushes whose records are being checked now (precheck.py)
        self.manifest_sink: Callable[[Manifest], None] | None = None
        self.manifest_source: Callable[[str], Manifest | None] | None = None

    def visible(self, file_id: bytes) -> VersionSet:
        vs = self.store.get(file_id, keep=False)   # any file_id a peer names: not kept if empty
        if not self.hooks.withhold():
            return vs
        shown = VersionSet(file_id)
        shown.add_many(vs.grants(), [v.record for v in vs.valid() if not v.record.parents])
        return shown

    def check_caller(self, node_id: bytes) -> None:
        if self.hooks.blocked(node_id):
            raise UnavailableError("partitioned (test hook)")

    async def digest(self, body: bytes) -> bytes:
        self.calls += 1
        req = parse(versions_pb2.DigestRequest, body)
        await self.store.load(_check_file(req.file_id))   # off the loop, if not loaded
        vs = self.visible(_check_file(req.file_id))
        heads = vs.heads()
        source = self.manifest_source
        known = [m for h in heads if source is not None and (m := source(h.cid)) is not None]
        return versions_pb2.Digest(
            file_id=req.file_id, grant_ids=sorted(vs.grant_ids()),
            record_ids=sorted(vs.valid_ids()), heads=[h.id for h in heads],
            head_records=[encode(h.record) for h in heads],
            head_manifests=[m.signed.SerializeToString() for m in known],
        ).SerializeToString()

    def _take_manifests(self, vs: VersionSet, records: list[bytes], raw: list[bytes]) -> None:
        """Hand ``manifest_sink`` the manifests that verify and are the content of a record
        in this push that is now valid here, signed by that record's writer (who pushed the
        content: any member could otherwise replay a held record with a manifest of its own
        for that CID, and this node would cache and serve it as the version's)."""
        if self.manifest_sink is None or not raw:
            return
        valid = vs.valid_ids()
        writers: set[tuple[str, bytes]] = set()
        for data in records:
            try:
                record = decode_version(data)
            except VersionError:
                continue
            if record_id(record) in valid:
                writers.add((record.cid, bytes(record.writer_key)))
        for data in raw[:MAX_MANIFESTS]:
            try:
                m = verify_manifest(storage_pb2.SignedManifest.FromString(data))
            except (DecodeError, MeshError):
                continue
            if (m.cid, bytes(m.body.owner_key)) in writers:
                self.manifest_sink(m)

    async def pull(self, body: bytes) -> bytes:
        self.calls += 1
        req = parse(versions_pb2.PullRequest, body)
        await self.store.load(_check_file(req.file_id))   # off the loop, if not loaded
        vs = self.visible(_check_file(req.file_id))
        if len(req.record_ids) + len(req.grant_ids) > MAX_IDS:
            raise ResourceExhaustedError("too many ids in one pull")
        want_r, want_g = set(req.record_ids), set(req.grant_ids)
        valid = vs.valid_ids()
        from storage.versions.records import grant_id
        grants = [encode(g) for g in vs.grants() if req.all or grant_id(g) in want_g]
        records = [encode(v.record) for v in vs.records()
                   if v.id in valid and (req.all or v.id in want_r)]
        return versions_pb2.Bundle(file_id=req.file_id, grants=grants,
                                   records=records).SerializeToString()

    async def push(self, body: bytes) -> bytes:
        self.calls += 1
        req = parse(versions_pb2.Bundle, body)
        fid = _check_file(req.file_id)
        if len(req.records) + len(req.grants) > MAX_IDS:
            raise ResourceExhaustedError("too many records in one push")
        await self.store.load(fid)
        self.verifying += 1
        try:
            batch = await prepare(req.grants, req.records)     # signatures: off the loop
        finally:
            self.verifying -= 1
        try:
            result = await self.store.ingest_stepwise(fid, batch)
        except (OSError, sqlite3.Error) as exc:  # disk full, I/O error: the pusher counts it
            raise ResourceExhaustedError(f"cannot store the records here: {exc}") from exc
        self.refused += len(result.refused)
        self._take_manifests(self.store.get(fid, keep=False), list(req.records),
                            list(req.manifests))
        return versions_pb2.PushReply(
            accepted=result.accepted, duplicate=result.duplicate,
            refused=[f"{vid.hex()[:16]}: {type(exc).__name__}: {exc}"
                     for vid, exc in result.refused]).SerializeToString()
