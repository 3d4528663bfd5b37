"""The web playground: a shared channel view in the browser on the same core as chat.

Entry points (imported lazily by ``imagine-bot serve``)::

    create_web_app(app) -> aiohttp.web.Application
    await serve(app, host, port, ready=None)     # runs until cancelled
    check_bind(host, access_token)               # ConfigError when exposed without a token
"""

from __future__ import annotations

from adapters.web.server import check_bind, create_web_app, serve

__all__ = ["check_bind", "create_web_app", "serve"]
