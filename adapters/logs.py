"""Structured JSON logs: one object per line, with campaign and command ids when a record has them.

Records carry ids through `extra={"campaign_id": ..., "command_id": ...}` or, for every line logged
inside one look at a campaign, from the log context the orchestrator binds (`fsm/log_context.py`);
anything that looks like a credential is never passed to a logger in the first place (see
adapters/platform/oauth.py).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from fsm import log_context

__all__ = ["configure_logging"]

_FIELDS = log_context.FIELDS


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    log_context.install()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("transitions").setLevel(logging.WARNING)  # it logs every callback at INFO
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
