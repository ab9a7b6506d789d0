#!/usr/bin/env bash
# Installs what the test suites need beyond Rust, idempotently:
#   - Debian packages (only when one is actually missing: `apt-get update` runs
#     only then),
#   - a Python virtualenv at <repo>/.venv with the exact versions pinned in
#     ci/requirements.txt (netapp-ontap, requests, pytest and their deps).
# Runnable as root on a fresh Debian 12 machine with Rust and Python 3.11, and
# cheap to re-run: a second run changes nothing and needs no network.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/ci/requirements.txt"
PYTHON="${PYTHON:-python3}"

log() { printf '[ci/install] %s\n' "$*"; }

# ---------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------
# Add packages needed by later suites here, one per line. They are installed
# only when dpkg says they are missing.
APT_PACKAGES=(
    mariadb-server     # real MariaDB (mariadbd, mariadb-install-db) for the application-consistency suites
    postgresql         # real PostgreSQL (initdb, postgres) for the PostgreSQL plugin suite
    chromium           # headless browser for the dashboard test
    fuse3              # FUSE mounts of simulated volumes (fusermount3; ontap-sim's `fuse` feature)
)

# `python3 -m venv` needs ensurepip, which Debian ships separately in
# python3-venv; only ask for it when the python3 in use lacks it.
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    APT_PACKAGES+=(python3-venv)
fi

apt_missing=()
for pkg in "${APT_PACKAGES[@]+"${APT_PACKAGES[@]}"}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        apt_missing+=("$pkg")
    fi
done

if [ "${#apt_missing[@]}" -eq 0 ]; then
    log "apt: nothing missing (${#APT_PACKAGES[@]} package(s) required)"
else
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            log "apt: missing ${apt_missing[*]} and not root (no sudo): install them first" >&2
            exit 1
        fi
    fi
    log "apt: installing missing package(s): ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]+"${SUDO[@]}"}" apt-get update -q
    "${SUDO[@]+"${SUDO[@]}"}" apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
fi

# ---------------------------------------------------------------------------
# Python virtualenv
# ---------------------------------------------------------------------------
venv_ok() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c 'import sys, pip; sys.exit(0 if sys.prefix != sys.base_prefix else 1)' \
            >/dev/null 2>&1
}

if venv_ok; then
    log "venv: reusing $VENV ($("$VENV/bin/python" --version 2>&1))"
else
    if [ -e "$VENV" ]; then
        log "venv: $VENV is missing pieces or broken; recreating it"
        rm -rf "$VENV"
    else
        log "venv: creating $VENV"
    fi
    "$PYTHON" -m venv "$VENV"
    log "venv: created with $("$VENV/bin/python" --version 2>&1)"
fi

# Are all pins already satisfied? (Saves a pip run, and the network, on re-runs.)
pins_satisfied() {
    "$VENV/bin/python" - "$REQUIREMENTS" <<'PY'
import re
import sys
from importlib import metadata

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

installed = {norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
missing = []
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        have = installed.get(norm(name.strip()))
        if have != version.strip():
            missing.append(f"{name.strip()}=={version.strip()} (have {have or 'none'})")
if missing:
    print("; ".join(missing))
    sys.exit(1)
PY
}

if why="$(pins_satisfied)"; then
    log "pip: every pin in ci/requirements.txt is already installed"
else
    log "pip: installing pinned requirements (${why})"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        -r "$REQUIREMENTS"
    pins_satisfied >/dev/null
    log "pip: installed"
fi

log "ready: $("$VENV/bin/python" -c 'import netapp_ontap, requests, pytest; print("netapp-ontap", netapp_ontap.__version__, "| requests", requests.__version__, "| pytest", pytest.__version__)')"
