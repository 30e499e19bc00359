"""Cut a Push's stream of arbitrary chunks into fixed-size stripes, flagging the last one."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def restripe(source: AsyncIterable[bytes | memoryview],
                   size: int) -> AsyncIterator[tuple[int, bytes | bytearray, bool]]:
    """(index, stripe, is_last) for a stream of arbitrary chunks; holds one stripe back.

    Linear in the input: every byte is copied once, into a stripe buffer allocated whole (no
    growing, no second copy); a ``bytes`` chunk that is exactly one stripe is passed on as it
    is (a view is copied: it may point into a buffer its producer reuses).
    """
    buf = bytearray()
    fill = 0
    pending: bytes | bytearray | None = None
    index = 0
    async for chunk in source:
        view = memoryview(chunk)
        pos = 0
        while pos < len(view):
            piece: bytes | bytearray | None = None
            if not fill and pos == 0 and len(view) == size and isinstance(chunk, bytes):
                piece, pos = chunk, size
            else:
                if not fill:
                    buf = bytearray(size)
                take = min(size - fill, len(view) - pos)
                buf[fill:fill + take] = view[pos:pos + take]
                fill += take
                pos += take
                if fill == size:
                    piece, fill = buf, 0
            if piece is not None:
                if pending is not None:
                    yield index, pending, False
                    index += 1
                pending = piece
    if fill:
        if pending is not None:
            yield index, pending, False
            index += 1
        del buf[fill:]
        pending = buf
    if pending is not None:
        yield index, pending, True
