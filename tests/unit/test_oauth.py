"""OAuth client credentials: caching, expiry, shared fetches, invalidation and secret hygiene."""

from __future__ import annotations

import asyncio
import base64
import logging
from urllib.parse import parse_qs

import httpx
import pytest

from adapters.platform.oauth import TokenManager
from fsm.ports import PlatformAuthError, PlatformUnavailable
from fsm.testing import FakeClock

SECRET = "s3cr3t-value-never-shown"


class TokenEndpoint:
    def __init__(self, *, expires_in: int = 300, status: int = 200) -> None:
        self.expires_in = expires_in
        self.status = status
        self.calls: list[httpx.Request] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "invalid_client", "echo": SECRET})
        return httpx.Response(
            200, json={"access_token": f"tok-{len(self.calls)}", "token_type": "bearer",
                       "expires_in": self.expires_in},
        )


def _manager(endpoint: TokenEndpoint, clock: FakeClock) -> tuple[TokenManager, httpx.AsyncClient]:
    http = httpx.AsyncClient(base_url="http://platform.test", transport=httpx.MockTransport(endpoint))
    return TokenManager(http, "client-7", SECRET, clock), http


async def test_token_request_is_client_credentials_with_basic_auth() -> None:
    endpoint = TokenEndpoint()
    tokens, http = _manager(endpoint, FakeClock())
    async with http:
        assert await tokens.token() == "tok-1"
    req = endpoint.calls[0]
    assert req.method == "POST" and req.url.path == "/oauth/token"
    scheme, _, value = req.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == f"client-7:{SECRET}"
    assert parse_qs(req.content.decode()) == {"grant_type": ["client_credentials"]}


async def test_token_is_cached_until_shortly_before_expiry() -> None:
    clock = FakeClock()
    endpoint = TokenEndpoint(expires_in=300)
    tokens, http = _manager(endpoint, clock)
    async with http:
        assert await tokens.token() == "tok-1"
        await clock.advance(269.0)
        assert await tokens.token() == "tok-1"
        assert len(endpoint.calls) == 1
        await clock.advance(1.5)  # 30 s (a tenth of the lifetime) before expiry: refresh early
        assert await tokens.token() == "tok-2"
        assert len(endpoint.calls) == 2


async def test_concurrent_callers_share_one_fetch() -> None:
    endpoint = TokenEndpoint()
    endpoint.gate = asyncio.Event()
    tokens, http = _manager(endpoint, FakeClock())
    async with http:
        callers = [asyncio.create_task(tokens.token()) for _ in range(20)]
        await asyncio.sleep(0.01)
        endpoint.gate.set()
        assert set(await asyncio.gather(*callers)) == {"tok-1"}
    assert len(endpoint.calls) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    endpoint = TokenEndpoint()
    endpoint.gate = asyncio.Event()
    tokens, http = _manager(endpoint, FakeClock())
    async with http:
        first = asyncio.create_task(tokens.token())
        second = asyncio.create_task(tokens.token())
        await asyncio.sleep(0.01)
        first.cancel()
        endpoint.gate.set()
        assert await second == "tok-1"
        with pytest.raises(asyncio.CancelledError):
            await first


async def test_invalidate_only_drops_the_refused_token() -> None:
    endpoint = TokenEndpoint()
    tokens, http = _manager(endpoint, FakeClock())
    async with http:
        old = await tokens.token()
        tokens.invalidate(old)
        new = await tokens.token()
        assert new == "tok-2"
        tokens.invalidate(old)  # a late 401 for the old token must not throw away the new one
        assert await tokens.token() == "tok-2"
    assert len(endpoint.calls) == 2


async def test_refused_client_raises_auth_error_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = TokenEndpoint(status=401)
    tokens, http = _manager(endpoint, FakeClock())
    async with http:
        with pytest.raises(PlatformAuthError) as info:
            await tokens.token()
    err = info.value
    assert "client-7" in str(err) and "invalid_client" in str(err) and err.status == 401
    for text in (str(err), repr(err), repr(tokens), caplog.text, repr(vars(tokens))):
        assert SECRET not in text


async def test_token_never_reaches_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens, http = _manager(TokenEndpoint(), FakeClock())
    async with http:
        token = await tokens.token()
    for text in (repr(tokens), str(tokens), caplog.text, repr(vars(tokens))):
        assert token not in text
        assert SECRET not in text


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_token_endpoint_trouble_is_unavailable(status: int) -> None:
    tokens, http = _manager(TokenEndpoint(status=status), FakeClock())
    async with http:
        with pytest.raises(PlatformUnavailable, match=str(status)):
            await tokens.token()


async def test_unreachable_token_endpoint_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.AsyncClient(base_url="http://platform.test", transport=httpx.MockTransport(refuse))
    async with http:
        with pytest.raises(PlatformUnavailable, match="ConnectError"):
            await TokenManager(http, "client-7", SECRET, FakeClock()).token()


async def test_unusable_token_answer_is_a_clear_error() -> None:
    http = httpx.AsyncClient(
        base_url="http://platform.test",
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"access_token": "t", "expires_in": 0})),
    )
    async with http:
        with pytest.raises(PlatformAuthError, match=r"expiresIn|expires_in"):
            await TokenManager(http, "client-7", SECRET, FakeClock()).token()


def test_empty_credentials_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        TokenManager(httpx.AsyncClient(), "client", "", FakeClock())
