"""Workers and the init that forks them: what they share (uid nobody, a pid namespace, the
init's Landlock domain) and what keeps them apart. The init drops to nobody once and every
worker inherits it, so these attacks come from a process of the *same* uid as the init and
its siblings; the in-process layers are off, only the OS layers answer."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from compute.sandbox import SandboxPool, UserCodeError


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(x) for x in fh.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _forker_and_workers(pool: SandboxPool, namespaces: bool, n: int
                              ) -> tuple[int, list[int]]:
    """Host pids of the process that forks the workers and of its ``n`` idle workers."""
    zygote = pool.stats()["zygote_pid"]
    for _ in range(400):
        forker = (_children(zygote) or [0])[0] if namespaces else zygote
        if forker and pool.stats()["idle"] == n and len(_children(forker)) == n:
            return forker, _children(forker)
        await asyncio.sleep(0.025)
    raise AssertionError(f"the pool never had {n} idle workers")


@pytest.mark.parametrize("namespaces", [True, False], ids=["pid-namespace", "no-namespaces"])
async def test_workers_die_with_their_forker(namespaces: bool) -> None:
    """Killing the forking init kills every worker by itself (pid namespace teardown, or
    PR_SET_PDEATHSIG, which a later uid change would have cleared): the event loop is kept
    blocked meanwhile, so the pool cannot be the one killing them."""
    pool = SandboxPool(size=3, namespaces=namespaces)
    await pool.start()
    try:
        forker, workers = await _forker_and_workers(pool, namespaces, 3)
        os.kill(forker, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.01)  # noqa: ASYNC251 - deliberately blocks the loop (see docstring)
        assert not [w for w in workers if _alive(w)]
    finally:
        await pool.stop()


@pytest.fixture(params=[True, False], ids=["pid-namespace", "no-namespaces"])
async def bare_pool(request: pytest.FixtureRequest) -> AsyncIterator[SandboxPool]:
    p = SandboxPool(size=2, inprocess_guard=False, namespaces=request.param)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def test_workers_run_as_nobody_without_groups(bare_pool: SandboxPool) -> None:
    src = "import os\ndef f():\n    return [os.getresuid(), os.getresgid(), os.getgroups()]\n"
    assert await bare_pool.run(src, "f", [], {}) == [[65534] * 3, [65534] * 3, []]


# Every handle a process has on another process of its own uid, aimed at the init (its
# parent) and, in a pid namespace, at the neighbouring pids (siblings): all must fail
# (seccomp EPERM, no /proc), none may hang. Harmless if they did succeed: without a pid
# namespace the neighbours could be anyone's processes.
SAME_UID_ATTACKS = [
    "os.kill(PID, 0)",
    "os.setpriority(os.PRIO_PROCESS, PID, 0)",
    "os.sched_setaffinity(PID, os.sched_getaffinity(0))",
    "os.sched_setscheduler(PID, os.SCHED_OTHER, os.sched_param(0))",
    "resource.prlimit(PID, resource.RLIMIT_NOFILE)",
    "os.pidfd_open(PID)",
    "os.waitpid(PID, os.WNOHANG)",
    "open(f'/proc/{PID}/mem', 'rb')",
    "os.setpgid(PID, os.getpgid(PID))",
    "os.setuid(0)",
    "os.setresuid(0, 0, 0)",
]


async def test_same_uid_processes_are_out_of_reach(bare_pool: SandboxPool) -> None:
    src = ("import os, signal, resource\n"
           "def f(attacks):\n"
           "    me, parent = os.getpid(), os.getppid()\n"
           "    out = []\n"
           "    for attack in attacks:\n"
           "        for pid in (parent, me + 1, me - 1) if parent == 1 else (parent,):\n"
           "            try:\n"
           "                eval(attack, {'os': os, 'signal': signal, 'resource': resource,\n"
           "                              'PID': pid})\n"
           "                out.append(attack.replace('PID', str(pid)))\n"
           "            except OSError:\n"
           "                pass\n"
           "    return out\n")
    try:
        succeeded = await bare_pool.run(src, "f", [SAME_UID_ATTACKS], {})
    except UserCodeError as exc:  # anything but OSError escaping is a test bug
        raise AssertionError(exc.traceback) from None
    assert succeeded == []
    assert await bare_pool.run("def f():\n    return 1\n", "f", [], {}) == 1
