"""OAuth client credentials: one cached bearer token per client, shared by every caller.

`POST /oauth/token` with `Authorization: Basic base64(id:secret)` and `grant_type=client_credentials`
returns a token and its lifetime. The token is reused until shortly before it expires (a tenth of
its lifetime, at most 60 s, measured on the injected clock), so no request is sent with a token
about to lapse. A 401 from the API means the platform no longer accepts it: the caller hands the
refused token back to `invalidate`, and the next `token()` fetches a new one. Handing back the
token (rather than "refresh now") matters under concurrency: fifty reads refused with the same old
token cause one fetch, not fifty. Concurrent callers of `token()` share that one fetch.

Where. Genesys issues tokens at `https://login.<region>/oauth/token`, not on the API host
`https://api.<region>`: its SDK derives the login host by replacing `//api.` with `//login.` in the
API URL (PureCloudPlatformClientV2 `api_client.py`, `ApiClient.get_conf_url("login", ...)`).
`login_url_for` does the same; a host that does not start with `api.` (a test host, the
simulator) is left as it is, so the token endpoint is then the API host's own.

Secrets. The client secret lives in a `_Secret` whose repr is masked; the token is never logged,
never put in an exception message and never in a repr. Errors name the client id (an identifier,
not a credential) and the status, never the body the token endpoint sent back beyond its `error`
code.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re

import httpx

from fsm.ports import Clock, PlatformAuthError, PlatformUnavailable
from schemas.base import ContractError, decode
from schemas.platform import OAuthToken

__all__ = ["TokenManager", "login_url_for"]

_log = logging.getLogger(__name__)

_TOKEN_PATH = "/oauth/token"
_API_HOST = re.compile(r"//api\.")


def login_url_for(api_url: str) -> str:
    """The login host of a Genesys Cloud API URL, as the SDK derives it: `https://api.mypurecloud.ie`
    -> `https://login.mypurecloud.ie`. Any other URL is returned unchanged (without a trailing /)."""
    return _API_HOST.sub("//login.", api_url.strip().rstrip("/"), count=1)
_MAX_EARLY = 60.0
_EARLY_FRACTION = 0.1


class _Secret:
    """A string that never shows itself in a repr, a str() or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('***')"

    __str__ = __repr__


class TokenManager:
    """Fetches and caches the bearer token of one OAuth client."""

    def __init__(self, http: httpx.AsyncClient, client_id: str, client_secret: str, clock: Clock, *,
                 token_url: str = _TOKEN_PATH) -> None:
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret must both be non-empty")
        self._http = http
        self._token_url = token_url  # absolute (the login host), or a path on the API host
        self._client_id = client_id
        self._secret = _Secret(client_secret)
        self._clock = clock
        self._token: _Secret | None = None
        self._refresh_at = 0.0
        self._fetch: asyncio.Task[_Secret] | None = None
        self.fetches = 0

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def token_url(self) -> str:
        return self._token_url

    async def token(self) -> str:
        """A valid bearer token, fetched only when there is none or it is about to expire."""
        current = self._token
        if current is not None and self._clock.monotonic() < self._refresh_at:
            return current.reveal()
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.get_running_loop().create_task(self._fetch_token(), name="oauth-token")
        # shield: one caller cancelled must not cancel the fetch the others are waiting for.
        token = await asyncio.shield(self._fetch)
        return token.reveal()

    def invalidate(self, refused: str) -> None:
        """The platform refused `refused` (401): forget it, unless a newer token already replaced it."""
        if self._token is not None and self._token.reveal() == refused:
            self._token = None

    async def _fetch_token(self) -> _Secret:
        basic = base64.b64encode(f"{self._client_id}:{self._secret.reveal()}".encode()).decode("ascii")
        try:
            resp = await self._http.post(
                self._token_url,
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            # The exception text of httpx may carry the request; give only its kind.
            raise PlatformUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from None
        self.fetches += 1
        if resp.status_code in (400, 401, 403):
            raise PlatformAuthError(
                f"OAuth client {self._client_id!r} was refused: HTTP {resp.status_code} {_error_code(resp)}",
                status=resp.status_code,
            )
        if resp.status_code >= 500 or resp.status_code == 429:
            raise PlatformUnavailable(f"token endpoint answered HTTP {resp.status_code}",
                                      status=resp.status_code)
        if resp.status_code != 200:
            raise PlatformAuthError(f"token endpoint answered HTTP {resp.status_code}",
                                    status=resp.status_code)
        try:
            parsed = decode(OAuthToken, resp.content)
        except ContractError as exc:
            raise PlatformAuthError(f"token endpoint sent an unusable answer: {exc}") from None
        early = min(_MAX_EARLY, parsed.expires_in * _EARLY_FRACTION)
        token = _Secret(parsed.access_token)
        self._token = token
        self._refresh_at = self._clock.monotonic() + parsed.expires_in - early
        _log.info("oauth token obtained for client %r, valid %ss", self._client_id, parsed.expires_in)
        return token

    def __repr__(self) -> str:
        state = "cached" if self._token is not None else "none"
        return f"TokenManager(client_id={self._client_id!r}, token={state})"


def _error_code(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    code = body.get("error") if isinstance(body, dict) else None
    return str(code)[:64] if isinstance(code, str) else ""
