"""The web playground: a shared channel view in the browser on the same core as chat.

Entry points (imported lazily by ``imagine-bot serve``)::

    create_web_app(app) -> aiohttp.web.Application
    await serve(app, host, port, ready=None)     # runs until cancelled
"""

from __future__ import annotations

from adapters.web.server import create_web_app, serve

__all__ = ["create_web_app", "serve"]
