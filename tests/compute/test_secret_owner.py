"""``get_secret(name, owner=...)``: the owner argument's form, checked where it enters (the
real sandbox's pipe, TaskWorker, the reader), and the reader's rule for a named owner (only
that key's record, whatever sequence another key published the name at), for reads and for
``{{secret:NAME@OWNER}}`` header placeholders.

The reader cases use test_proxy's in-memory DHT (pure selection logic); the sandbox and
TaskWorker cases run the real sandbox and a real embedded node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nacl.utils
import pytest

from compute.proxy.envelope import encrypt_value, seal_record
from compute.proxy.secrets import SecretStore
from compute.proxy.service import ProxyService
from compute.sandbox import SandboxPool
from compute.sandbox.limits import check_owner
from mesh.errors import InvalidArgumentError, PermissionDeniedError
from taskworker import TaskWorker
from tests.compute.test_proxy import FakeCtx, FakeDHT, link, store
from tests.compute.test_proxy_support import HttpServer, http_server_fixture  # noqa: F401

NODE_ID = "0123456789abcdef0123456789abcdef01234567"          # 40 hex digits
KEY = "ab" * 32                                                # a 64-hex public key
BAD = ["", "0123456789abcde", NODE_ID + "8", KEY[:-1], "g" * 16, "0x" + NODE_ID[:16],
       NODE_ID[:16] + " ", "1" * 50]


@pytest.mark.parametrize("owner", [NODE_ID, NODE_ID[:16], NODE_ID.upper(), KEY])
def test_owner_forms_accepted(owner: str) -> None:
    assert check_owner(owner) == owner.lower()


@pytest.mark.parametrize("owner", [*BAD, 12345678901234567, b"0123456789abcdef"])
def test_owner_forms_refused(owner: object) -> None:
    with pytest.raises(ValueError, match="owner must be a node id"):
        check_owner(owner)


# ---------------------------------------------------------------- through the real sandbox
class RecordingHost:
    """A HostServices whose get_secret has no ``owner`` parameter when ``legacy``: the
    one-argument form must still reach it unchanged."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def get_secret(self, name: str, **kw: Any) -> str:
        self.calls.append((name, kw))
        return f"value-of-{name}"

    async def call_external_api(self, *args: Any) -> dict[str, Any]:
        raise PermissionError("no")

    async def resolve(self, domain: str, record_type: str) -> list[dict[str, Any]]:
        raise PermissionError("no")


class LegacyHost(RecordingHost):
    async def get_secret(self, name: str) -> str:  # type: ignore[override]
        self.calls.append((name, {}))
        return "legacy"


READ = '''
def read(owner=None, *, one_arg=False):
    try:
        return worker.get_secret("k") if one_arg else worker.get_secret("k", owner=owner)
    except ValueError as exc:
        return ["ValueError", str(exc)]

def bare(owner):
    return taskworker.get_secret("k", owner)
'''


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    p = SandboxPool(size=2)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def test_the_sandbox_passes_a_checked_owner_and_refuses_a_bad_one(
        pool: SandboxPool) -> None:
    host = RecordingHost()
    src = "import taskworker\n" + READ
    assert await pool.run(src, "read", [], {"one_arg": True}, host=host) == "value-of-k"
    assert await pool.run(src, "read", [None], {}, host=host) == "value-of-k"
    assert await pool.run(src, "read", [NODE_ID[:16].upper()], {}, host=host) == "value-of-k"
    assert await pool.run(src, "bare", [KEY], {}, host=host) == "value-of-k"  # positional
    assert host.calls == [("k", {}), ("k", {}), ("k", {"owner": NODE_ID[:16]}),
                          ("k", {"owner": KEY})]
    for owner in [*BAD, 12345, ["x"]]:
        kind, message = await pool.run(src, "read", [owner], {}, host=host)
        assert kind == "ValueError" and "owner must be a node id" in message, (owner, message)
    assert len(host.calls) == 4                    # a refused owner never reached the host
    legacy = LegacyHost()             # a host hook written before the owner argument
    assert await pool.run(src, "read", [], {"one_arg": True}, host=legacy) == "legacy"


# ---------------------------------------------------------------- the reader's rule
async def test_a_named_owner_s_record_only(tmp_path: Path) -> None:
    dht = FakeDHT()
    owner, server, intruder = (FakeCtx(n, dht, tmp_path) for n in ("owner", "server", "intr"))
    link(owner, server, intruder)
    s_owner, s_server = store(owner), store(server)
    named = owner.identity.node_id_hex
    data_key = nacl.utils.random(32)
    await intruder.membership.publish(seal_record(
        intruder.identity, "token", 2**63, data_key,
        encrypt_value(intruder.identity.public_key, "token", b"forged-value", data_key),
        ["fn"], {server.identity.node_id: server.identity.public_key}, True))
    # the owner's record is absent: unnamed, the only key's record is taken (the limit) by
    # a function deployed from a third node (b"\x01" * 20)
    assert await s_server.get("token", "w", "fn", b"\x01" * 20) == "forged-value"
    for form in (named, named[:16], owner.identity.public_key.hex()):
        with pytest.raises(PermissionDeniedError,
                           match="^no secret 'token' is available to this function$"):
            await s_server.get("token", "w", "fn", b"\x01" * 20, form)
    await s_owner.set("token", b"owner-value", ["fn"], [])
    for form in (named, named[:16].upper(), owner.identity.public_key.hex()):
        assert await s_server.get("token", "w", "fn", b"\x01" * 20, form) == "owner-value"
    # naming the intruder reads the intruder's: the function chose whom to trust
    assert await s_server.get("token", "w", "fn", None,
                              intruder.identity.node_id_hex) == "forged-value"
    with pytest.raises(PermissionDeniedError, match="^no secret"):    # the allow-list stays
        await s_server.get("token", "w", "other", None, named)
    with pytest.raises(InvalidArgumentError, match="owner must be a node id"):
        await s_server.get("token", "w", "fn", None, named[:15])
    pinned = SecretStore(server, cache_s=0.0,  # type: ignore[arg-type]
                         trusted_owners=[intruder.identity.node_id_hex[:12]])
    with pytest.raises(PermissionDeniedError, match="^no secret"):    # --secret-owner holds
        await pinned.get("token", "w", "fn", None, named)


