"""Provider records: who offers a function, signed, in the DHT under the function's name.

Each owner publishes one record per function at ``record_key("provider", owner, name)``; the
key depends only on the name, so one DHT lookup returns every provider. A record says either
"this node runs it" (a TaskWorker registered it here; ``code_cid`` empty) or "deployed code
CID X, deploy sequence S" (any compute peer can fetch the code and serve it). Records are
republished with the current load every ``refresh`` seconds and expire after ``ttl``; a
provider that stops offering a function publishes a ``withdrawn`` record that supersedes it.
"""

from __future__ import annotations

import ast
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from mesh.errors import InvalidArgumentError, RecordError
from mesh.identity import Identity, node_id_for
from mesh.records import record_key, sign_record
from proto import compute_pb2, mesh_pb2

log = logging.getLogger(__name__)

KIND = "provider"
MAX_NAME = 200


def check_function_name(name: str) -> None:
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidArgumentError(f"function name {name[:40]!r} must be 1..{MAX_NAME} "
                                   "printable characters")


def function_key(name: str) -> bytes:
    """DHT key shared by every provider record of ``name``."""
    return record_key(KIND, b"", name.encode())


def sign_provider(identity: Identity, provider: compute_pb2.ProviderRecord, *,
                  ttl_s: float) -> mesh_pb2.SignedRecord:
    return sign_record(identity, KIND, provider.SerializeToString(),
                       name=provider.function.encode(), ttl_s=ttl_s)


@dataclass(frozen=True)
class Provider:
    """A verified provider record, decoded."""

    record: compute_pb2.ProviderRecord
    owner_id: bytes      # node id of the record's signer
    seq: int             # record sequence (publication time)

    @property
    def deployed(self) -> bool:
        return bool(self.record.code_cid)

    @property
    def node_id(self) -> bytes:
        return self.record.node_id


def decode_providers(function: str, records: Iterable[mesh_pb2.SignedRecord]) -> list[Provider]:
    """Provider records for ``function`` (already verified by the DHT layer); a local
    provider record must name its signer as the node that serves it."""
    out: list[Provider] = []
    for signed in records:
        if signed.kind != KIND or signed.name != function.encode():
            continue
        provider = compute_pb2.ProviderRecord()
        try:
            provider.ParseFromString(signed.payload)
        except DecodeError:
            continue
        owner = node_id_for(signed.owner_key)
        if provider.function != function or provider.withdrawn:
            continue
        if not provider.code_cid and provider.node_id != owner:
            log.debug("ignoring provider record of %s naming another node", owner.hex()[:8])
            continue
        out.append(Provider(provider, owner, signed.seq))
    return out


def current_generation(providers: list[Provider]) -> list[Provider]:
    """Which records serve new calls: the newest deploy if it is newer than every local
    registration, else the local providers (all of them: they share the load)."""
    deployed = [p for p in providers if p.deployed]
    local = [p for p in providers if not p.deployed]
    newest = max(deployed, key=lambda p: (p.record.deploy_seq, p.seq), default=None)
    if newest is not None and newest.record.deploy_seq > max(
            (p.record.deploy_seq for p in local), default=0):
        return [p for p in deployed if p.record.code_cid == newest.record.code_cid]
    return local


# --- what a deployed module offers --------------------------------------------------------

def _string_arg(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def module_functions(source: str) -> dict[str, str]:
    """Functions a module offers, name -> entry, found without running it.

    ``@x.function("name")`` / ``@x.function()`` / ``@x.function`` decorators and top-level
    ``x.register_function("name", f)`` calls; when there are none, every public top-level
    ``def``. The sandbox resolves an entry among registered names first, then globals.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise InvalidArgumentError(f"module does not parse: {exc.msg} (line {exc.lineno})"
                                   ) from None
    found: dict[str, str] = {}
    defs: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not node.name.startswith("_"):
                defs.append(node.name)
            for deco in node.decorator_list:
                call = deco if isinstance(deco, ast.Call) else None
                target = call.func if call else deco
                if isinstance(target, ast.Attribute) and target.attr == "function":
                    name = node.name
                    if call is not None and call.args:
                        name = _string_arg(call.args[0]) or node.name
                    for kw in call.keywords if call else []:
                        if kw.arg == "name" and _string_arg(kw.value):
                            name = _string_arg(kw.value) or name
                    found[name] = name
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value
            if (isinstance(call.func, ast.Attribute) and call.func.attr == "register_function"
                    and len(call.args) >= 2):
                reg = _string_arg(call.args[0])
                if reg:
                    found[reg] = reg
    if not found:
        found = {name: name for name in defs}
    return found


def now_ms() -> int:
    return int(time.time() * 1000)


def verify_name(name: str) -> str:
    check_function_name(name)
    return name


__all__ = ["KIND", "Provider", "RecordError", "check_function_name", "current_generation",
           "decode_providers", "function_key", "module_functions", "sign_provider"]
