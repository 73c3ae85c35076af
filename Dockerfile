# Vigil image: one image, every role. The role is the command:
#   docker run vigil scheduler | executor | sink clickhouse | sink status | api | migrate
#
# Two stages: the builder installs the package into a virtualenv at /opt/venv; the
# runtime stage copies only that virtualenv, so pip's build dependencies and any
# compiler stay out of the final image.
#
# Works with the classic builder (docker-compose 1.29 builds through docker-py) as
# well as BuildKit: no `RUN --mount`, no `# syntax=` line.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Cache-friendly: install the runtime dependencies from pyproject.toml alone first,
# so editing the sources does not re-download them (chdb alone is hundreds of MB).
# This layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install --upgrade pip setuptools wheel \
    && pip install -r /tmp/requirements.txt

# Then the package itself (setuptools needs the package directories and README.md).
COPY README.md ./
COPY engine ./engine
COPY scheduler ./scheduler
COPY executors ./executors
COPY sinks ./sinks
COPY api ./api
COPY vigil ./vigil
COPY migrations ./migrations
RUN pip install --no-deps . \
    && vigil --help > /dev/null


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="vigil" \
      org.opencontainers.image.description="Event-sourced uptime monitoring on Redis Streams, ClickHouse and Postgres" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIGIL_LOG_FORMAT=json

# A fixed, non-root uid/gid so volume permissions are predictable.
RUN groupadd --system --gid 10001 vigil \
    && useradd --system --uid 10001 --gid vigil --home-dir /var/lib/vigil \
       --create-home --shell /usr/sbin/nologin vigil

COPY --from=builder /opt/venv /opt/venv
# Example monitors, for `vigil monitors apply -f /opt/vigil/examples/monitors.yaml`.
COPY examples /opt/vigil/examples

USER vigil:vigil
# Writable working directory (`vigil up` keeps its data in ./.vigil).
WORKDIR /var/lib/vigil

EXPOSE 8080

# Exec form: vigil is PID 1 and receives SIGTERM itself (it drains and exits 0).
ENTRYPOINT ["vigil"]
CMD ["--help"]
