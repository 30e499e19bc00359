"""Version histories a file's own writer can sign to make a replica work hard: a long chain,
and many concurrent leaves from just two keys (used by the cost tests, unit and real nodes)."""

from __future__ import annotations

from mesh.identity import Identity
from proto import versions_pb2
from storage.cid import cid_for
from storage.versions.records import new_binding, record_id, sign_grant, sign_version, writer_id


def chain(owner: Identity, n: int) -> tuple[versions_pb2.FileBinding,
                                            list[versions_pb2.VersionRecord]]:
    """A new file of ``owner``'s and ``n`` versions, each on the one before."""
    binding = new_binding(owner.public_key)
    cid = cid_for(b"flood")
    me = writer_id(owner.public_key)
    records = [sign_version(owner, binding, cid, {me: 1}, [])]
    for i in range(2, n + 1):
        records.append(sign_version(owner, binding, cid, {me: i}, [record_id(records[-1])]))
    return binding, records


def leaves(owner: Identity, n: int) -> tuple[versions_pb2.FileBinding,
                                             list[versions_pb2.GrantRecord],
                                             list[versions_pb2.VersionRecord]]:
    """A chain of ``n`` owner versions and, on the i-th, a granted writer's version with
    counter n-i: ``n`` leaves whose vectors are pairwise incomparable (``n`` heads)."""
    binding, records = chain(owner, n)
    writer = Identity.generate()
    grant = sign_grant(owner, binding, writer.public_key)
    o, w = writer_id(owner.public_key), writer_id(writer.public_key)
    cid = cid_for(b"flood")
    kids = [sign_version(writer, binding, cid, {o: i + 1, w: n - i}, [record_id(records[i])])
            for i in range(n)]
    return binding, [grant], records + kids
