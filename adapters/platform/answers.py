"""What a platform answer says beyond its body: the error fields, whether a refusal is an invalid
transition, how long a 429 asks us to wait, and the platform's own count of our requests.

Genesys words a refused status change in the message of a 400, `Invalid transition from <COMPLETE>
to <OFF>` (the Genesys Terraform provider's issues quote it; no public error code is documented);
the guide answers 409 `campaign.state.conflict`. Rate limits: `Retry-After` (seconds or an HTTP
date) and `inin-ratelimit-count` / `-allowed` / `-reset` (seconds until the platform's window ends).
"""

from __future__ import annotations

import math
import re
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from fsm.ports import PlatformError

__all__ = [
    "cap_refusal", "cap_text", "error_fields", "invalid_transition", "json_object", "rate_headers", "retry_after",
]

_CONFLICT_CODES = frozenset({"campaign.state.conflict", "conflict"})
_INVALID_TRANSITION = re.compile(r"invalid transition from\s*<?\s*[a-z_]+\s*>?\s*to\s*<?\s*[a-z_]+", re.I)


def error_fields(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    code = body.get("code")
    message = body.get("message")
    return (code if isinstance(code, str) else "")[:100], (message if isinstance(message, str) else "")[:300]


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) and `inin-ratelimit-reset`; the longer."""
    waits: list[float] = []
    raw = resp.headers.get("Retry-After")
    if raw:
        try:
            waits.append(float(raw))
        except ValueError:
            try:
                when = parsedate_to_datetime(raw)
                date = resp.headers.get("Date")
                ref = parsedate_to_datetime(date) if date else None
                if ref is not None:
                    waits.append((when - ref).total_seconds())
            except (TypeError, ValueError):
                pass
    reset = resp.headers.get("inin-ratelimit-reset")
    if reset:
        try:
            waits.append(float(reset))
        except ValueError:
            pass
    good = [w for w in waits if math.isfinite(w)]
    return max([0.0, *good]) if good else None


def invalid_transition(code: str, message: str) -> bool:
    """A 400 refusing a status change: Genesys says so in its message; the guide's codes say it too."""
    return code in _CONFLICT_CODES or bool(_INVALID_TRANSITION.search(message))


def rate_headers(resp: httpx.Response) -> tuple[int, int, float] | None:
    """`inin-ratelimit-count`, `-allowed`, `-reset` (seconds), when all three are there and numbers."""
    raw = [resp.headers.get(f"inin-ratelimit-{n}") for n in ("count", "allowed", "reset")]
    if any(r is None for r in raw):
        return None
    try:
        count, allowed, reset = int(str(raw[0])), int(str(raw[1])), float(str(raw[2]))
    except ValueError:
        return None
    return (count, allowed, reset) if math.isfinite(reset) else None


# Genesys publishes the cap (50 voice campaigns per organisation) but not the words of the refusal: a
# 4xx whose code or message speaks of a campaign limit is taken as one. The simulator's wording is a guess.
_CAP_WORDS = ("limit", "maximum", "max.", "too.many", "too many")


def cap_refusal(resp: httpx.Response) -> bool:
    """A start refused because the organisation's active-campaign cap is reached."""
    code, message = error_fields(resp)
    return cap_text(resp.status_code, f"{code} {message}")


def cap_text(status: int | None, text: str) -> bool:
    lowered = text.lower()
    return (status in (400, 403, 409, 422) and "campaign" in lowered and "transition" not in lowered
            and any(word in lowered for word in _CAP_WORDS))


def json_object(resp: httpx.Response, what: str) -> dict[str, Any]:
    """The answer's body as a JSON object, or a PlatformError saying why it is not one."""
    try:
        body = resp.json()
    except ValueError:
        raise PlatformError(f"{what}: HTTP {resp.status_code} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise PlatformError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body
