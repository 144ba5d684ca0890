#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds eddy, runs the unit tests, the
# integration tests (sqllogictest files, protocol, durability), then the real-client
# suites (psql, psycopg, node-postgres), the Kafka tests against a real broker (Tansu),
# the Docker Compose check and the differential test against PostgreSQL. Installs what
# those need (Python and Node packages, the broker, PostgreSQL, docker-compose) into
# .cache/ or from Debian packages. Safe to run repeatedly; CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export EDDY_CACHE_DIR="${EDDY_CACHE_DIR:-$ROOT/.cache}"
export EDDY_BIN="$CARGO_TARGET_DIR/debug/eddy"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$EDDY_CACHE_DIR"

failed=()
section() { printf '\n==== %s ====\n' "$*"; }
run() {
  local name=$1; shift
  section "$name"
  local start=$SECONDS
  if "$@"; then
    echo "---- $name: ok ($((SECONDS - start))s)"
  else
    echo "---- $name: FAILED ($((SECONDS - start))s)"
    failed+=("$name")
  fi
}

section "build"
cargo build --bins --tests

run "unit tests" cargo test --lib
run "sqllogictest (sql-tests/**/*.slt)" cargo test --test sqllogictest
run "protocol, durability, subscriptions and event time" cargo test --test protocol --test durability --test subscribe --test event_time
kafka() { EDDY_TANSU_BIN=$(scripts/lib/ensure-tansu.sh) && export EDDY_TANSU_BIN && cargo test --test kafka; }
run "Kafka (a real broker: Tansu)" kafka
recovery() { EDDY_TANSU_BIN=$(scripts/lib/ensure-tansu.sh) && export EDDY_TANSU_BIN && scripts/lib/ensure-postgres.sh && cargo test --test recovery; }
run "recovery after kill -9 (Kafka, PostgreSQL oracle)" recovery
run "Docker Compose file (docker-compose config)" scripts/lib/check-compose.sh
if [ -x tests/clients/run.sh ] || [ -f tests/clients/run.sh ]; then
  run "real clients (psql, psycopg, node-postgres)" bash tests/clients/run.sh
fi
differential() { scripts/lib/ensure-postgres.sh && cargo test --test differential --test windows_differential; }
run "differential vs PostgreSQL" differential

section "summary"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "all test suites passed"
