"""Run a benchmark inside a private network namespace that holds only ``lo``.

Some contenders (Tahoe-LAFS nodes open a log port on 0.0.0.0) listen on every interface. A
benchmark that starts them calls :func:`reexec_in_private_netns` first thing in ``main()``::

    from benchmarks.netns import reexec_in_private_netns

    def main() -> None:
        reexec_in_private_netns()   # the host process execs `unshare`; the copy inside returns
        ...

Outside a private namespace the current command line (``sys.orig_argv``, so ``python -m pkg.mod
ARGS`` and ``python -c CODE`` work) is re-executed as::

    unshare -n -p -f --kill-child --mount-proc -- sh -c 'ip link set lo up && exec "$@"' sh CMD

That call never returns in the original process (``os.execvp``; it becomes the waiting
``unshare``, which exits with the benchmark's status), and the re-executed copy finds itself
inside the namespace, so the call returns there and the benchmark goes on. Everything the
benchmark starts (our own nodes, Tahoe-LAFS, the client talking to them) then lives in the same
network namespace: traffic can only go over loopback and nothing is reachable from outside.

The new PID namespace (``pid_namespace=True``, the default) makes cleanup certain: the benchmark
is PID 1 there, so when it dies *in any way* (even SIGKILL, or ``unshare`` being killed:
``--kill-child``) the kernel kills every process it started, and no orphaned Tahoe grid or node
keeps running in an unreachable namespace. Consequences: ``os.getpid() == 1``; ``/proc`` is
remounted so PIDs in it match the namespace; a PID 1 ignores signals it has no handler for, so
SIGTERM and SIGHUP get a handler raising ``SystemExit`` (``with`` blocks unwind, nodes are
stopped) unless the program installed its own; SIGINT stays ``KeyboardInterrupt``.

Needs root (or CAP_SYS_ADMIN) and util-linux ``unshare`` plus iproute2 ``ip``. Anything that
needs the network (pip install) must happen before the call. The environment variable
``TW_MESH_NETNS=1`` marks the re-executed copy, so a failing ``unshare`` cannot loop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

MARKER = "TW_MESH_NETNS"


def interfaces() -> list[str]:
    """Network interfaces of *this process's* network namespace (from /proc/self/net/dev)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def in_private_netns() -> bool:
    """True when the only network interface visible to this process is ``lo``."""
    return interfaces() == ["lo"]


def ensure_lo_up() -> None:
    """Bring ``lo`` up in the current namespace (idempotent; a new namespace starts it down)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _handle_termination() -> None:
    """Give SIGTERM/SIGHUP a handler where there is none (a PID 1 would ignore them)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _exit_on_signal)


def reexec_in_private_netns(argv: list[str] | None = None, *, pid_namespace: bool = True) -> None:
    """Make sure the rest of this program runs in a private network namespace (only ``lo``).

    Inside one already: bring ``lo`` up, make SIGTERM/SIGHUP raise ``SystemExit`` if they have
    no handler, and return. Otherwise exec ``unshare`` (network namespace, plus PID and mount
    namespaces when ``pid_namespace``) on the same command (``argv``, default
    ``sys.orig_argv``) -- never returns in that case. Raises ``RuntimeError`` if the
    re-executed copy still is not isolated, or ``unshare``/``ip`` is missing. Call it from the
    main thread, before starting threads or nodes.
    """
    if in_private_netns():
        ensure_lo_up()
        _handle_termination()
        return
    if os.environ.get(MARKER) == "1":
        raise RuntimeError(
            f"re-executed under unshare -n but interfaces are {interfaces()}; refusing to run"
        )
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool!r} not found; cannot create a private network namespace")
    cmd = list(argv) if argv is not None else [sys.executable, *sys.orig_argv[1:]]
    flags = ["-n", "-p", "-f", "--kill-child", "--mount-proc"] if pid_namespace else ["-n"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[MARKER] = "1"
    os.execvp(
        "unshare",
        ["unshare", *flags, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd],
    )
