"""compute.deploy.CodeStore: content-addressed code, verified on the way in, bounded on disk."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from compute import deploy
from compute.deploy import CodeStore
from mesh.errors import InvalidArgumentError
from storage.cid import cid_for


def test_code_is_verified_against_its_cid(tmp_path: Path) -> None:
    store = CodeStore(SimpleNamespace(data_dir=tmp_path))  # type: ignore[arg-type]
    code = b"def f():\n    return 1\n"
    cid = cid_for(code)
    store.put(cid, code)
    assert store.get_local(cid) == code
    with pytest.raises(InvalidArgumentError, match="CID"):
        store.put(cid, code + b"# tampered\n")
    with pytest.raises(InvalidArgumentError, match="UTF-8"):
        store.put(cid_for(b"\xff\xfe"), b"\xff\xfe")
    with pytest.raises(InvalidArgumentError):
        store.get_local("../../etc/passwd")
    # a corrupted file on disk is dropped, not served
    other = CodeStore(SimpleNamespace(data_dir=tmp_path))  # type: ignore[arg-type]
    (tmp_path / "compute" / "code" / cid).write_bytes(b"evil")
    assert other.get_local(cid) is None


def test_disk_use_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy, "MAX_STORED", 8)
    store = CodeStore(SimpleNamespace(data_dir=tmp_path))  # type: ignore[arg-type]
    for i in range(40):
        code = f"X = {i}\n".encode()
        store.put(cid_for(code), code)
    assert len(list((tmp_path / "compute" / "code").iterdir())) <= 8
