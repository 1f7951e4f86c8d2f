# syntax=docker/dockerfile:1
#
# flavor-scheduler container image.
#
#   docker build -t flavor-scheduler .
#   docker run --rm -e DATABASE_URL=postgresql://... -p 9464:9464 flavor-scheduler
#
# Two stages: the builder creates a virtual environment and installs the locked
# dependencies into it (hash-checked, wheels only, so no compiler is needed), then
# the project itself without dependencies. The runtime stage copies only that
# virtual environment onto a fresh base image and runs it as an unprivileged user.
#
# The base image is pinned to an exact Python patch release. To also pin it by
# digest, append "@sha256:..." as printed by
# `docker buildx imagetools inspect python:<tag>` (the multi-platform index digest).
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/flavor-scheduler/.venv \
    PATH=/opt/flavor-scheduler/.venv/bin:$PATH

RUN python -m venv "$VIRTUAL_ENV"

WORKDIR /src

# Dependencies first, on their own layer: it is rebuilt only when the lock changes.
# requirements.lock carries a hash for every file, so pip refuses anything else.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps \
        -r requirements.lock

# Then the project, without dependencies: everything it needs is already locked in.
# The smoke test imports the whole program and checks the base image's time zone data
# (the runtime stage has the same base).
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler
RUN pip install --no-cache-dir --no-deps . \
 && pip check \
 && flavor-scheduler --version \
 && python -c "import zoneinfo; zoneinfo.ZoneInfo('Australia/Perth')"


FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

LABEL org.opencontainers.image.title="flavor-scheduler" \
      org.opencontainers.image.description="Background jobs of the Flavor Entertainers booking platform" \
      org.opencontainers.image.source="https://github.com/flavor-entertainers/flavor-scheduler"

# A system account with no home and no login shell; the daemon writes nothing to disk.
RUN groupadd --system --gid "${APP_GID}" flavor \
 && useradd --system --uid "${APP_UID}" --gid flavor \
        --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin flavor

COPY --from=builder /opt/flavor-scheduler/.venv /opt/flavor-scheduler/.venv

ENV PATH=/opt/flavor-scheduler/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=9464

# The daemon reads a .env file from its working directory: an empty, root-owned
# directory means only what the orchestrator passes in the environment counts
# (mount a file at /app/.env to use one).
WORKDIR /app

USER ${APP_UID}:${APP_GID}

EXPOSE 9464

# SIGTERM: no new run starts, running jobs finish the item in hand and the process
# exits 0 within SHUTDOWN_TIMEOUT_SECONDS (30 s). Give the container runtime a stop
# timeout above that (docker run --stop-timeout 45, compose stop_grace_period: 45s).
STOPSIGNAL SIGTERM

# No curl in the slim image: the interpreter is already there. /healthz answers 200
# while the process and its scheduler loop are alive; any other answer, a refused
# connection or a timeout raises, and the exit status is then 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HTTP_PORT', '9464') + '/healthz', timeout=4)"]

ENTRYPOINT ["flavor-scheduler"]
