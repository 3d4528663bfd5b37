"""The shared HTTP layer: retries, Retry-After, deadline, size cap, circuit breaker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from bot.errors import ConfigError
from bot.providers.base import CheckFailed, InvalidRequest, ProviderUnavailable, RateLimited
from bot.providers.http import (
    CircuitBreaker,
    HttpClient,
    HttpPolicy,
    RetryPolicy,
    ServicePaused,
    parse_retry_after,
)
from tests.fakes import FakeServer, Handler, RecordedRequest

SECRET = "sk-TEST-SENTINEL-http-layer"


class EchoFake(FakeServer):
    def __init__(self, body: bytes = b'{"ok": true}') -> None:
        super().__init__()
        self.body = body

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("GET", "/thing", self.ok), ("POST", "/thing", self.ok)]

    async def ok(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return web.Response(body=self.body, content_type="application/json")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[EchoFake]:
    async with EchoFake() as f:
        yield f


def client(
    url: str, clock: Clock | None = None, waits: list[float] | None = None, **policy: object
) -> HttpClient:
    async def sleep(s: float) -> None:
        if waits is not None:
            waits.append(s)

    return HttpClient(
        label="Fake",
        base_url=url,
        policy=HttpPolicy.from_mapping(policy, "providers.fake"),
        headers={"Authorization": f"Bearer {SECRET}"},
        sleep=sleep,
        clock=clock or Clock(),
    )


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(
        10.0
    )
    assert parse_retry_after("-3") == 0.0


def test_policy_errors_name_keys() -> None:
    with pytest.raises(ConfigError, match=r"providers\.x\.breaker_threshold"):
        HttpPolicy.from_mapping({"breaker_threshold": 0}, "providers.x")
    with pytest.raises(ConfigError, match=r"providers\.x\.deadline_s"):
        HttpPolicy.from_mapping({"deadline_s": True}, "providers.x")


async def test_ok_and_headers_sent(fake: EchoFake) -> None:
    c = client(fake.base_url)
    resp = await c.request("GET", "/thing")
    await c.aclose()
    assert await resp.json() == {"ok": True}
    assert fake.requests[0].headers["Authorization"] == f"Bearer {SECRET}"


async def test_400_never_retried(fake: EchoFake) -> None:
    c = client(fake.base_url)
    fake.fail_next(400, json={"message": "bad"})
    with pytest.raises(InvalidRequest):
        await c.request("POST", "/thing", json_body={})
    await c.aclose()
    assert len(fake.requests) == 1


async def test_504_on_post_not_retried_but_on_get_once(fake: EchoFake) -> None:
    c = client(fake.base_url)
    fake.fail_next(504, times=3)
    with pytest.raises(ProviderUnavailable):
        await c.request("POST", "/thing", json_body={})
    assert len(fake.requests) == 1  # a gateway timeout may hide a finished, billed job
    with pytest.raises(ProviderUnavailable):
        await c.request("GET", "/thing")
    await c.aclose()
    assert len(fake.requests) == 3


async def test_429_without_header_uses_default_then_gives_up(fake: EchoFake) -> None:
    waits: list[float] = []
    c = client(fake.base_url, waits=waits, rate_limit_retries=2)
    fake.fail_next(429, json={"message": "slow"}, times=3)
    with pytest.raises(RateLimited) as info:
        await c.request("POST", "/thing", json_body={})
    await c.aclose()
    assert waits == [2.0, 2.0] and len(fake.requests) == 3
    assert info.value.retry_after is None


async def test_body_over_cap_aborts(fake: EchoFake) -> None:
    fake.body = b"x" * 5000
    c = client(fake.base_url, max_body_bytes=1024)
    with pytest.raises(ProviderUnavailable, match=r"too large|exceeded"):
        await c.request("GET", "/thing")
    await c.aclose()


async def test_endless_body_aborted_by_cap(fake: EchoFake) -> None:
    c = client(fake.base_url, max_body_bytes=64 * 1024, deadline_s=30)
    fake.fail_next(mode="endless")
    with pytest.raises(ProviderUnavailable, match="exceeded"):
        await c.request("POST", "/thing", json_body={})
    await c.aclose()
    assert len(fake.requests) == 1


async def test_connect_errors_retried_then_unavailable() -> None:
    async with EchoFake() as f:
        url = f.base_url  # closed after the block: connection refused
    waits: list[float] = []
    c = client(url, waits=waits, connect_retries=2)
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        await c.request("POST", "/thing", json_body={})
    await c.aclose()
    assert len(waits) == 2


async def test_breaker_opens_pauses_without_requests_then_probes(fake: EchoFake) -> None:
    clock = Clock()
    c = client(fake.base_url, clock=clock, breaker_threshold=2, breaker_reset_s=60)
    fake.fail_next(503, times=4)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await c.request("GET", "/thing")
    assert len(fake.requests) == 4 and c.breaker.state == "open"
    with pytest.raises(ServicePaused) as info:
        await c.request("GET", "/thing")
    assert len(fake.requests) == 4  # no HTTP while open
    assert "paused" in info.value.user_message
    clock.now += 61
    assert c.breaker.state == "half-open"
    resp = await c.request("GET", "/thing")  # the probe succeeds: closed again
    assert resp.status == 200 and c.breaker.state == "closed"
    await c.aclose()


async def test_breaker_failed_probe_reopens_and_client_errors_do_not_trip(fake: EchoFake) -> None:
    clock = Clock()
    c = client(fake.base_url, clock=clock, breaker_threshold=1, breaker_reset_s=10)
    for _ in range(5):
        fake.fail_next(400, json={"message": "bad"})
        with pytest.raises(InvalidRequest):
            await c.request("GET", "/thing")
    assert c.breaker.state == "closed"
    fake.fail_next(500, times=2)
    with pytest.raises(ProviderUnavailable):
        await c.request("GET", "/thing")
    assert c.breaker.state == "open"
    clock.now += 11
    fake.fail_next(500, times=2)
    with pytest.raises(ProviderUnavailable):
        await c.request("GET", "/thing")
    assert c.breaker.state == "open"
    await c.aclose()


def test_breaker_cancelled_probe_does_not_wedge() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 5, clock)
    b.failure()
    clock.now += 6
    b.before("x")  # probe admitted
    with pytest.raises(ServicePaused):
        b.before("x")  # a second caller waits for the probe
    b.abandon()
    b.before("x")  # after a cancelled probe, the next call may probe


async def test_deadline_cancels_hanging_call(fake: EchoFake) -> None:
    c = client(fake.base_url, deadline_s=0.2)
    fake.fail_next(mode="hang")
    with pytest.raises(ProviderUnavailable, match="in time"):
        await c.request("GET", "/thing")
    await c.aclose()


async def test_secret_never_in_logs(fake: EchoFake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = client(fake.base_url)
    fake.fail_next(500, times=2)
    with pytest.raises(ProviderUnavailable) as info:
        await c.request("GET", "/thing")
    await c.request("GET", "/thing")
    await c.aclose()
    assert SECRET not in caplog.text and SECRET not in repr(info.value)
    assert logging.getLogger("httpx").level == logging.WARNING


async def test_mock_transport_injection() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"via": "mock"})

    c = HttpClient(
        label="M",
        base_url="http://unused.invalid",
        policy=HttpPolicy(),
        transport=httpx.MockTransport(handler),
        sleep=asyncio.sleep,
    )
    resp = await c.request("GET", "/x")
    await c.aclose()
    assert await resp.json() == {"via": "mock"}


async def test_side_channel_calls_neither_trip_nor_consult_the_breaker(fake: EchoFake) -> None:
    clock = Clock()
    c = client(fake.base_url, clock=clock, breaker_threshold=1, breaker_reset_s=60)
    fake.fail_next(503, times=2)
    with pytest.raises(ProviderUnavailable):
        await c.request("GET", "/thing", side_channel=True)
    assert c.breaker.state == "closed"  # a failing progress poll pauses nobody
    fake.fail_next(503, times=2)
    with pytest.raises(ProviderUnavailable):
        await c.request("GET", "/thing")
    assert c.breaker.state == "open"
    clock.now += 61
    assert c.breaker.state == "half-open"
    await c.request("GET", "/thing", side_channel=True)  # does not use up the probe...
    assert c.breaker.state == "half-open"
    await c.request("GET", "/thing")  # ...which the real call gets
    assert c.breaker.state == "closed"
    await c.aclose()


async def test_retry_after_beyond_the_deadline_is_a_rate_limit_not_an_outage(
    fake: EchoFake,
) -> None:
    # Retry-After under the cap but past the call's deadline: fail now as RateLimited (the
    # service answered), instead of sleeping into the deadline and tripping the breaker.
    waits: list[float] = []
    c = client(fake.base_url, waits=waits, deadline_s=1, retry_after_cap_s=30, breaker_threshold=1)
    fake.fail_next(429, json={"message": "slow"}, headers={"Retry-After": "5"})
    with pytest.raises(RateLimited) as info:
        await c.request("POST", "/thing", json_body={})
    await c.aclose()
    assert waits == [] and info.value.retry_after == 5.0
    assert c.breaker.state == "closed"


async def test_connect_retries_zero_means_one_attempt() -> None:
    async with EchoFake() as f:
        url = f.base_url  # closed after the block: connection refused
    waits: list[float] = []
    c = client(url, waits=waits, connect_retries=0)
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        await c.request("POST", "/thing", json_body={})
    await c.aclose()
    assert waits == []


async def test_each_provider_says_which_5xx_a_post_may_retry(fake: EchoFake) -> None:
    # The default (Stability, OpenAI): the service failed and did not bill, so once more.
    default = client(fake.base_url)
    fake.fail_next(500)
    assert (await default.request("POST", "/thing", json_body={})).status == 200
    assert len(fake.requests) == 2
    await default.aclose()
    # Cerebrium: a 500 means the function ran and was billed; never sent twice.
    never = HttpClient(
        label="Fake",
        base_url=fake.base_url,
        policy=HttpPolicy.from_mapping({}, "providers.x", retry=RetryPolicy.never_post()),
    )
    fake.requests.clear()
    fake.fail_next(500)
    with pytest.raises(ProviderUnavailable):
        await never.request("POST", "/thing", json_body={})
    assert len(fake.requests) == 1
    # ... while a GET is still retried once (it cannot bill).
    fake.requests.clear()
    fake.fail_next(500)
    assert (await never.request("GET", "/thing")).status == 200
    assert len(fake.requests) == 2
    await never.aclose()


async def test_the_retry_statuses_are_a_setting(fake: EchoFake) -> None:
    c = client(fake.base_url, retry_post_statuses=[503])
    fake.fail_next(500)
    with pytest.raises(ProviderUnavailable):
        await c.request("POST", "/thing", json_body={})
    assert len(fake.requests) == 1
    fake.requests.clear()
    fake.fail_next(503)
    assert (await c.request("POST", "/thing", json_body={})).status == 200
    assert len(fake.requests) == 2
    await c.aclose()
    with pytest.raises(ConfigError, match=r"providers\.fake\.retry_post_statuses"):
        HttpPolicy.from_mapping({"retry_post_statuses": [404]}, "providers.fake")


async def test_check_failures_name_the_url_tried_and_the_cause() -> None:
    c = HttpClient(
        label="Stable Diffusion webui",
        base_url="http://127.0.0.1:9",
        policy=HttpPolicy.from_mapping({"connect_retries": 0}, "providers.x"),
    )
    with pytest.raises(CheckFailed) as info:
        await c.check("GET", "/sdapi/v1/samplers")
    assert info.value.url == "http://127.0.0.1:9/sdapi/v1/samplers"
    assert "ConnectError" in info.value.cause
    assert "unavailable right now" not in info.value.user_message  # not the chat apology
    assert isinstance(info.value.error, ProviderUnavailable)
    await c.aclose()
