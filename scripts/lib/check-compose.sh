#!/usr/bin/env bash
# Validate the Docker demo (docker/) without a Docker engine: CI machines have none,
# so the compose file is checked with `docker-compose config` (which parses and
# validates it, resolving paths and variables, without talking to a daemon), and the
# Dockerfile is checked to exist and to build eddy in release mode.
#
# `docker-compose` (v1, Python) comes from the Debian package when missing: Debian's
# archive is reachable from CI, Docker's own download sites are not. Exits non-zero on
# any failure. Safe with CI=true and no stdin.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
COMPOSE_FILE=docker/docker-compose.yml
DOCKERFILE=docker/Dockerfile

fail() { printf 'check-compose: %s\n' "$*" >&2; exit 1; }

if ! command -v docker-compose >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "docker-compose is missing and apt-get is not available to install it"
  # sudo only when not already root (CI runs as root and may have no sudo at all).
  SUDO=()
  if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null 2>&1 || fail "docker-compose is missing; installing it needs root or sudo"
    SUDO=(sudo -n)
  fi
  echo "check-compose: installing docker-compose (Debian package)" >&2
  # `apt-get update` first: on a fresh machine the package lists may be empty or old.
  # DEBIAN_FRONTEND=noninteractive and </dev/null: never wait for a prompt.
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose </dev/null >/dev/null
  command -v docker-compose >/dev/null 2>&1 || fail "docker-compose still missing after installing the package"
fi
echo "check-compose: $(docker-compose version --short 2>/dev/null || docker-compose version | head -n1)"

[ -f "$COMPOSE_FILE" ] || fail "$COMPOSE_FILE is missing"
# -q: validate only, print nothing on success. Relative paths in the file (build
# context `..`, the producer's bind mount) are resolved against docker/.
docker-compose -f "$COMPOSE_FILE" config -q </dev/null || fail "$COMPOSE_FILE does not validate"

# The services the demo README relies on must all be there.
services=$(docker-compose -f "$COMPOSE_FILE" config --services </dev/null)
for svc in kafka eddy producer; do
  printf '%s\n' "$services" | grep -qx "$svc" || fail "$COMPOSE_FILE has no '$svc' service"
done

[ -f "$DOCKERFILE" ] || fail "$DOCKERFILE is missing"
grep -q 'cargo build --release' "$DOCKERFILE" || fail "$DOCKERFILE does not run 'cargo build --release'"
[ -f docker/demo/producer.py ] || fail "docker/demo/producer.py (mounted by the producer service) is missing"

echo "check-compose: $COMPOSE_FILE and $DOCKERFILE are valid"
