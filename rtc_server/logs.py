"""Logging set-up: text for people, JSON for Cloud Logging, a session id on session lines.

A session's lines carry its id whichever module writes them: ``PeerSession`` sets
``SESSION_ID`` (a context variable) in its own tasks, and ``SessionFilter`` copies it onto
every record, so the inference or aiortc code called from those tasks needs no change.
Lines written outside a session's tasks (e.g. from aiortc callbacks) pass the id
explicitly through ``session_logger``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

#: The id of the session whose task is running, if any.
SESSION_ID: ContextVar[str | None] = ContextVar("session_id", default=None)

#: Python level name -> Cloud Logging ``severity``.
_SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}


class SessionFilter(logging.Filter):
    """Give every record a ``session_id`` attribute (None outside sessions)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "session_id", None) is None:
            record.session_id = SESSION_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the field names Cloud Logging understands."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        session_id = getattr(record, "session_id", None)
        if session_id is not None:
            entry["session_id"] = session_id
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with ``[session <id>]`` when the record belongs to one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        session_id = getattr(record, "session_id", None)
        return line if session_id is None else f"{line} [session {session_id}]"


class TokenRedactor(logging.Filter):
    """Keep session tokens (``?token=`` on events/ws/snapshot URLs) out of the logs: the
    access log writes every request line, query included."""

    _TOKEN = re.compile(r"([?&]token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = self._TOKEN.sub(r"\1<redacted>", message), None
        return True


def session_logger(logger: logging.Logger, session_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose every line carries ``session_id`` (for code outside the session's tasks)."""
    return logging.LoggerAdapter(logger, {"session_id": session_id})


def configure(level: str, fmt: str) -> None:
    """Install one stderr handler with the chosen format on the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SessionFilter())
    handler.addFilter(TokenRedactor())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aioice").setLevel(logging.WARNING)
