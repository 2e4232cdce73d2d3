"""Log lines as JSON, and the runner's own logging setup when the application has none."""

from __future__ import annotations

import logging
import os

import msgspec


def default_logging() -> None:
    """Log to stderr, the runner at INFO, when the application has not configured logging
    itself (like Flask's `app.run()`); `STREAMTOOLS_LOG_FORMAT=json` selects JsonFormatter."""
    if not logging.getLogger().handlers:
        if os.environ.get("STREAMTOOLS_LOG_FORMAT", "").lower() == "json":
            handler = logging.StreamHandler()
            handler.setFormatter(JsonFormatter())
            logging.basicConfig(level=logging.WARNING, handlers=[handler])
        else:
            logging.basicConfig(
                level=logging.WARNING,
                format="%(asctime)s %(name)s %(levelname)s %(message)s",
            )
        logging.getLogger("streamtools.runner").setLevel(logging.INFO)


# The attributes every LogRecord has; the rest are a line's `extra=` fields.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the line's fields
    (queue, message_id, transport, trace_id, ...). `STREAMTOOLS_LOG_FORMAT=json` selects it
    in `ConsumerRunner.run()`'s own logging setup."""

    _encode = staticmethod(msgspec.json.Encoder().encode)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._encode(line).decode()