# ---------------------------------------------------------------- {{secret:NAME@OWNER}}
CALL = '''
def call(url, ref):
    try:
        resp = worker.call_external_api(url, headers={"Authorization": "Bearer " + ref})
        return resp["status"]
    except (PermissionError, ValueError) as exc:
        return [type(exc).__name__, str(exc)]
'''


async def test_a_header_placeholder_names_its_owner(tmp_path: Path, pool: SandboxPool,
                                                    http_server: HttpServer) -> None:
    dht = FakeDHT()
    owner = FakeCtx("owner", dht, tmp_path)
    intruder = FakeCtx("intr", dht, tmp_path)
    node = FakeCtx("node", dht, tmp_path, {
        "proxy_allow_networks": ["127.0.0.1/32"], "proxy_http_allow": ["fn=127.0.0.1"],
        "proxy_secret_cache": 0.0})
    link(owner, node, intruder)
    service = ProxyService(node)  # type: ignore[arg-type]
    try:
        data_key = nacl.utils.random(32)
        await intruder.membership.publish(seal_record(
            intruder.identity, "token", 2**63, data_key,
            encrypt_value(intruder.identity.public_key, "token", b"forged-value", data_key),
            ["fn"], {node.identity.node_id: node.identity.public_key}, True))
        host = service.host_for("w", "fn", b"\x01" * 20)     # deployed from a third node
        url = f"http://127.0.0.1:{http_server.port}/echo"
        named = "{{secret:token@" + owner.identity.node_id_hex[:16] + "}}"
        hits = len(http_server.hits)
        assert await pool.run(CALL, "call", [url, "{{secret:token}}"], {}, host=host) == 200
        assert http_server.hits[hits][2]["Authorization"] == "Bearer forged-value"  # limit
        got = await pool.run(CALL, "call", [url, named], {}, host=host)
        assert got == ["PermissionError", "no secret 'token' is available to this function"]
        got = await pool.run(CALL, "call", [url, "{{secret:token@abc}}"], {}, host=host)
        assert got[0] == "ValueError" and "owner must be a node id" in got[1], got
        assert len(http_server.hits) == hits + 1      # refused reads sent nothing
        await store(owner).set("token", b"owner-value", ["fn"], [])
        assert await pool.run(CALL, "call", [url, named], {}, host=host) == 200
        assert http_server.hits[-1][2]["Authorization"] == "Bearer owner-value"
    finally:
        await service.stop()


# ---------------------------------------------------------------- TaskWorker (seed API)
async def test_taskworker_get_secret_names_its_owner(tmp_path: Path) -> None:
    worker = TaskWorker("ownerw", data_dir=tmp_path)
    await worker.start_server(port=0, wait=False)
    try:
        ctx = worker.node.ctx
        proxy = ctx.registry["proxy"]
        me = ctx.identity.node_id_hex
        intruder = FakeCtx("intruder", FakeDHT(), tmp_path)
        data_key = nacl.utils.random(32)
        record = seal_record(
            intruder.identity, "tok", 2**63, data_key,
            encrypt_value(intruder.identity.public_key, "tok", b"forged-value", data_key),
            ["ownerw"], {ctx.identity.node_id: ctx.identity.public_key}, True)
        await ctx.membership.publish(record)     # into this node's DHT (real, one node)
        proxy.secrets.invalidate("tok")
        # nothing of this node's yet: unnamed takes the only key's, named refuses
        assert await worker.get_secret("tok") == "forged-value"
        with pytest.raises(PermissionError, match="no secret 'tok'"):
            await worker.get_secret("tok", owner=me)
        for bad in ("", me[:15], me + "0", "not-hex-not-hex!"):
            with pytest.raises(ValueError, match="owner must be a node id"):
                await worker.get_secret("tok", owner=bad)
        await proxy.secrets.set("tok", b"own-value", ["ownerw"], [])
        assert await worker.get_secret("tok") == "own-value"                # unchanged
        assert await worker.get_secret("tok", owner=me[:16]) == "own-value"
        assert await worker.get_secret("tok", owner=intruder.identity.node_id_hex) == \
            "forged-value"
    finally:
        await worker.stop_server()
