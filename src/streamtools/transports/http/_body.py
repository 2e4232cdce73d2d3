"""Reading a request body within a size limit, without reading (or inflating) past it.

aiohttp's own decompression is off (`ConnectionServer`): it would inflate each body as it
arrives, before any check, refused bodies included. Here a gzip or deflate body is inflated
after the checks passed, and no further than `limit` decoded bytes: a bomb costs the limit.
"""

from __future__ import annotations

import asyncio
import enum
import zlib
from typing import Final, Literal

import aiohttp
from aiohttp import web
from aiohttp.streams import StreamReader

from streamtools.errors import DecodeError

ENCODINGS: Final = frozenset({"identity", "gzip", "x-gzip", "deflate"})


def encoding(header: str | None) -> str | None:
    """The body's Content-Encoding, normalized: one of `ENCODINGS`, or None when it is
    unsupported (`br`, `zstd`, a list of codings: a nested bomb is refused unread)."""
    if header is None:
        return "identity"
    value = header.strip().lower()
    return value if value in ENCODINGS else None


class _Inflater:
    """Inflates gzip or deflate chunks, stopping once the output passes `limit` bytes."""

    def __init__(self, coding: str, limit: int) -> None:
        self._coding = coding
        self._limit = limit
        self._size = 0
        self._inflate: zlib._Decompress | None = None

    def feed(self, chunk: bytes) -> bytes | None:
        """The decoded bytes of `chunk`, or None once the body passes the limit."""
        if self._inflate is None:
            if self._coding == "deflate" and not _zlib_header(chunk):
                wbits = -zlib.MAX_WBITS  # deflate as many clients send it: raw, no zlib header
            else:
                wbits = zlib.MAX_WBITS | (16 if self._coding != "deflate" else 0)
            self._inflate = zlib.decompressobj(wbits)
        try:
            out = self._inflate.decompress(chunk, self._limit + 1 - self._size)
        except zlib.error as exc:
            raise DecodeError(f"cannot decode the {self._coding} request body: {exc}") from exc
        self._size += len(out)
        if self._size > self._limit or self._inflate.unconsumed_tail:
            return None
        return out

    def end(self) -> None:
        assert self._inflate is not None
        if not self._inflate.eof:
            raise DecodeError(f"the {self._coding} request body is truncated")
        if self._inflate.unused_data:
            raise DecodeError(f"data follows the end of the {self._coding} request body")


def _zlib_header(chunk: bytes) -> bool:
    return len(chunk) >= 2 and chunk[0] & 0x0F == 8 and (chunk[0] << 8 | chunk[1]) % 31 == 0


class Pending(enum.Enum):
    """What `buffered_body` answers for a body still arriving."""

    PENDING = "pending"


def buffered_body(
    request: web.BaseRequest, limit: int, coding: str = "identity"
) -> bytes | Literal[Pending.PENDING] | None:
    """`read_body` without awaiting, when the whole body came with the headers (the usual
    case); else `Pending.PENDING` (a client expecting 100-continue takes the path that
    answers it)."""
    content = request.content
    if content.is_eof() and "Expect" not in request.headers:
        body = _buffered(content, limit)
        if body is None or coding == "identity" or not body:
            return body
        return _decoded([body], coding, limit)
    return Pending.PENDING


async def read_body(
    request: web.BaseRequest, limit: int, coding: str = "identity", timeout: float = 0.0
) -> bytes | None:
    """The decoded request body, or None once it passes `limit` bytes, sent or decoded (a
    body of exactly `limit` bytes passes). A body aiohttp could not read (a cut upload) or
    that does not decode is a DecodeError; one still arriving after `timeout` seconds (when
    given) raises TimeoutError."""
    body = buffered_body(request, limit, coding)
    if body is not Pending.PENDING:
        return body
    if not timeout:
        return await _streamed(request, limit, coding)
    async with asyncio.timeout(timeout):
        return await _streamed(request, limit, coding)


def _decoded(chunks: list[bytes], coding: str, limit: int) -> bytes | None:
    inflater = _Inflater(coding, limit)
    out: list[bytes] = []
    for chunk in chunks:
        piece = inflater.feed(chunk)
        if piece is None:
            return None
        out.append(piece)
    inflater.end()
    return b"".join(out)


async def _streamed(request: web.BaseRequest, limit: int, coding: str) -> bytes | None:
    content = request.content
    inflater = _Inflater(coding, limit) if coding != "identity" else None
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
            if inflater is not None:
                decoded = inflater.feed(chunk)
                if decoded is None:
                    return None
                chunk = decoded
            chunks.append(chunk)
    except DecodeError:
        raise
    except Exception as exc:  # a cut upload: aiohttp's many kinds
        raise DecodeError(f"cannot read the request body: {exc}") from exc
    if inflater is not None and size:
        inflater.end()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _buffered(content: StreamReader, limit: int) -> bytes | None:
    try:
        body = content.read_nowait()
    except Exception as exc:  # a cut upload
        raise DecodeError(f"cannot read the request body: {exc}") from exc
    return body if len(body) <= limit else None
