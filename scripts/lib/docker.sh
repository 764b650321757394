# Sourced (after prepare.sh) by scripts/compose-check and .ci/docker: a Docker engine and a
# compose command, installing what is missing with apt-get, and stopping only what was
# started here.
#
#   install_docker_tools   docker CLI and a compose (v2 plugin, else docker-compose 1.29);
#                          sets COMPOSE_CMD (override: COMPOSE="docker compose")
#   start_engine           the running engine, else (as root) dockerd $BPF_DOCKERD_ARGS,
#                          default --storage-driver=vfs (works where overlayfs does not,
#                          e.g. inside a container); sets DOCKERD_PID when it started one
#   stop_engine            stops that dockerd, and nothing else

DOCKERD_ARGS="${BPF_DOCKERD_ARGS---storage-driver=vfs}"
DOCKERD_LOG="${BPF_DOCKERD_LOG:-${TMPDIR:-/tmp}/bpfailover-dockerd.log}"
DOCKERD_PID=""
COMPOSE_CMD=()

as_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (run as root, or start a Docker engine yourself)"
}

install_docker_tools() {
    local missing=()
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    if [ -z "${COMPOSE:-}" ] && ! docker compose version >/dev/null 2>&1 \
        && ! command -v docker-compose >/dev/null 2>&1; then
        missing+=(docker-compose)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
    if [ -n "${COMPOSE:-}" ]; then
        read -r -a COMPOSE_CMD <<<"$COMPOSE"
    elif docker compose version >/dev/null 2>&1; then
        COMPOSE_CMD=(docker compose)
    else
        COMPOSE_CMD=(docker-compose)
    fi
}

engine_up() { docker info >/dev/null 2>&1; }

engine_name() { docker info --format '{{.ServerVersion}}, storage {{.Driver}}' 2>/dev/null; }

start_engine() {
    if engine_up; then
        say "Docker engine: already running ($(engine_name))"
        return
    fi
    as_root "starting a Docker engine"
    have dockerd || apt_install docker.io
    say "starting dockerd $DOCKERD_ARGS (log: $DOCKERD_LOG)"
    # Its own session: a Ctrl-C on the script must not stop the engine before the teardown.
    # shellcheck disable=SC2086
    setsid dockerd $DOCKERD_ARGS >"$DOCKERD_LOG" 2>&1 </dev/null &
    DOCKERD_PID=$!
    local deadline=$((SECONDS + 60))
    until engine_up; do
        kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$DOCKERD_LOG" >&2; DOCKERD_PID=""; die "dockerd exited"; }
        [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$DOCKERD_LOG" >&2; die "dockerd not ready after 60 s"; }
        sleep 0.5
    done
    say "Docker engine: started, pid $DOCKERD_PID ($(engine_name))"
}

stop_engine() {
    [ -n "$DOCKERD_PID" ] || return 0
    say "stopping dockerd (pid $DOCKERD_PID, started here)"
    kill -TERM "$DOCKERD_PID" 2>/dev/null || { DOCKERD_PID=""; return 0; }
    local deadline=$((SECONDS + 30))
    while kill -0 "$DOCKERD_PID" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -KILL "$DOCKERD_PID" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    DOCKERD_PID=""
}
