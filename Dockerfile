# imagine-bot: the web playground, Discord and Slack on one core.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    IMAGINE_BOT__DATA_DIR=/data \
    IMAGINE_WEB__HOST=0.0.0.0

RUN useradd --create-home --uid 10001 imagine \
    && mkdir -p /data && chown imagine:imagine /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY config ./config
RUN pip install --no-cache-dir .

USER imagine
VOLUME ["/data"]
EXPOSE 8080

# Binding beyond loopback needs WEB_ACCESS_TOKEN (docker run -e WEB_ACCESS_TOKEN=...).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

# Exec form: the bot is PID 1 and receives SIGTERM, so queued jobs are kept for the next start.
ENTRYPOINT ["imagine-bot"]
CMD ["serve"]
