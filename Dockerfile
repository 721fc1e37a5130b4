# The app image of docker-compose.yml: the demo project served by uvicorn, whose writes wait for
# the client, so one that stops reading is dropped after WRITE_TIMEOUT (daphne would buffer for
# it without limit; see deploy/README.md). Build: docker build -t django-stream-llm .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so that editing the project does not reinstall them. README.m[d]: the
# glob copies the README when there is one (pyproject names it) and does not fail otherwise.
COPY pyproject.toml README.m[d] ./
COPY stream_app ./stream_app
# The extras of what runs here: the metrics endpoint, the Redis backend docker-compose.yml
# selects (STREAM_BACKEND=redis), the demo's model and uvicorn (server).
RUN pip install ".[metrics,redis,server]"

# The demo project is not part of the package: it runs from /app.
COPY manage.py ./
COPY project ./project
COPY templates ./templates
COPY static ./static

# An unprivileged user; /data holds the SQLite file (the compose "data" volume).
RUN useradd --system --uid 10001 --home-dir /app app \
    && mkdir /data && chown app /data
USER app

ENV PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=project.settings \
    DJANGO_DB_PATH=/data/db.sqlite3 \
    DJANGO_DEBUG=0

EXPOSE 8000
# "--lifespan on": stream_app ends streams gracefully on SIGTERM. "--proxy-headers": the client's
# address and scheme from X-Forwarded-*, trusted from FORWARDED_ALLOW_IPS only (uvicorn's
# default: 127.0.0.1; docker-compose.yml trusts its nginx).
CMD ["uvicorn", "project.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--lifespan", "on", "--timeout-graceful-shutdown", "10", "--proxy-headers", "--no-access-log"]
