"""Run a benchmark inside a private network namespace that holds only ``lo``.

Some contenders (Tahoe-LAFS nodes open a log port on 0.0.0.0) listen on every interface. A
benchmark that starts them calls :func:`reexec_in_private_netns` first thing in ``main()``::

    from benchmarks.netns import reexec_in_private_netns

    def main() -> None:
        reexec_in_private_netns()   # the host process execs `unshare -n`; the copy inside returns
        ...

Outside a private namespace the current command line (``sys.orig_argv``, so ``python -m pkg.mod
ARGS`` works) is re-executed as ``unshare -n -- sh -c 'ip link set lo up && exec "$@"'``; that
call never returns in the original process (``os.execvp``), and the re-executed copy finds
itself inside the namespace, so the call returns there and the benchmark goes on. Everything the
benchmark starts (our own nodes, Tahoe-LAFS, the client talking to them) then lives in the same
namespace: traffic can only go over loopback and nothing is reachable from outside.

Needs root (or CAP_SYS_ADMIN) and util-linux ``unshare`` plus iproute2 ``ip``. Anything that
needs the network (pip install) must happen before the call. The environment variable
``TW_MESH_NETNS=1`` marks the re-executed copy, so a failing ``unshare`` cannot loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def reexec_in_private_netns(argv: list[str] | None = None) -> None:
    """Make sure the rest of this program runs in a private network namespace (only ``lo``).

    Inside one already: bring ``lo`` up and return. Otherwise exec ``unshare -n`` on the same
    command (``argv``, default ``sys.orig_argv``) -- never returns in that case. Raises
    ``RuntimeError`` if the re-executed copy still is not isolated, or ``unshare``/``ip`` is
    missing.
    """
    if in_private_netns():
        ensure_lo_up()
        return
    if os.environ.get(MARKER) == "1":
        raise RuntimeError(
            f"re-executed under unshare -n but interfaces are {interfaces()}; refusing to run"
        )
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool!r} not found; cannot create a private network namespace")
    cmd = list(argv) if argv is not None else [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[MARKER] = "1"
    os.execvp(
        "unshare",
        ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd],
    )
