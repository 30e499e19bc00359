import os
import stat
from pathlib import Path

import pytest

from mesh.errors import IdentityError
from mesh.identity import Identity, load_or_create, node_id_for, verify_signature


def test_key_created_0600_and_id_stable(tmp_path: Path) -> None:
    first = load_or_create(tmp_path)
    mode = stat.S_IMODE((tmp_path / "node.key").stat().st_mode)
    assert mode == 0o600
    again = load_or_create(tmp_path)
    assert again.node_id == first.node_id
    assert len(first.node_id) == 20
    assert first.node_id == node_id_for(first.public_key)


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path)
    os.chmod(tmp_path / "node.key", 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create(tmp_path)


@pytest.mark.parametrize("content", [b"", b"garbage", b"tw-mesh-ed25519-v1\nzz\n",
                                     b"tw-mesh-ed25519-v1\n" + b"ab" * 31 + b"\n"])
def test_corrupt_key_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="corrupt"):
        load_or_create(tmp_path)


def test_signatures() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"hello")
    assert verify_signature(ident.public_key, b"hello", sig)
    assert not verify_signature(ident.public_key, b"hellO", sig)
    assert not verify_signature(Identity.generate().public_key, b"hello", sig)
    assert not verify_signature(b"short", b"hello", sig)
