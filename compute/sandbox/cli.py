"""``tw-mesh sandbox ...``: run one function from a file in exactly the sandbox that remote
calls use. ``run_command(argv)`` is the entry point (argv without the ``sandbox`` word)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from . import errors
from .limits import Limits
from .pool import SandboxPool

EXIT_USER, EXIT_USAGE, EXIT_POLICY, EXIT_LIMIT, EXIT_ARGS, EXIT_OTHER = 1, 2, 3, 4, 5, 6

_EPILOG = """\
examples:
  tw-mesh sandbox run fn.py --entry add --args '[1, 2]'
  tw-mesh sandbox run fn.py --entry greet --args '{"name": "Ada"}'   (an object = keywords)
  tw-mesh sandbox run fn.py --entry slow --wall-time 0.5
  tw-mesh sandbox layers                                             (what this kernel enforces)

The function runs in a single-use worker: no network, no filesystem, no environment, no
new processes, uid nobody, and only these imports: math, json, re, datetime, collections,
itertools, functools, random, string, hashlib, base64, decimal, fractions, statistics,
typing, dataclasses, time, ... (see docs/sandbox.md). `worker.get_secret`,
`worker.call_external_api` and DNS are refused here (no node behind this command).

exit status: 0 ok (JSON result on stdout), 1 the function raised, 2 usage, 3 refused by
policy, 4 time/memory/output limit, 5 bad arguments or unknown entry, 6 sandbox failure.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tw-mesh sandbox", description="Run user functions in the compute sandbox.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run FUNC from FILE and print its JSON result",
                         epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("file", type=Path, help="Python module with the function")
    run.add_argument("--entry", required=True,
                     help="function name (a @worker.function name or a module-level def)")
    run.add_argument("--args", default="[]",
                     help="JSON array of positional arguments, or JSON object of keywords")
    run.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    run.add_argument("--wall-time", type=float, default=5.0, help="seconds (default 5)")
    run.add_argument("--cpu-time", type=float, default=5.0, help="CPU seconds (default 5)")
    run.add_argument("--memory-mb", type=int, default=256, help="MiB (default 256)")
    run.add_argument("--output-bytes", type=int, default=2**20, help="result cap (1 MiB)")
    run.add_argument("--traceback", action="store_true",
                     help="on a user exception, also print the user-code traceback")
    sub.add_parser("layers", help="print the isolation layers active on this machine")
    return parser


def _fail(code: int, message: str) -> int:
    print(f"error: {' '.join(message.split())[:500]}", file=sys.stderr)
    return code


def _exit_code(exc: errors.SandboxError) -> int:
    if isinstance(exc, errors.UserCodeError):
        return EXIT_USER
    if isinstance(exc, errors.PolicyViolation):
        return EXIT_POLICY
    if isinstance(exc, errors.LimitExceeded):
        return EXIT_LIMIT
    if isinstance(exc, errors.BadArguments | errors.EntryNotFound):
        return EXIT_ARGS
    return EXIT_OTHER


async def _run(ns: argparse.Namespace, source: str, args: Any, kwargs: Any) -> Any:
    limits = Limits(wall_time_s=ns.wall_time, cpu_time_s=ns.cpu_time,
                    memory_bytes=ns.memory_mb * 2**20, output_bytes=ns.output_bytes)
    pool = SandboxPool(size=1, limits=limits)
    await pool.start()
    try:
        return await pool.run(source, ns.entry, args, kwargs, filename=ns.file.name)
    finally:
        await pool.stop()


async def _layers() -> dict[str, Any]:
    pool = SandboxPool(size=1)
    await pool.start()
    try:
        return pool.layers
    finally:
        await pool.stop()


def run_command(argv: list[str]) -> int:
    try:
        ns = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error (argparse already printed)
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if ns.command == "layers":
            print(json.dumps(asyncio.run(_layers()), indent=2))
            return 0
        try:
            source = ns.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(EXIT_USAGE, f"cannot read {ns.file}: {exc}")
        try:
            args: Any = json.loads(ns.args)
            kwargs: Any = json.loads(ns.kwargs)
        except ValueError as exc:
            return _fail(EXIT_ARGS, f"--args/--kwargs must be JSON: {exc}")
        if isinstance(args, dict) and isinstance(kwargs, dict):
            args, kwargs = [], {**args, **kwargs}
        try:
            result = asyncio.run(_run(ns, source, args, kwargs))
        except ValueError as exc:  # invalid limits
            return _fail(EXIT_USAGE, str(exc))
        print(json.dumps(result))
        return 0
    except errors.UserCodeError as exc:
        if ns.command == "run" and ns.traceback:
            print(exc.traceback, file=sys.stderr, end="")
        return _fail(EXIT_USER, f"{ns.entry} raised {exc.type}: {exc.user_message}")
    except errors.SandboxError as exc:
        return _fail(_exit_code(exc), f"{type(exc).__name__}: {exc.message}")
    except KeyboardInterrupt:
        return _fail(EXIT_OTHER, "interrupted")
    except Exception as exc:  # never a traceback on the console
        return _fail(EXIT_OTHER, f"sandbox failure: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(run_command(sys.argv[1:]))
