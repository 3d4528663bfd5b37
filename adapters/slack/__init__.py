"""The Slack adapter (slack-bolt, asyncio): slash commands, buttons and modals on the core.

Entry points (imported lazily by ``imagine-bot serve``)::

    enabled(settings) -> bool                      # SLACK_BOT_TOKEN is set
    build_bolt_app(app, client=None) -> AsyncApp   # listeners + the "slack" channel poster
    await serve(app, ready=None)                   # Socket Mode or HTTP; runs until cancelled

Environment: SLACK_BOT_TOKEN (required), SLACK_SIGNING_SECRET (HTTP mode), SLACK_APP_TOKEN
(Socket Mode), SLACK_PORT / SLACK_HOST (HTTP mode, default 0.0.0.0:3000), SLACK_API_URL (a
proxy or a test fake in place of https://slack.com/api/).
"""

from __future__ import annotations

from adapters.slack.adapter import (
    SlackPoster,
    SlackResponder,
    build_bolt_app,
    create_web_app,
    enabled,
    serve,
)

__all__ = [
    "SlackPoster",
    "SlackResponder",
    "build_bolt_app",
    "create_web_app",
    "enabled",
    "serve",
]
