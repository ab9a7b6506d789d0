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
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary, the last of which
# is often an empty doc-test run).
awk '/^test result: /{for(i=1;i<=NF;i++){if($(i+1) ~ /^passed;?$/)p+=$i; if($(i+1) ~ /^failed;?$/)f+=$i}} END{printf "%d passed, %d failed\n", p, f}' "$log"
exit "$status"
