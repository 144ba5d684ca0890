#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, postgres) are installed: the
# differential tests use PostgreSQL as their oracle. Installs the Debian package when
# missing (as root, non-interactively).
set -euo pipefail
have_pg() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then return 0; fi
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if have_pg; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing PostgreSQL (Debian package) for the differential tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  have_pg && exit 0
fi
echo "PostgreSQL server binaries are missing; install the 'postgresql' package" >&2
exit 1
