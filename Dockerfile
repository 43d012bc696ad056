# syntax=docker/dockerfile:1
#
# runyard with the scale-out backends (asyncpg, redis) and OpenTelemetry export
# (exporting only when OTEL_EXPORTER_OTLP_ENDPOINT is set), as one image for every
# role: `runyard demo` by default; docker-compose.yml runs the same image as
# API processes (`runyard serve APP --role api`) and workers (`runyard worker APP`).
#
#   docker build -t runyard .
#   docker run --rm -p 8000:8000 runyard          # the demo on http://127.0.0.1:8000

# -- build: install runyard and its dependencies into a virtualenv ------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the wheel is built from (hatchling also reads the README, for the
# package's long description): a change to the tests or docs rebuilds nothing.
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/runyard \
 && /opt/runyard/bin/pip install ".[postgres,redis,otel]"

# -- runtime: the virtualenv only, run by an unprivileged user ----------------------
FROM python:3.11-slim

# The same path as in the build stage, so the virtualenv's scripts keep working.
COPY --from=build /opt/runyard /opt/runyard

RUN groupadd --system --gid 10001 runyard \
 && useradd --system --uid 10001 --gid runyard --home-dir /app --create-home --shell /usr/sbin/nologin runyard

ENV PATH=/opt/runyard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A container's loopback is unreachable from outside it: every command binds all
# interfaces unless told otherwise (`runyard serve` and `runyard worker` too).
ENV RUNYARD_HOST=0.0.0.0

# `runyard demo` keeps its SQLite file (./runyard.db) here; the fleet keeps
# nothing on disk (PostgreSQL holds runs and events).
WORKDIR /app
USER runyard

EXPOSE 8000

# Liveness only (/healthz: the process answers). Readiness (/readyz: the store
# and the broker answer) is what docker-compose.yml checks before routing to it.
# python:3.11-slim has no curl; the standard library is enough.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RUNYARD_PORT', '8000'), timeout=4)"]

# Exec form: runyard is PID 1 and receives SIGTERM itself, so `docker stop`
# drains it (RUNYARD_DRAIN_S) instead of killing it.
CMD ["runyard", "demo", "--host", "0.0.0.0"]
