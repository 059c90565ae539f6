"""Pure ASGI middleware in front of the app: request body limits and a ``Server-Timing`` header.

It runs before routing and before any body byte is read, so a body over its limit costs the server
nothing but the bytes received up to the limit. Routes may have their own limit (a prompt is a
few kilobytes of JSON, an upload megabytes of image): the first pattern that matches the path
decides, else the default limit applies.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .schemas import ApiError

__all__ = ["BodyTooLarge", "Guard", "send_json"]


class BodyTooLarge(ApiError):
    """Raised from ``receive`` as soon as the bytes received pass the limit (413)."""


async def send_json(send: Callable[[dict], Awaitable[None]], status: int, message: str) -> None:
    """A whole ``{"error": message}`` response that closes the connection (the body is not read)."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Request body limits and the ``Server-Timing`` header.

    A limit is checked twice: a declared ``Content-Length`` over it is refused before reading
    anything, and the bytes actually received are counted (a chunked or lying client is cut off
    as soon as it passes the limit). The timing is the server-side time until the response starts.

    Args:
        app: the ASGI app behind.
        max_body_bytes: the limit of every route not in ``limits``.
        limits: ``(path regex, limit, what)`` for routes with their own limit; ``what`` names the
            body in the 413 message ("prompt body").
    """

    def __init__(self, app: Any, max_body_bytes: int, limits: Sequence[tuple[str, int, str]] = ()) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.limits = [(re.compile(pattern), limit, what) for pattern, limit, what in limits]

    def _limit(self, path: str) -> tuple[int, str]:
        for pattern, limit, what in self.limits:
            if pattern.fullmatch(path):
                return limit, what
        return self.max_body_bytes, "request body"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        limit, what = self._limit(scope.get("path", ""))
        too_large = f"{what} exceeds this server's limit of {limit} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await send_json(send, 400, f"malformed Content-Length header {declared[:32].decode('latin-1')!r}")
                return
            if int(declared) > limit:
                await send_json(send, 413, too_large)
                return
        seen = 0

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(413, too_large)
            return message

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"server-timing", f"app;dur={ms:.3f}".encode())],
                }
            await send(message)

        await self.app(scope, counted_receive, timed_send)
