"""The seccomp policy, compiled once (host side, pyseccomp) to classic BPF bytes.

An allow-list: a worker may compute, allocate, read and write the descriptors it already
has, sleep, and exit. Every other syscall fails with EPERM (Python sees PermissionError):
no sockets, no new processes or programs, no debugging or signalling other processes, no
namespace/mount/module/bpf games, no privilege changes, no opening of files worth
mentioning (openat is allowed only so that the chroot and Landlock answer ENOENT/EACCES).
Syscalls of a foreign architecture (x32, i386 via int 0x80) kill the process.

The zygote receives the bytes and every worker installs them with one prctl, so the 34 ms
pyseccomp import and the libseccomp compilation happen once per pool, not per call.
"""

from __future__ import annotations

import errno
import functools
import tempfile

ALLOWED: tuple[str, ...] = (
    # descriptors it already has (the call socket, /dev/null)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "close", "lseek", "fcntl",
    "dup", "dup2", "dup3", "ioctl", "poll", "ppoll", "select", "pselect6", "pipe", "pipe2",
    # path lookups: answered by the empty chroot and Landlock
    "openat", "open", "newfstatat", "fstat", "stat", "lstat", "statx", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "getdents64", "getcwd", "chdir", "fchdir", "umask",
    # memory
    "mmap", "munmap", "mremap", "mprotect", "madvise", "brk",
    # threads' plumbing used by the runtime itself, signals to itself
    "futex", "set_robust_list", "rseq", "sched_yield", "sched_getaffinity", "getcpu",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
    "sigaltstack", "restart_syscall",
    # time and identity
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "times", "getrusage", "sysinfo", "uname", "getrandom", "getpid", "gettid", "getppid",
    "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid", "getresgid",
    "getpgrp", "getpgid", "getsid", "getpriority",
    # tightening only
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self", "seccomp",
    "exit", "exit_group",
)
# prlimit64 on itself only (pid 0): per-call rlimits are set after seccomp is loaded, soft ==
# hard so that nobody can only lower them. Other workers run as the same uid, so touching
# their limits is refused.
# clone3 takes its flags in memory seccomp cannot inspect: ENOSYS makes libc fall back to
# clone(), which is refused like everything not listed.
ENOSYS_CALLS: tuple[str, ...] = ("clone3",)
# Named here only to document (and test) the refusals that matter most.
NOTABLE_DENIED: tuple[str, ...] = (
    "socket", "connect", "bind", "execve", "fork", "vfork", "clone", "ptrace", "kill",
    "tgkill", "mount", "unshare", "setns", "chroot", "setuid", "prctl", "bpf", "io_uring_setup",
    "userfaultfd", "perf_event_open", "process_vm_readv", "pidfd_open", "sched_setaffinity",
)


@functools.lru_cache(maxsize=1)
def compile_bpf() -> bytes:
    import pyseccomp as seccomp  # costly import: only here

    filt = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
    filt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    try:  # binary-tree layout: cheaper for the kernel to evaluate and to cache per syscall
        filt.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    except (OSError, ValueError, AttributeError):
        pass
    for name in ALLOWED:
        try:
            filt.add_rule(seccomp.ALLOW, name)
        except (ValueError, OSError):  # syscall unknown on this architecture
            continue
    filt.add_rule(seccomp.ALLOW, "prlimit64", seccomp.Arg(0, seccomp.EQ, 0))
    for name in ENOSYS_CALLS:
        try:
            filt.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
        except (ValueError, OSError):
            continue
    with tempfile.TemporaryFile() as fh:
        filt.export_bpf(fh)
        fh.seek(0)
        data = fh.read()
    assert isinstance(data, bytes)
    return data
