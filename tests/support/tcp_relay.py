"""A relay on the channel's TCP transport that sees (and may rewrite) every message.

The TCP twin of relay.py, with the same mutator interface: ``mutate(method, direction, msg)``
where method is "Handshake", "Call" or "Stream" (the message kind) and msg is the payload.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from mesh.channel.tcp_wire import ABORT, KINDS, decode_abort, read_message, write_message
from tests.support.relay import Mutator

_KIND_BY_NAME = {name: kind for kind, name in KINDS.items()}
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class TcpRelay:
    def __init__(self, target: str, mutate: Mutator | None = None) -> None:
        host, port = target.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.mutate: Mutator = mutate or (lambda _m, _d, msg: msg)
        self.log: list[tuple[str, str, bytes]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self._writers |= {writer, up_writer}
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(reader, up_writer, "req"))
                tg.create_task(self._pump(up_reader, writer, "resp"))
        except BaseException:  # noqa: BLE001  (a closed side ends both directions)
            pass
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str) -> None:
        try:
            while True:
                kind, payload = await read_message(reader)
                name = KINDS[kind]
                self.log.append((name, direction, payload))
                write_message(writer, kind, self.mutate(name, direction, payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def replay_status(self, method: str, message: bytes) -> grpc.StatusCode:
        """Send ``message`` again on a fresh connection; the status the server answers."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            write_message(writer, _KIND_BY_NAME[method], message)
            await writer.drain()
            kind, payload = await read_message(reader)
        finally:
            writer.close()
        if kind == ABORT:
            return _CODES[decode_abort(payload)[0]]
        return grpc.StatusCode.OK

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
