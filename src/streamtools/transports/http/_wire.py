"""Metadata off the wire: a request's CloudEvents headers (the HTTP binding), read once."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDictProxy

from streamtools._binding import ATTEMPT_HEADER, CE
from streamtools._codec import SPECVERSION, Metadata


def request_metadata(
    request: web.BaseRequest, type_name: str, headers: CIMultiDictProxy[str], content_type: str
) -> Metadata:
    """The message's metadata from its CloudEvents headers (`CE.read`'s rules)."""
    get = headers.get
    message_id, source, time = get(CE.id), get(CE.source), get(CE.time)
    if message_id and source is not None and time and ATTEMPT_HEADER not in headers:
        # What a producer sends: CE.read would take these as they are (HTTP headers are
        # text), so its rules reduce to the fallbacks of type and specversion.
        return Metadata(
            id=message_id,
            type=get(CE.type) or type_name,
            source=source,
            time=time,
            content_type=content_type,
            specversion=get(CE.specversion) or SPECVERSION,
            attempt=1,
            headers={},
        )
    return CE.read(
        headers,
        default_type=type_name,
        ct=content_type,
        source="" if source is not None else f"//{request.remote or 'unknown'}",
        extra=False,
    )
