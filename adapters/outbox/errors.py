"""What the outbox raises: every failure is an `OutboxError`."""

from __future__ import annotations

__all__ = ["OutboxClosed", "OutboxError", "OutboxUnavailable", "OutboxWriteFailed"]


class OutboxError(Exception):
    """Any failure of the outbox."""


class OutboxUnavailable(OutboxError):
    """The database file cannot be used: bad path, no permission, locked by another process, not ours."""


class OutboxClosed(OutboxError):
    """The outbox was used before `open()`/`start()` or after `stop()`."""


class OutboxWriteFailed(OutboxError):
    """A row could not be committed; the call had no effect and may be retried."""
