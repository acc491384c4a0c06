"""Log context: which campaign, command and dialer a log line is about, bound per reconcile.

The orchestrator binds the campaign for the whole of one look at it (and the command while it
handles one); every log record created meanwhile, by any module (the platform client, the read
limiter, the sink), carries the ids as attributes `campaign_id`, `command_id`, `dialer_id`.
`contextvars` follow the asyncio task, so looks at different campaigns never mix their ids.
`install()` (called by the adapters' logging set-up) makes the log record factory stamp them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

__all__ = ["FIELDS", "bound", "current", "install"]

FIELDS = ("campaign_id", "command_id", "dialer_id")
_VARS: dict[str, ContextVar[str | None]] = {name: ContextVar(name, default=None) for name in FIELDS}
_installed = False


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Bind ids (any of FIELDS) for the block; the previous values come back after it."""
    tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in ids.items() if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current() -> dict[str, str]:
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


def install() -> None:
    """Stamp the bound ids on every log record created from now on (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        for name, value in current().items():
            if getattr(record, name, None) is None:  # an explicit `extra=` wins
                setattr(record, name, value)
        return record

    logging.setLogRecordFactory(factory)
