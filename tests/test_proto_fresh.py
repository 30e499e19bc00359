"""The generated protobuf code must match proto/*.proto (regenerate with `make proto`)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--check"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_seed_services_exist() -> None:
    from proto import taskworker_pb2

    services = taskworker_pb2.DESCRIPTOR.services_by_name
    assert set(services["FileService"].methods_by_name) >= {"Push", "Get", "Revise", "Synchronous"}
    assert "CallFunction" in services["RPCService"].methods_by_name
    assert "ResolveDomain" in services["DNSService"].methods_by_name
