"""compute.registry: signed provider records, generations, and what a module offers."""

from __future__ import annotations

import pytest

from compute.registry import (
    current_generation,
    decode_providers,
    function_key,
    module_functions,
    sign_provider,
)
from mesh.errors import InvalidArgumentError
from mesh.identity import Identity
from mesh.records import record_key, verify_record
from proto import compute_pb2


def _local(ident: Identity, fn: str = "add", seq: int = 1, **kw: object
           ) -> compute_pb2.ProviderRecord:
    return compute_pb2.ProviderRecord(function=fn, worker_id="w", node_id=ident.node_id,
                                      address="127.0.0.1:1", deploy_seq=seq, **kw)  # type: ignore[arg-type]


def test_provider_records_are_signed_at_the_function_key() -> None:
    a, b = Identity.generate(), Identity.generate()
    ra, rb = (sign_provider(i, _local(i), ttl_s=60) for i in (a, b))
    for r in (ra, rb):
        verify_record(r)
        assert record_key(r.kind, r.owner_key, r.name) == function_key("add")
    providers = decode_providers("add", [ra, rb])
    assert {p.owner_id for p in providers} == {a.node_id, b.node_id}


def test_local_record_naming_another_node_and_withdrawn_records_are_ignored() -> None:
    a, b = Identity.generate(), Identity.generate()
    forged = sign_provider(a, _local(b), ttl_s=60)          # a claims b serves it
    gone = sign_provider(b, _local(b, withdrawn=True), ttl_s=60)
    other = sign_provider(a, _local(a, fn="sub"), ttl_s=60)
    assert decode_providers("add", [forged, gone, other]) == []


def test_newest_deploy_wins_over_older_ones_and_older_local_providers() -> None:
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    local = decode_providers("f", [sign_provider(a, _local(a, "f", seq=100), ttl_s=60)])
    old = decode_providers("f", [sign_provider(b, _local(b, "f", seq=200, code_cid="bOLD"),
                                               ttl_s=60)])
    new = decode_providers("f", [sign_provider(c, _local(c, "f", seq=300, code_cid="bNEW"),
                                               ttl_s=60)])
    assert [p.record.code_cid for p in current_generation(local + old + new)] == ["bNEW"]
    assert current_generation(local + old) == old
    newer_local = decode_providers("f", [sign_provider(a, _local(a, "f", seq=400), ttl_s=60)])
    assert current_generation(newer_local + old + new) == newer_local


def test_module_functions_finds_registrations_or_public_defs() -> None:
    seed = '''
from taskworker import TaskWorker
worker = TaskWorker("w")

@worker.function("hello")
def hello_world():
    return "hi"

@worker.function()
def plain():
    return 1

@worker.function
def bare():
    return 2

def helper():
    return 3

worker.register_function("helper_fn", helper)
'''
    assert module_functions(seed) == {"hello": "hello", "plain": "plain", "bare": "bare",
                                      "helper_fn": "helper_fn"}
    assert module_functions("def a():\n  pass\ndef _b():\n  pass\nasync def c():\n  pass\n") \
        == {"a": "a", "c": "c"}
    with pytest.raises(InvalidArgumentError, match="parse"):
        module_functions("def (")
