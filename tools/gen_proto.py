"""Generate proto/*_pb2*.py from proto/*.proto; `--check` fails if the committed code is stale.

Run from the repository root (``make proto``). Output is written next to the sources so that
imports read ``from proto import taskworker_pb2``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"


def generate(out: Path) -> None:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(ROOT)) for p in PROTO.glob("*.proto"))
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_names(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*_pb2*.py*")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = out / "proto"
        if opts.check:
            names = generated_names(fresh) | generated_names(PROTO)
            stale = [n for n in sorted(names)
                     if not (PROTO / n).exists() or not (fresh / n).exists()
                     or not filecmp.cmp(PROTO / n, fresh / n, shallow=False)]
            if stale:
                print("stale generated code (run `make proto`): " + ", ".join(stale))
                return 1
            return 0
        for name in generated_names(PROTO):
            (PROTO / name).unlink()
        for path in fresh.glob("*_pb2*.py*"):
            shutil.copy(path, PROTO / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
