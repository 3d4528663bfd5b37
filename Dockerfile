# syntax=docker/dockerfile:1
# imagine-bot: the web playground, Discord and Slack on one core.
#
#   docker build -t imagine-bot .
#   docker run -p 8080:8080 -e WEB_ACCESS_TOKEN=... -v imagine:/data imagine-bot
#
# Stages: requirements (the dependency list, read from pyproject.toml, EXTRAS included) ->
# deps (a venv with only those, cached until the list changes) and wheel (the one stage that
# sees the source) -> the image: the deps venv plus the installed wheel, no source tree, a
# non-root user.
#
# The base is pinned by digest, so a rebuild gets the same Python and Debian. This digest is
# the multi-platform index of python:3.11-slim as recorded by docker-library's repo-info
# (repos/python/remote/3.11-slim.md; images built 2026-08-05, Python 3.11.15 on Debian
# trixie). It was read from that record, not pulled: no registry was reachable where this
# file was written, so check it before relying on it, and to move to a newer one take the
# "Digest:" line of `docker buildx imagetools inspect python:3.11-slim`.
# Any other base with python3.11 and venv on PATH works: --build-arg BASE=...
ARG BASE=python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

FROM ${BASE} AS requirements
# Optional extras to install as well, comma-separated: "postgres" (asyncpg, for store.url) by
# default, so one image serves SQLite and PostgreSQL; --build-arg EXTRAS= for none.
ARG EXTRAS=postgres
WORKDIR /build
COPY pyproject.toml ./
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; deps = p['dependencies'] + [d for e in os.environ.get('EXTRAS', '').split(',') if e.strip() for d in p['optional-dependencies'][e.strip()]]; print(*deps, sep='\n')" > requirements.txt

FROM ${BASE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Copied by content: editing pyproject.toml elsewhere than its dependencies keeps this layer.
COPY --from=requirements /build/requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/imagine-bot \
    && /opt/imagine-bot/bin/pip install -r /tmp/requirements.txt

FROM ${BASE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && cd /wheels && sha256sum *.whl > SHA256SUMS

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/imagine-bot/bin:$PATH \
    IMAGINE_BOT__DATA_DIR=/data \
    IMAGINE_WEB__HOST=0.0.0.0

RUN useradd --create-home --uid 10001 --user-group imagine \
    && mkdir -p /data && chown 10001:10001 /data

COPY --from=deps /opt/imagine-bot /opt/imagine-bot
# The wheel is bind-mounted for this one step, so no copy of it stays in a layer. Its checksum
# is copied first: a builder that keys the cache of a RUN on its own text and not on what it
# mounts (buildah) must still install the new wheel after a source edit.
COPY --from=wheel /wheels/SHA256SUMS /opt/imagine-bot/wheel.sha256
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    cd /wheels && sha256sum -c /opt/imagine-bot/wheel.sha256 \
    && pip install --no-index --no-deps /wheels/*.whl
COPY scripts/docker-healthcheck.py /opt/imagine-bot/healthcheck.py

USER 10001:10001
WORKDIR /home/imagine
VOLUME ["/data"]
EXPOSE 8080

# Binding beyond loopback needs WEB_ACCESS_TOKEN (docker run -e WEB_ACCESS_TOKEN=...).
# The probe follows the port the bot was given (IMAGINE_WEB__PORT, --config, serve --port)
# and, with web.enabled = false, checks that the bot still holds its data dir instead.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "/opt/imagine-bot/healthcheck.py"]

# Exec form: the bot is PID 1 and receives SIGTERM, so queued jobs are kept for the next start.
ENTRYPOINT ["imagine-bot"]
CMD ["serve"]
