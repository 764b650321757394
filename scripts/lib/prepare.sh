# Sourced by scripts/test and scripts/demo: get a fresh Debian/Ubuntu machine ready to run
# bpfailover from this checkout, and do nothing that is already done.
#
#   prepare_checkout SPEC     SPEC is what to pip-install into .venv: "." or ".[test]"
#
# 1. The Python: $PYTHON, else python3 on PATH; 3.11 or newer.
# 2. apt-get (with sudo when not root) what is missing: mosquitto, mosquitto-clients, and
#    python3-venv when that Python cannot create a virtual environment.
# 3. The project virtual environment .venv, created once, re-created when it is broken or
#    was made by another Python version.
# 4. pip install -e SPEC into it, skipped while .venv/.bpfailover-installed says that SPEC
#    is installed from this very pyproject.toml.
# Afterwards .venv/bin is first on PATH and VIRTUAL_ENV is set.

VENV=.venv
STAMP="$VENV/.bpfailover-installed"

say() { echo "== $*"; }
die() { echo "${0##*/}: $*" >&2; exit 1; }

choose_python() {
    PYTHON="${PYTHON:-python3}"
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        if [ "$PYTHON" = python3 ]; then
            apt_install python3
        else
            die "PYTHON=$PYTHON: no such command"
        fi
    fi
    PYTHON="$(command -v "$PYTHON")"
    PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
        || die "$PYTHON does not run"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "bpfailover needs Python 3.11 or newer; $PYTHON is $PY_VERSION (set PYTHON=/path/to/python3.11 or newer)"
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || die "missing: $*; install them with your system's package manager (no apt-get here)"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing: $*; as root, run: apt-get install -y $*"
        sudo=(sudo)
    fi
    say "installing $* (apt-get)"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

have() {
    # Debian puts mosquitto in /usr/sbin, which is often not on a user's PATH.
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]
}

venv_works() {
    [ -x "$VENV/bin/python" ] \
        && [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PY_VERSION" ] \
        && "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}

install_system_packages() {
    local missing=()
    have mosquitto || missing+=(mosquitto)
    have mosquitto_pub || missing+=(mosquitto-clients)
    # Debian and Ubuntu ship venv's ensurepip separately, in python3.X-venv.
    if ! venv_works && ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
        if [ "$PY_VERSION" = "$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" ]; then
            missing+=(python3-venv)
        else
            missing+=("python$PY_VERSION-venv")
        fi
    fi
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

make_venv() {
    venv_works && return
    say "creating $VENV with $PYTHON ($PY_VERSION)"
    "$PYTHON" -m venv --clear "$VENV" || die "could not create $VENV with $PYTHON"
}

install_package() {
    local spec="$1" want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $spec"
    if [ -f "$STAMP" ] && grep -qxF "$want" "$STAMP"; then return; fi
    say "installing bpfailover ($spec) into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
    # .[test] includes ., so a demo after the tests installs nothing.
    { echo "$want"; [ "$spec" = "." ] || echo "${want% *} ."; } >"$STAMP"
}

prepare_checkout() {
    choose_python
    install_system_packages
    make_venv
    install_package "$1"
    export VIRTUAL_ENV="$PWD/$VENV"
    export PATH="$VIRTUAL_ENV/bin:$PATH"
}
