"""taskworker: run Python functions on the tw-mesh network (``from taskworker import TaskWorker``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskworker.worker import FileStorage, TaskWorker, TaskWorkerError

__all__ = ["FileStorage", "TaskWorker", "TaskWorkerError"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m taskworker.cli` does not import grpc servers it does not need.
    if name in __all__:
        from taskworker import worker

        return getattr(worker, name)
    raise AttributeError(name)
