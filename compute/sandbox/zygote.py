"""The zygote: a minimal process, started with ``python -I -S`` by the pool, that forks the
single-use workers. It never runs user code and holds nothing of the node's (no secrets,
sockets or threads). Stdlib only.

Lifecycle: receive config -> new user/mount/net/ipc/uts/pid namespaces (host writes the id
maps) -> preload allowed modules -> chroot into an empty read-only tmpfs -> fork "init"
(pid 1 of the namespace) which serves ``spawn``/``quit`` and reports worker exits.
"""

from __future__ import annotations

import _random
import _socket
import _thread
import array
import base64
import fcntl
import gc
import importlib
import os
import random
import select
import signal
import socket
import sys
from typing import Any, NoReturn

from . import child, codecache, framing, guard, kernel

_NS_ALL = (kernel.CLONE_NEWNS | kernel.CLONE_NEWNET | kernel.CLONE_NEWIPC
           | kernel.CLONE_NEWUTS | kernel.CLONE_NEWPID)


def _send(ctrl: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = framing.dumps(msg)
    if fds:
        ctrl.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        ctrl.send(data)


def _recv(ctrl: socket.socket) -> dict[str, Any]:
    data = ctrl.recv(1 << 20)
    if not data:
        os._exit(0)  # host went away
    msg = framing.loads(data)
    assert isinstance(msg, dict)
    return msg


def _namespaces(ctrl: socket.socket, layers: dict[str, Any]) -> bool:
    """Enter new namespaces; returns whether workers can drop to uid nobody."""
    for flags, label in ((kernel.CLONE_NEWUSER | _NS_ALL, "user"), (_NS_ALL, "")):
        try:
            kernel.unshare(flags)
        except OSError as exc:
            layers.setdefault("namespace_errors", []).append(str(exc))
            continue
        layers["namespaces"] = [n for n in ("user", "mount", "net", "ipc", "uts", "pid")
                                if n != "user" or label]
        if label:
            _send(ctrl, {"op": "map", "pid": os.getpid()})
            reply = _recv(ctrl)
            return bool(reply.get("drop_uid"))
        return os.geteuid() == 0
    layers["namespaces"] = []
    return os.geteuid() == 0


def _empty_root(layers: dict[str, Any]) -> None:
    """Replace the filesystem with an empty read-only tmpfs (inside our mount namespace)."""
    try:
        kernel.mount("none", "/", None, kernel.MS_REC | kernel.MS_PRIVATE, None)
        opts = "mode=0555,size=4k,nr_inodes=4"
        kernel.mount("tmpfs", "/tmp", "tmpfs", 0, opts)
        ro = kernel.MS_REMOUNT | kernel.MS_RDONLY | kernel.MS_NOSUID | kernel.MS_NODEV
        kernel.mount("tmpfs", "/tmp", None, ro | kernel.MS_NOEXEC, opts)
        os.chroot("/tmp")
        os.chdir("/")
        layers["chroot"] = True
    except OSError as exc:
        layers["chroot"] = False
        layers["chroot_error"] = str(exc)


def _base_vm_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


class Init:
    """Pid 1 of the sandbox namespace: forks workers, reaps them, reports exits."""

    def __init__(self, ctrl: socket.socket, cfg: child.WorkerConfig) -> None:
        self.ctrl, self.cfg = ctrl, cfg
        self.code = codecache.CodeCache()
        self.prep = child.Prepared(cfg, self.code)
        child.fixed_limits()
        self.next_wid = 0
        self.pids: dict[int, int] = {}  # worker pid -> wid
        self.watch: dict[int, int] = {}  # worker pid -> our pidfd of it (in the epoll set)
        self.poller = select.epoll()

    def _fork_one(self) -> tuple[int, int]:
        """Fork one worker; returns (host end of its socket, pidfd)."""
        host_end, worker_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        hfd, wfd = host_end.detach(), worker_end.detach()
        self.next_wid += 1
        pid = kernel.fork_bare()
        if pid == 0:
            self._in_worker(wfd)
        os.close(wfd)
        self.pids[pid] = self.next_wid
        pidfd = os.pidfd_open(pid)
        watch = os.dup(pidfd)  # readable once the worker has exited
        self.watch[pid] = watch
        self.poller.register(watch, select.EPOLLIN)
        return hfd, pidfd

    def _in_worker(self, wfd: int) -> NoReturn:
        """First steps of a fresh worker: only C-level calls, since every page the Python
        code here touches is one more copy-on-write fault (``signal.signal`` alone, with its
        enum conversions, costs ~60). The init has no signal handlers or wakeup fd for a
        worker to reset: it learns of exits from pidfds."""
        _random.Random.seed(random._inst, None)  # what random's at-fork hook would do  # type: ignore[attr-defined]
        os.dup2(wfd, child.SOCK_FD)
        if self.cfg.landlock_fd >= 0:  # >= 200, never one of the two targets
            os.dup2(self.cfg.landlock_fd, child.LANDLOCK_FD)
        os.closerange(child.LANDLOCK_FD + 1, 1 << 16)
        child.worker_main(child.SOCK_FD, self.cfg, self.prep)

    def spawn(self, n: int) -> None:
        """Fork n workers and hand them to the host, up to 8 per message."""
        while n > 0:
            batch = min(n, 8)
            n -= batch
            wids: list[int] = []
            fds: list[int] = []
            try:
                for _ in range(batch):
                    fds.extend(self._fork_one())
                    wids.append(self.next_wid)
                _send(self.ctrl, {"op": "workers", "wids": wids}, fds)
            finally:
                for fd in fds:
                    os.close(fd)

    def reap(self) -> None:
        exits: list[list[int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            wid = self.pids.pop(pid, 0)
            watch = self.watch.pop(pid, -1)
            if watch >= 0:
                os.close(watch)  # also leaves the epoll set
            if wid:
                exits.append([wid, status])
        if exits:
            _send(self.ctrl, {"op": "exits", "items": exits})

    def serve(self) -> NoReturn:
        # kernel.fork_bare() is only valid while this process has a single thread.
        if _thread._count():  # type: ignore[attr-defined]
            raise RuntimeError("the zygote must not start threads")
        # epoll and _socket, not selectors and socket.socket: each object this loop touches
        # between two forks costs a copy-on-write fault (~30 per worker less this way).
        # Exits arrive as readable pidfds (one per worker, see _fork_one), not as SIGCHLD:
        # no Python signal handler runs here, and a worker has no handler or wakeup fd of
        # ours to undo (~20 faults per worker less).
        poller = self.poller
        ctrl_fd = self.ctrl.fileno()
        poller.register(ctrl_fd, select.EPOLLIN)
        gc.freeze()  # keep the collector from dirtying shared pages in every fork
        while True:
            events = poller.poll()
            if events and (len(events) > 1 or events[0][0] != ctrl_fd):
                self.reap()
            for fd, _ in events:
                if fd != ctrl_fd:
                    continue
                msg = _recv(self.ctrl)
                if msg.get("op") == "spawn":
                    self.spawn(int(msg.get("n", 1)))
                elif msg.get("op") == "compile":
                    if self.code.add(str(msg.get("source")), str(msg.get("filename"))):
                        gc.freeze()
                elif msg.get("op") == "quit":
                    os._exit(0)


def main(ctrl_fd: int) -> NoReturn:
    ctrl = socket.socket(fileno=ctrl_fd)
    config = _recv(ctrl)
    layers: dict[str, Any] = {"seccomp": bool(config.get("bpf"))}
    for name in guard.PRELOAD:
        importlib.import_module(name)
    if config.get("namespaces", True):
        drop_uid = _namespaces(ctrl, layers)
    else:
        layers["namespaces"], drop_uid = [], os.geteuid() == 0
    layers["uid"] = "nobody (65534)" if drop_uid else f"unchanged ({os.geteuid()})"
    base_vm = _base_vm_bytes()
    if "mount" in layers["namespaces"]:  # never touch the host's own mount table
        _empty_root(layers)
    else:
        layers["chroot"] = False
    abi = kernel.landlock_abi()
    layers["landlock_abi"] = abi
    ruleset = fcntl.fcntl(kernel.landlock_ruleset(abi), fcntl.F_DUPFD, 200) if abi else -1
    bpf = base64.b64decode(config.get("bpf", ""))
    cfg = child.WorkerConfig(seccomp=kernel.SeccompProgram(bpf) if bpf else None,
                             drop_uid=drop_uid, landlock_fd=ruleset,
                             stdlib_dir=os.path.dirname(os.__file__),
                             base_vm_bytes=base_vm, inprocess=config.get("inprocess", True),
                             pid_namespace="pid" in layers["namespaces"])
    # Inherited by every worker: no privilege gain through exec (needed by Landlock and
    # seccomp), and no ptrace or /proc/PID/mem access by other processes of the same uid.
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
    if ruleset >= 0:  # the zygote compiles user source: take its filesystem away too
        kernel.landlock_restrict(os.dup(ruleset))
        layers["zygote_landlock"] = True
    if "pid" in layers.get("namespaces", []):
        pid = os.fork()  # the first child is pid 1 of the new pid namespace
        if pid:
            ctrl.close()
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    if drop_uid:  # the forking init, and so every worker, is nobody from here on
        child.drop_to_nobody()
    if "pid" in layers["namespaces"]:  # after the uid change, which would clear it
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
    os.environ.clear()  # empty already, but for the LC_CTYPE that locale coercion adds
    init = Init(ctrl, cfg)
    _send(ctrl, {"op": "ready", "layers": layers, "pid": os.getpid()})
    sys.stdout.flush()
    init.serve()
