# bpfailover: one image for the decider, the publisher, the actuator and the ops commands.
#   docker build -t bpfailover .
#   docker run --rm bpfailover bpfailover --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bpfailover ./bpfailover
COPY broker ./broker
COPY publisher ./publisher
COPY decider ./decider
COPY actuator ./actuator
RUN pip install . && rm -rf /src/build

WORKDIR /deploy
# No ENTRYPOINT: compose.yaml spells out `bpfailover <subcommand> ...` for each service.
CMD ["bpfailover", "--help"]
