# One image for every server-side service (the desktop agent is not in it: it installs with
# `pip install 'desktrace[agent]'` on the workstation). Pick the service with the command:
#   desktrace-stream | desktrace-sink raw | desktrace-sink sessions | desktrace-gateway | desktrace-report ...
# Multi-stage: wheels are built in the first stage; the runtime stage has no compiler and runs as non-root
# with a read-only root filesystem (writable /tmp and /var/lib/desktrace come from volumes).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY common ./common
COPY stream ./stream
COPY sinks ./sinks
COPY gateway ./gateway
COPY reports ./reports
COPY devstack ./devstack
COPY agent ./agent
RUN pip wheel --wheel-dir /wheels '.[stream,sinks,gateway,reports]'

FROM python:3.11.14-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DESKTRACE_STREAM_DATA_DIR=/var/lib/desktrace/stream
RUN groupadd --system --gid 10001 desktrace \
 && useradd --system --uid 10001 --gid desktrace --home-dir /var/lib/desktrace --shell /usr/sbin/nologin desktrace \
 && mkdir -p /var/lib/desktrace && chown desktrace:desktrace /var/lib/desktrace
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels 'desktrace[stream,sinks,gateway,reports]' && rm -rf /wheels
USER 10001:10001
WORKDIR /var/lib/desktrace
EXPOSE 8080 9464 9465 6066
ENTRYPOINT []
CMD ["desktrace-gateway"]
