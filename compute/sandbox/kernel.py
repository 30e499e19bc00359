"""Raw Linux primitives via ctypes (stdlib only; runs in the zygote and the workers)."""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_REC, MS_PRIVATE = 32, 16384, 1 << 18

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 38
SECCOMP_MODE_FILTER = 2

_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_RESTRICT_SELF = 444, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1

_libc = ctypes.CDLL(None, use_errno=True)
# Bound once (in the zygote): a worker's first ctypes lookup would dirty many shared pages.
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int
_get_errno = ctypes.get_errno
_prctl_raw = _libc["prctl"]  # a second function object, without argtypes: see SeccompProgram
_prctl_raw.restype = ctypes.c_int
# libc fork() called with the GIL held (PyDLL), skipping CPython's at-fork bookkeeping: see
# fork_bare(). Bound once in the zygote.
_fork = ctypes.PyDLL(None, use_errno=True).fork
_fork.argtypes = []
_fork.restype = ctypes.c_int


def _check(rc: int, what: str) -> None:
    if rc < 0:
        err = _get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def fork_bare() -> int:
    """fork() without CPython's before/after-fork work (import lock, thread and GIL
    re-initialisation, at-fork hooks). Every page a new process writes costs a copy-on-write
    fault, and that work is ~65 of them, a quarter of what a worker touches. Only valid in a
    process that has never started a thread (nothing else can hold an interpreter lock; the
    GIL stays held by the forking thread throughout); the caller redoes what it needs (the
    zygote reseeds ``random``; nothing else in it registers at-fork hooks)."""
    pid = int(_fork())
    _check(pid, "fork")
    return pid


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    rc = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    _check(rc, f"mount {target}")


def prctl(option: int, arg: int, arg3: int = 0) -> None:
    if _prctl(option, arg, arg3, 0, 0) < 0:
        _check(-1, f"prctl({option})")


def landlock_abi() -> int:
    rc = _syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
    return int(rc) if rc > 0 else 0


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


def landlock_ruleset(abi: int) -> int:
    """A ruleset fd (built once in the zygote, inherited by every worker) that denies every
    filesystem access the ABI knows, TCP bind/connect, and (ABI >= 6) signals and abstract
    Unix sockets outside the worker's own domain. No rules are added: nothing is allowed."""
    fs_bits = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}.get(abi, 16)
    attr = _RulesetAttr((1 << fs_bits) - 1, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    fd = int(_syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0))
    _check(fd, "landlock_create_ruleset")
    return fd


def landlock_restrict(ruleset_fd: int) -> None:
    """Enforce the ruleset on this process (needs no_new_privs) and close its fd."""
    try:
        if _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset_fd, 0) < 0:
            _check(-1, "landlock_restrict_self")
    finally:
        os.close(ruleset_fd)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompProgram:
    """A pre-compiled classic-BPF seccomp program, laid out in memory once (in the zygote)."""

    def __init__(self, bpf: bytes) -> None:
        if not bpf or len(bpf) % 8:
            raise ValueError("invalid seccomp program")
        self._buf = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buf))
        self.address = ctypes.addressof(self._prog)
        # Every argument converted once, here: prctl() with argtypes converts (allocates)
        # each argument per call, and in a fresh worker that is copy-on-write faults.
        self._args = (PR_SET_SECCOMP, ctypes.c_ulong.from_param(SECCOMP_MODE_FILTER),
                      ctypes.byref(self._prog), ctypes.c_ulong.from_param(0),
                      ctypes.c_ulong.from_param(0))

    def load(self) -> None:
        """Install on this process; no_new_privs must be set. Irreversible."""
        if _prctl_raw(*self._args) < 0:
            _check(-1, "prctl(PR_SET_SECCOMP)")
