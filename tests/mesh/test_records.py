import pytest

from mesh.errors import RecordError
from mesh.identity import Identity
from mesh.records import decode_record, record_key, sign_record, verify_record
from proto import mesh_pb2


def _peer_record(ident: Identity) -> mesh_pb2.SignedRecord:
    payload = mesh_pb2.PeerRecord(node_id=ident.node_id, address="127.0.0.1:1",
                                  identity_key=ident.public_key).SerializeToString()
    return sign_record(ident, "peer", payload)


def test_roundtrip_and_key() -> None:
    ident = Identity.generate()
    rec = decode_record(_peer_record(ident).SerializeToString())
    verify_record(rec)
    assert record_key("peer", ident.public_key) == ident.node_id
    assert record_key("provider", ident.public_key, b"f") == record_key(
        "provider", Identity.generate().public_key, b"f")


def test_forged_and_tampered_records_refused() -> None:
    ident, other = Identity.generate(), Identity.generate()
    rec = _peer_record(ident)
    rec.payload = rec.payload + b"\x00"
    with pytest.raises(RecordError):
        verify_record(rec)
    forged = _peer_record(ident)
    forged.owner_key = other.public_key
    with pytest.raises(RecordError):
        verify_record(forged)


def test_peer_record_must_match_owner() -> None:
    ident, other = Identity.generate(), Identity.generate()
    payload = mesh_pb2.PeerRecord(node_id=other.node_id, address="x:1",
                                  identity_key=ident.public_key).SerializeToString()
    with pytest.raises(RecordError, match="does not match"):
        verify_record(sign_record(ident, "peer", payload))


def test_expired_refused() -> None:
    rec = sign_record(Identity.generate(), "provider", b"", name=b"f", ttl_s=-1)
    with pytest.raises(RecordError, match="expired"):
        verify_record(rec)


def test_garbage_refused() -> None:
    with pytest.raises(RecordError):
        decode_record(b"\xff\xff\xff")
    with pytest.raises(RecordError):
        decode_record(b"x" * 10000)
