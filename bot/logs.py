"""The log: one stderr handler, every secret value replaced by ``***`` (split out of
:mod:`bot.cli`, which re-exports both names)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping

from bot.config import Settings
from bot.doctor import secret_env_names
from bot.storage.url import password_of


class RedactSecrets(logging.Filter):
    """Replaces every configured secret value in a log record with ``***``."""

    def __init__(self, env: Mapping[str, str], extra: Iterable[str | None] = ()) -> None:
        super().__init__()
        values = sorted(
            {env[k] for k in secret_env_names() if env.get(k) and len(env[k]) >= 6}
            | {v for v in extra if v and len(v) >= 6},
            key=len,
            reverse=True,
        )
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is not None:
            message = record.getMessage()
            redacted = self._pattern.sub("***", message)
            if redacted != message:
                record.msg, record.args = redacted, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self._pattern.sub(
                    "***", logging.Formatter().formatException(record.exc_info)
                )
        return True


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # store.url's password, wherever the URL was set (a file or IMAGINE_STORE__URL).
    handler.addFilter(RedactSecrets(settings.env, [password_of(settings.store.url)]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.bot.log_level.upper())
    # httpx logs full URLs at INFO; keep it quiet so nothing sensitive lands in the log.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


__all__ = ["RedactSecrets", "setup_logging"]
