"""Fake image services on loopback, reached through the real httpx client.

Every fake is an aiohttp app started on 127.0.0.1, port 0::

    async with StabilityFake() as fake:
        provider = StabilityProvider(settings_for(fake.base_url))
        fake.fail_next(status=429, json={...}, headers={"Retry-After": "1"})
        ...
        assert len(fake.requests) == 2

Fakes check requests strictly (path, method, auth, content type, fields, ranges). A request
that breaks the contract gets the service's real 400/422 body *and* is appended to
``fake.violations``, so a test can assert both the error mapping and that we obeyed the
contract. ``fail_next`` queues a scripted answer for the next request (optionally only for a
path containing ``path``): a status with a JSON or raw body and headers, or a misbehaviour:
``"hang"`` (never answers), ``"endless"`` (headers, then a body that never ends),
``"truncated"`` (Content-Length larger than what is sent, then the connection drops),
``"malformed"`` (200 with a body that is not JSON).
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import BodyPartReader, web

Mode = Literal["normal", "hang", "endless", "truncated", "malformed"]


def make_png(tag: str = "", width: int = 8, height: int = 8) -> bytes:
    """A tiny valid PNG (grey pixels) with ``tag`` in a tEXt chunk, so images differ."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"tEXt", b"tag\x00" + tag.encode())
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)  # name, data, type
    form_keys: list[str] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


@dataclass
class Fault:
    status: int = 500
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    mode: Mode = "normal"
    path: str | None = None


class ContractViolation(Exception):
    """Raised inside a fake handler: answered with the service's validation error."""

    def __init__(self, message: str, status: int = 400, name: str = "bad_request") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.name = name


Handler = Callable[[web.Request, RecordedRequest], Awaitable[web.StreamResponse]]


class FakeServer:
    """Base: routing, recording, scripted faults. Subclasses add routes in ``routes()``.

    ``unfaulted_paths``: routes a fault without a ``path`` skips (a side channel such as a
    WebSocket that a test scripting "the next request" does not mean)."""

    unfaulted_paths: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self._faults: list[Fault] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.port = 0  # set before entering to listen on a given port (a server coming back)
        self._hang = asyncio.Event()

    # ------------------------------------------------------------------- to override
    def routes(self) -> list[tuple[str, str, Handler]]:
        raise NotImplementedError

    def violation_response(
        self, request: web.Request, exc: ContractViolation
    ) -> web.StreamResponse:
        return web.json_response({"error": exc.message}, status=exc.status)

    # --------------------------------------------------------------------- scripting
    def fail_next(
        self,
        status: int = 500,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        mode: Mode = "normal",
        path: str | None = None,
        times: int = 1,
    ) -> None:
        for _ in range(times):
            self._faults.append(Fault(status, json, body, dict(headers or {}), mode, path))

    def requests_to(self, fragment: str) -> list[RecordedRequest]:
        return [r for r in self.requests if fragment in r.path]

    # ---------------------------------------------------------------------- plumbing
    async def __aenter__(self) -> FakeServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, self._wrap(handler))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._hang.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> RecordedRequest:
        rec = RecordedRequest(
            request.method, request.path, dict(request.query), dict(request.headers)
        )
        ctype = request.content_type
        if ctype == "multipart/form-data":
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue  # nested multipart: no service here sends one
                name = part.name or ""
                data = await part.read()
                rec.form_keys.append(name)
                if part.filename:
                    rec.files[name] = (
                        part.filename,
                        bytes(data),
                        part.headers.get("Content-Type", ""),
                    )
                else:
                    rec.form[name] = bytes(data).decode()
        else:
            rec.body = await request.read()
            if ctype == "application/json" and rec.body:
                try:
                    rec.json = json.loads(rec.body)
                except ValueError:
                    rec.json = None
        return rec

    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            rec = await self._record(request)
            self.requests.append(rec)
            fault = self._take_fault(f"{request.method} {request.path}")
            if fault is not None:
                return await self._apply(fault, request)
            try:
                return await handler(request, rec)
            except ContractViolation as exc:
                self.violations.append(f"{request.method} {request.path}: {exc.message}")
                return self.violation_response(request, exc)

        return wrapped

    def _take_fault(self, path: str) -> Fault | None:
        """``path`` is "METHOD /path": a fault's path may name the method too ("POST /x")."""
        for i, f in enumerate(self._faults):
            if (f.path is None and path not in self.unfaulted_paths) or (
                f.path is not None and f.path in path
            ):
                return self._faults.pop(i)
        return None

    async def _apply(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        if fault.mode == "hang":
            await self._hang.wait()
            return web.Response(status=503)
        if fault.mode == "endless":
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(b'{"artifacts": [')
            while not self._hang.is_set():
                try:
                    await resp.write(b" " * 1024)
                except (ConnectionError, RuntimeError):
                    break
                await asyncio.sleep(0.001)
            return resp
        if fault.mode == "truncated":
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = 10_000
            await resp.prepare(request)
            await resp.write(b'{"images": ["iVBORw0KGgo')
            if request.transport is not None:
                request.transport.close()
            return resp
        if fault.mode == "malformed":
            return web.Response(
                status=200,
                body=b'{"oops": <html>',
                headers={"Content-Type": "application/json", **fault.headers},
            )
        if fault.json is not None:
            return web.json_response(fault.json, status=fault.status, headers=fault.headers)
        return web.Response(status=fault.status, body=fault.body or b"", headers=fault.headers)


def require(cond: bool, message: str, status: int = 400, name: str = "bad_request") -> None:
    if not cond:
        raise ContractViolation(message, status, name)


__all__ = [
    "ContractViolation",
    "FakeServer",
    "Fault",
    "RecordedRequest",
    "make_png",
    "require",
]
