"""The web playground: a shared channel view in the browser on the same core as chat.

``ADAPTER`` is what ``imagine-bot serve`` sees: enabled by ``web.enabled`` (default true); an
address other machines can reach is refused without an access token, before any data is
touched. aiohttp is imported only when the playground starts. Inside the package::

    access.py   who may use it and from where (loopback rule, token rule, guests' names)
    links.py    personal links: signed, reserved names, the secret in the data dir (pure)
    server.py   create_web_app(core), start(core, host, port), the sockets, the access guard
    routes.py   the HTTP routes: page, commands, uploads, gallery, lineage, images
    playground.py  the shared state: Reply -> JSON, delivery to pages, who is who, quota badge
    wire.py     Reply, gallery and lineage values -> the page's JSON; request helpers
    posting.py  the Responder of one request and the ChannelPoster the core posts through
    live.py     the open pages of each channel: deltas, coalesced frames, removals
    static/     the page: plain HTML, CSS and JS, no build step
"""

from __future__ import annotations

from adapters.web.access import check_bind
from bot.core import AdapterSpec, Core, Ready, Settings


def enabled(settings: Settings) -> bool:
    """On unless ``web.enabled = false``; raises ConfigError for an exposed, tokenless bind."""
    if not settings.web.enabled:
        return False
    check_bind(settings.web.host, settings.web.access_token)
    return True


async def serve(core: Core, settings: Settings, ready: Ready) -> None:
    """Serve the playground on ``web.host``:``web.port`` until cancelled."""
    from adapters.web import server

    await server.serve(core, settings, ready)


ADAPTER = AdapterSpec(name="web", enabled=enabled, serve=serve)

__all__ = ["ADAPTER", "enabled", "serve"]
