"""Test-only: SIGUSR1 prints every asyncio task's stack to stderr (the node's log).

Put this directory on a node's PYTHONPATH (tests/reliability/test_faults_netns.py does) to see
where an operation hangs: py-spy shows threads, not coroutines.
"""

import asyncio
import signal
import sys
from types import FrameType


def _dump(_sig: int, _frame: FrameType | None) -> None:
    loop = asyncio._get_running_loop()
    if loop is None:
        return
    tasks = asyncio.all_tasks(loop)
    print(f"=== task dump: {len(tasks)} tasks ===", file=sys.stderr)
    for task in tasks:
        print(f"--- {task!r:.300}", file=sys.stderr)
        task.print_stack(limit=30, file=sys.stderr)
    print("=== end of task dump ===", file=sys.stderr, flush=True)


signal.signal(signal.SIGUSR1, _dump)
