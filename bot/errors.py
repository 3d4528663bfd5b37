"""Errors the core raises on purpose.

Two tiers (see STYLE.md §6)::

    UserError                  a message fit to show to the person who acted
    ├── GrammarError           bad /imagine input (bot.grammar)
    ├── QuotaExceeded          not enough quota left in a window
    ├── QueueFull              per-user queue cap reached
    ├── NotAllowed             the clicker may not press this button
    ├── JobNotFound            unknown or deleted job, malformed button id
    └── Unsupported            the provider cannot do what was asked
    ConfigError                bad settings, raised at start naming the key
    ├── AlreadyRunning         another imagine-bot runs jobs on this data dir (bot.app)
    └── StoreUnavailable       store.url's database cannot be reached or used
    DeliveryError              a platform refused or failed a post, edit or delete (adapters
                               raise it from their ChannelPoster; bot.delivery retries it)

Anything else is a bug: it is logged with its traceback and the user gets a short apology with
a reference id, never ``str(exc)``.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message is written for the person who acted."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class GrammarError(UserError):
    pass


class QuotaExceeded(UserError):
    pass


class QueueFull(UserError):
    pass


class NotAllowed(UserError):
    pass


class JobNotFound(UserError):
    pass


class Unsupported(UserError):
    pass


class ConfigError(Exception):
    """Bad settings; the message names the offending key."""


class AlreadyRunning(ConfigError):
    """Another process holds this data dir's runner lock. A ConfigError, since a second data
    dir is one way out, but its own class so the CLI can say what to do instead."""


class StoreUnavailable(ConfigError):
    """The database ``store.url`` names cannot be opened (nothing listens, the password or the
    database name is wrong): one line, the URL's password masked."""


class DeliveryError(Exception):
    """A platform call of a :class:`~bot.types.ChannelPoster` failed.

    ``permanent`` when retrying cannot help (the channel is gone or archived, the bot was
    removed, a message that no longer exists); else the outbox retries with backoff, no sooner
    than ``retry_after`` seconds when the platform said so (HTTP 429 ``Retry-After``).
    ``reason`` is a short, secret-free description for the log, Info and ``doctor``.
    """

    def __init__(
        self, reason: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after
