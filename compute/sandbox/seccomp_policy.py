"""The seccomp policy, compiled once (host side, pyseccomp) to classic BPF bytes.

The zygote receives the bytes and every worker installs them with one prctl, so the 34 ms
pyseccomp import and the libseccomp compilation happen once per pool, not per call.
"""

from __future__ import annotations

import errno
import functools
import tempfile

# Refused with EPERM (Python sees PermissionError): no network, no new processes or
# programs, no debugging of other processes, no namespace/mount/kernel-module games,
# no signals to or scheduling of other processes (every worker runs as the same uid), no
# privilege changes.
DENIED: tuple[str, ...] = (
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "sendmsg", "sendmmsg", "recvmsg", "recvmmsg", "sendto", "recvfrom",
    "execve", "execveat", "fork", "vfork", "clone",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal",
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr",
    "mknod", "mknodat", "open_by_handle_at", "name_to_handle_at",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
    "setgroups", "setfsuid", "setfsgid", "capset",
    "prctl", "personality", "setpriority",
    "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm", "modify_ldt", "uselib", "vhangup", "fanotify_init",
    "migrate_pages", "move_pages", "mbind", "set_mempolicy", "process_madvise",
    "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
    "ioprio_set", "get_robust_list",
    "inotify_init", "inotify_init1", "memfd_secret",
)
# prlimit64 is allowed on the worker itself only (pid 0): per-call rlimits are set after
# seccomp is loaded, with soft == hard so that nobody can only lower them. Other workers run
# as the same uid, so touching their limits (pid != 0) is refused.
# clone3 takes its flags in memory seccomp cannot inspect: ENOSYS makes libc fall back to
# clone(), which is refused above.
ENOSYS_CALLS: tuple[str, ...] = ("clone3",)


@functools.lru_cache(maxsize=1)
def compile_bpf() -> bytes:
    """Default-allow filter with the deny list above; foreign-arch syscalls kill the process."""
    import pyseccomp as seccomp  # costly import: only here

    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    try:  # binary-tree layout: cheaper for the kernel to evaluate and to cache per syscall
        filt.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    except (OSError, ValueError, AttributeError):
        pass
    for name in DENIED:
        try:
            filt.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (ValueError, OSError):  # syscall unknown on this architecture
            continue
    filt.add_rule(seccomp.ERRNO(errno.EPERM), "prlimit64", seccomp.Arg(0, seccomp.NE, 0))
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
