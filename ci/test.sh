#!/usr/bin/env bash
# The project's test command: installs the test tooling (ci/install.sh), then
# runs every Rust test in the workspace. The Rust integration test
# tests/tests/conformance.rs drives the ONTAP simulator with NetApp's official
# Python client through .venv/bin/python -m pytest tests/conformance.
# Exit status is cargo's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# rustup installs cargo under ~/.cargo/bin; a non-login shell may not have it.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

bash ci/install.sh

echo "[ci/test] cargo test --workspace --locked"
exec cargo test --workspace --locked
