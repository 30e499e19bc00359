"""The seed's storage API on a TaskWorker (``worker.storage.Push(...)``), through the local
node's FileService."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from proto import taskworker_pb2, taskworker_pb2_grpc
from taskworker.worker_capture import TaskWorkerError

if TYPE_CHECKING:
    from taskworker.worker import TaskWorker

log = logging.getLogger("taskworker")


class FileStorage:
    """The seed's storage API, through the local node's FileService."""

    def __init__(self, worker: TaskWorker) -> None:
        self._worker = worker

    def _stub(self) -> taskworker_pb2_grpc.FileServiceStub:
        stub = self._worker._file_stub
        if stub is None:
            raise TaskWorkerError("storage needs a running node: await start_server() first")
        return stub

    def _ensure_user(self, user_id: str) -> None:
        """The embedded node's keyring belongs to this worker: a user it writes as is
        created on first use (as the seed's examples expect of ``user_id="user123"``)."""
        if not user_id:
            return
        try:
            from storage.keyring import Keyring

            Keyring(self._worker.data_dir).get_or_create(user_id)
        except Exception as exc:  # a bad name etc.: the node answers with the real error
            log.debug("keyring user %r not created: %s", user_id, exc)

    async def Push(self, request: taskworker_pb2.PushRequest, context: Any = None
                   ) -> taskworker_pb2.PushResponse:
        stub = self._stub()
        self._ensure_user(request.user_id)
        response: taskworker_pb2.PushResponse = await stub.Push(request)
        return response

    async def Get(self, request: taskworker_pb2.GetRequest, context: Any = None
                  ) -> taskworker_pb2.GetResponse:
        response: taskworker_pb2.GetResponse = await self._stub().Get(request)
        return response

    async def Revise(self, request: taskworker_pb2.ReviseRequest, context: Any = None
                     ) -> taskworker_pb2.ReviseResponse:
        stub = self._stub()
        self._ensure_user(request.user_id)
        response: taskworker_pb2.ReviseResponse = await stub.Revise(request)
        return response

    async def Synchronous(self, request: taskworker_pb2.SynchronousRequest, context: Any = None
                          ) -> taskworker_pb2.SynchronousResponse:
        response: taskworker_pb2.SynchronousResponse = await self._stub().Synchronous(request)
        return response
