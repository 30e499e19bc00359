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
        try:
            print(f"--- {task!r:.300}", file=sys.stderr)
            for frame in task.get_stack(limit=40):
                code = frame.f_code
                print(f"    {code.co_filename}:{frame.f_lineno} {code.co_name}", file=sys.stderr)
        except Exception as exc:  # never let the dump hurt the node
            print(f"    (dump failed: {exc!r})", file=sys.stderr)
    print("=== end of task dump ===", file=sys.stderr, flush=True)


signal.signal(signal.SIGUSR1, _dump)
