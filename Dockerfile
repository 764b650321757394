# bpfailover: one image for the decider, the publisher, the actuator and the ops commands.
#   docker build -t bpfailover .
#   docker run --rm bpfailover bpfailover --help
#
# BASE_IMAGE: any image with Python 3.11 or newer (python3 -m venv), or a Debian/Ubuntu
# image without it, which then gets python3 and python3-venv from its own package mirror.
# scripts/compose-check builds with the local base it makes from the Debian mirror:
#   docker build --build-arg BASE_IMAGE=bpfailover-base:bookworm -t bpfailover .
#
# Wheels in deploy/docker/wheels/ (scripts/compose-check puts them there with `pip wheel`
# on the host) make the install offline: pip then reads them only, never an index. Without
# any, pip installs from PyPI.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/bpfailover/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

RUN if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /src
COPY deploy/docker/wheels /wheels
COPY pyproject.toml README.md ./
COPY bpfailover ./bpfailover
COPY broker ./broker
COPY publisher ./publisher
COPY decider ./decider
COPY actuator ./actuator
RUN python3 -m venv /opt/bpfailover \
    && if ls /wheels/*.whl >/dev/null 2>&1; then offline="--no-index --find-links /wheels"; else offline=""; fi \
    && /opt/bpfailover/bin/pip install $offline . \
    && rm -rf /src/build /wheels \
    && bpfailover --help >/dev/null

WORKDIR /deploy
# No ENTRYPOINT: compose.yaml spells out `bpfailover <subcommand> ...` for each service.
CMD ["bpfailover", "--help"]
