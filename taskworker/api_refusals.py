"""What the local API does with a call it refuses (taskworker/api_auth.py decides which).

A call with no token, a malformed ``authorization`` header or a token the node does not know
is answered UNAUTHENTICATED after :data:`REFUSAL_DELAY` (an ``asyncio.sleep`` in the deny
handler: other calls, and the refused call's own connection, go on meanwhile). It is counted
by reason in the node's Status (``api_auth.refused``) and reported in the node's log at most
once per :data:`LOG_INTERVAL` with how many were refused since the last report.

Tokens are 256-bit random, so neither the delay nor the counter changes the odds of guessing
one; they make a misconfigured client or someone trying tokens visible, and keep such a client
from spinning the node's CPU and log. A call with a valid token is never delayed; a user token
calling a method users may not is a PERMISSION_DENIED answered at once and not counted here.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

REFUSAL_DELAY = 0.1        # seconds before an UNAUTHENTICATED answer
LOG_INTERVAL = 10.0        # seconds: at most one warning about refused calls per interval


class Reason(enum.Enum):
    """Why a call was refused (an enum, not a string: a keyring user may be named "wrong")."""

    MISSING = "missing"          # no authorization header
    MALFORMED = "malformed"      # not 'Bearer TOKEN' (another scheme, no token, binary value)
    WRONG = "wrong"              # a token that is neither the node's nor a user's


Context = grpc.aio.ServicerContext[Any, Any]
Handler = Any   # grpc.RpcMethodHandler[Any, Any]

log = logging.getLogger("tw-mesh")


def deny_handlers(message: str, code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED,
                  delay: float = 0.0) -> dict[str, Handler]:
    """A handler of each kind of call (see :func:`kind`) answering ``code`` after ``delay``."""
    async def refuse(context: Context) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await context.abort(code, message)

    async def unary_unary(request: Any, context: Context) -> Any:
        await refuse(context)

    async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
        await refuse(context)
        yield None                                          # pragma: no cover

    async def stream_unary(requests: Any, context: Context) -> Any:
        await refuse(context)

    async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
        await refuse(context)
        yield None                                          # pragma: no cover

    return {"uu": grpc.unary_unary_rpc_method_handler(unary_unary),
            "us": grpc.unary_stream_rpc_method_handler(unary_stream),
            "su": grpc.stream_unary_rpc_method_handler(stream_unary),
            "ss": grpc.stream_stream_rpc_method_handler(stream_stream)}


def kind(handler: Handler) -> str:
    if handler is None or handler.unary_unary is not None:
        return "uu"
    if handler.unary_stream is not None:
        return "us"
    return "su" if handler.stream_unary is not None else "ss"


class Refusals:
    """Counts refused calls by reason and warns about them in the log, rate-limited: the
    first refusal after a quiet interval is reported at once, later ones together when the
    interval is over (a timer, so a burst that stops is still reported)."""

    def __init__(self, interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counts = dict.fromkeys(Reason, 0)
        self._unreported = dict.fromkeys(Reason, 0)
        self._latest = ""
        self._interval = interval
        self._clock = clock
        self._last_report = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    def note(self, reason: Reason, method: str) -> None:
        self.counts[reason] += 1
        self._unreported[reason] += 1
        self._latest = method
        due = self._last_report + self._interval - self._clock()
        if due <= 0:
            self.report()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(due, self.report)
            except RuntimeError:            # no loop (unit use): the next refusal reports
                pass

    def report(self) -> None:
        """Log the refusals not reported yet, if any."""
        self.close()
        total = sum(self._unreported.values())
        if not total:
            return
        self._last_report = self._clock()
        log.warning("local API: refused %d call(s) with no or a wrong token since the last "
                    "report (%s; latest %s); a client has a wrong token, or someone is trying "
                    "tokens", total,
                    ", ".join(f"{r.value} {n}" for r, n in self._unreported.items()), self._latest)
        self._unreported = dict.fromkeys(Reason, 0)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def status(self) -> dict[str, Any]:
        return {"refused": {r.value: n for r, n in self.counts.items()}}
