# syntax=docker/dockerfile:1
# campaign-fsm: `campaign-fsm run` in a small, non-root image. Configuration comes from
# CAMPAIGN_FSM_* environment variables and/or a file mounted at $CAMPAIGN_FSM_CONFIG
# (see docs/configuration.md); `docker run IMAGE config check` validates it.

# --- build: the project and its dependencies in a virtual environment --------------------------
FROM python:3.11.9-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/campaign-fsm
COPY pyproject.toml README.md ./
COPY fsm ./fsm
COPY adapters ./adapters
COPY schemas ./schemas
# A non-editable install: the runtime stage gets the installed package, never the sources.
RUN /opt/campaign-fsm/bin/pip install --no-cache-dir .

# --- runtime: no build tools, no sources, no root ------------------------------------------------
FROM python:3.11.9-slim-bookworm
ENV PATH=/opt/campaign-fsm/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CAMPAIGN_FSM_HTTP__HOST=0.0.0.0 \
    CAMPAIGN_FSM_HTTP__PORT=8081 \
    CAMPAIGN_FSM_OUTBOX_PATH=/var/lib/campaign-fsm/outbox.sqlite3
RUN groupadd --system --gid 10001 campaign \
    && useradd --system --uid 10001 --gid campaign --home-dir /var/lib/campaign-fsm --no-create-home campaign \
    && mkdir -p /var/lib/campaign-fsm \
    && chown campaign:campaign /var/lib/campaign-fsm
COPY --from=build /opt/campaign-fsm /opt/campaign-fsm
USER 10001:10001
WORKDIR /var/lib/campaign-fsm
# The durable outbox lives here: keep it across container restarts (one instance per volume).
VOLUME ["/var/lib/campaign-fsm"]
# /healthz, /readyz (ready once start-up reconciliation is done) and Prometheus /metrics.
EXPOSE 8081
# No curl in a slim image: the standard library asks /healthz (a 503 or no answer raises, exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CAMPAIGN_FSM_HTTP__PORT', '8081'), timeout=3)"]
# SIGTERM stops intake, finishes in-flight bookkeeping and flushes the producer; give it time
# (`docker stop --time 30`, Kubernetes terminationGracePeriodSeconds >= 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["campaign-fsm"]
CMD ["run"]
