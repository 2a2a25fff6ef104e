# syntax=docker/dockerfile:1
# langrun's image: `docker run -p 8000:8000 -e SECRET_KEY=... langrun` starts the web server and a worker cluster
# on the embedded default (data in the /data volume); with DATABASE_URL and REDIS_URL, run `langrun web` and
# `langrun worker` as separate containers (compose.yaml).

# Build stage: the package's wheel and its pinned dependencies' wheels.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml requirements.txt README.md ./
COPY langrun ./langrun
COPY flows ./flows
COPY webhooks ./webhooks
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Run stage: the installed package only, no build tools and no source tree.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANGRUN_HOME=/data \
    STATIC_ROOT=/app/static \
    HOST=0.0.0.0 \
    PORT=8000
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home --shell /usr/sbin/nologin langrun
COPY --from=build /wheels /wheels
# The admin's static files are collected into the image, so that web containers share nothing but the database.
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/langrun-*.whl \
    && rm -rf /wheels \
    && SECRET_KEY=collectstatic-only LANGRUN_HOME=/tmp/langrun langrun collectstatic --noinput -v0 \
    && rm -rf /tmp/langrun
WORKDIR /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# Ready: database, cache, broker, and a worker cluster seen lately (503 otherwise). A web-only container of a
# deployment whose workers are down reports unhealthy too; `/health` is the liveness check that needs no worker.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health_check' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["langrun", "serve"]
