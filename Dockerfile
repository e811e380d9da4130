# skyfleet gateway image: `docker build -t skyfleet/gateway:0.1.0 .`
# Stage 1 builds a virtualenv with skyfleet and its Redis/PostgreSQL extras (wheels only);
# stage 2 copies just that venv onto a slim Python: no compiler, no pip cache, no source tree,
# running as uid 10001. Run it with `--config /etc/skyfleet/fleet.yaml` (deploy/k8s does).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ONLY_BINARY=:all:
WORKDIR /src
RUN python -m venv /opt/skyfleet
COPY pyproject.toml README.md ./
COPY src ./src
# PIP_ONLY_BINARY: every dependency must come as a wheel, so no build tools are needed here.
RUN /opt/skyfleet/bin/pip install --no-compile ".[redis,postgres]" \
 && /opt/skyfleet/bin/pip uninstall -y pip \
 && find /opt/skyfleet -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="skyfleet gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 skyfleet \
 && useradd --system --uid 10001 --gid skyfleet --home-dir /tmp --shell /usr/sbin/nologin skyfleet
COPY --from=build /opt/skyfleet /opt/skyfleet
ENV PATH=/opt/skyfleet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp \
    HOME=/tmp
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["skyfleet", "serve"]
CMD ["--config", "/etc/skyfleet/fleet.yaml"]
