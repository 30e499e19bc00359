"""Host side of the zygote process: launch with an empty environment, write its id maps,
complete the handshake, shut it down. Used by SandboxPool."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import errors, framing

_ROOT = str(Path(__file__).resolve().parents[2])
# _hashlib blocked before anything imports hashlib: CPython's built-in hashes instead of
# OpenSSL's, so libcrypto (7 MB of mappings, ~1 MB written at init) is never in the zygote.
_BOOT = ("import sys; sys.modules['_hashlib'] = None; sys.path.insert(0, sys.argv[1]); "
         "from compute.sandbox.zygote import main; main(int(sys.argv[2]))")

# Bind every symbol of libpython and libc at startup: with lazy binding each worker resolved
# the libc functions the zygote had never called itself (dup2, prctl, ...) in its own
# copy of the GOT: ~15 copy-on-write faults per worker. The zygote clears its environment
# before forking the init, so workers never see this.
_ZYGOTE_ENV = {"LD_BIND_NOW": "1"}


class Zygote:
    """One zygote process and its SOCK_SEQPACKET control socket."""

    def __init__(self, proc: asyncio.subprocess.Process, ctrl: socket.socket,
                 layers: dict[str, Any]) -> None:
        self.proc, self.ctrl, self.layers = proc, ctrl, layers

    @classmethod
    async def launch(cls, bpf: bytes, inprocess: bool, namespaces: bool = True) -> Zygote:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-c", _BOOT, _ROOT, str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), env=_ZYGOTE_ENV, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if os.environ.get("TW_SANDBOX_DEBUG") else subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        zygote = cls(proc, ours, {})
        try:
            async with asyncio.timeout(10):
                await loop.sock_sendall(ours, framing.dumps({
                    "op": "config", "bpf": base64.b64encode(bpf).decode(),
                    "inprocess": inprocess, "namespaces": namespaces}))
                msg = framing.loads(await loop.sock_recv(ours, 1 << 16))
                if isinstance(msg, dict) and msg.get("op") == "map":
                    drop = _write_id_maps(proc.pid)
                    await loop.sock_sendall(ours, framing.dumps({"op": "mapped",
                                                                 "drop_uid": drop}))
                    msg = framing.loads(await loop.sock_recv(ours, 1 << 16))
            if not isinstance(msg, dict) or msg.get("op") != "ready":
                raise framing.FrameError("no ready message")
        except (TimeoutError, OSError, framing.FrameError) as exc:
            await zygote.shutdown()
            raise errors.SandboxUnavailable(f"sandbox zygote failed to start: {exc}") from None
        zygote.layers = dict(msg["layers"], rlimits=True, import_allowlist=inprocess,
                             audit_gate=inprocess)
        return zygote

    async def shutdown(self) -> None:
        """Quit (pid 1 of the sandbox namespace exits: every worker dies with it), then reap."""
        with contextlib.suppress(OSError):
            self.ctrl.send(framing.dumps({"op": "quit"}))
        self.ctrl.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


def _write_id_maps(pid: int) -> bool:
    """Map root and nobody (root host) or just our own id (unprivileged host). Returns
    whether workers can drop to uid nobody."""
    proc = Path(f"/proc/{pid}")
    try:
        if os.geteuid() == 0:
            (proc / "uid_map").write_text("0 0 1\n65534 65534 1\n")
            (proc / "gid_map").write_text("0 0 1\n65534 65534 1\n")
            return True
        (proc / "setgroups").write_text("deny")
        (proc / "uid_map").write_text(f"0 {os.geteuid()} 1\n")
        (proc / "gid_map").write_text(f"0 {os.getegid()} 1\n")
    except OSError:
        pass
    return False
