"""Reading a request body within a size limit, without reading past it."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.streams import StreamReader

from streamtools.errors import DecodeError


async def read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The request body, or None once it passes `limit` bytes (a body of exactly `limit`
    bytes passes). A body aiohttp could not read (a cut upload, a broken
    Content-Encoding) is a DecodeError."""
    content = request.content
    # Usually the whole body came with the headers: take it without awaiting (a client
    # expecting 100-continue takes the path that answers it).
    if content.is_eof() and "Expect" not in request.headers:
        return _buffered(content, limit)
    return await _streamed(request, limit)


async def _streamed(request: web.BaseRequest, limit: int) -> bytes | None:
    content = request.content
    chunks: list[bytes] = []
    size = 0
    try:
        if (
            request.version == aiohttp.HttpVersion11
            and request.headers.get("Expect", "").lower() == "100-continue"
        ):
            # The checks passed: let a client that waits for it (curl) send the body.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while chunk := await content.readany():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    except Exception as exc:  # a cut upload, a broken Content-Encoding: aiohttp's many kinds
        raise DecodeError(f"cannot read the request body: {exc}") from exc
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _buffered(content: StreamReader, limit: int) -> bytes | None:
    try:
        body = content.read_nowait()
    except Exception as exc:  # a cut upload, a broken Content-Encoding
        raise DecodeError(f"cannot read the request body: {exc}") from exc
    return body if len(body) <= limit else None
