#!/usr/bin/env bash
# Real-client test suite for eddy: scripted psql, Python psycopg 3 and Node.js pg.
#
#   bash tests/clients/run.sh [psql] [python] [node]     (default: all three)
#
# Environment:
#   EDDY_BIN        eddy binary (default: ${CARGO_TARGET_DIR:-target}/debug/eddy, relative
#                   to the repository root)
#   EDDY_CACHE_DIR  where the Python venv and node_modules live (default: <repo>/.cache)
#   EDDY_CLIENTS_UPDATE=1   rewrite tests/clients/psql/expected/*.out from the actual
#                   output, except for scripts marked `-- known eddy bug:` (their expected
#                   output is what Postgres prints); =all rewrites those too
#   EDDY_CLIENTS_KNOWN_BUGS=xfail   report the tests of known eddy bugs (psql scripts
#                   marked `-- known eddy bug:`, psycopg tests named *_bug, node tests
#                   with a bug note) as `xfail` instead of failures; such a test that
#                   passes is a failure (XPASS), so the marker goes once the bug is fixed
#   EDDY_CLIENTS_KEEP=1     keep the temporary directory (data dirs, server logs, outputs)
#
# Every suite gets its own eddy server (every psql script too), on 127.0.0.1 and a free
# port. The last line is `clients: N passed, N failed`; the exit status is non-zero when
# anything failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE_ROOT=${EDDY_CACHE_DIR:-$REPO/.cache}
case "$CACHE_ROOT" in /*) ;; *) CACHE_ROOT=$REPO/$CACHE_ROOT ;; esac
CACHE=$CACHE_ROOT/clients

EDDY_BIN=${EDDY_BIN:-${CARGO_TARGET_DIR:-target}/debug/eddy}
case "$EDDY_BIN" in /*) ;; *) EDDY_BIN=$REPO/$EDDY_BIN ;; esac

SUITES=("$@")
[ ${#SUITES[@]} -eq 0 ] && SUITES=(psql python node)
for s in "${SUITES[@]}"; do
    case "$s" in psql | python | node) ;; *) echo "run.sh: unknown suite '$s' (psql, python, node)" >&2; exit 2 ;; esac
done

log() { printf '== %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

if [ ! -x "$EDDY_BIN" ]; then
    die "eddy binary not found at $EDDY_BIN; build it with 'cargo build --bin eddy' or set EDDY_BIN"
fi

mkdir -p "$CACHE"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/eddy-clients.XXXXXX")
EDDY_PIDS=()
cleanup() {
    local pid
    for pid in "${EDDY_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${EDDY_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${EDDY_CLIENTS_KEEP:-}" = 1 ]; then
        echo "run.sh: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Non-interactive installs, and caches inside $CACHE rather than $HOME.
export CI=${CI:-true} DEBIAN_FRONTEND=noninteractive
export PIP_CACHE_DIR=$CACHE/pip PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export npm_config_cache=$CACHE/npm npm_config_audit=false npm_config_fund=false \
    npm_config_update_notifier=false npm_config_yes=true
export PYTHONDONTWRITEBYTECODE=1

APT_UPDATED=0
apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        return 1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq >/dev/null || true
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------------------------------
# eddy servers

EDDY_PORT=
# start_eddy NAME: start a fresh server with its own data dir; sets EDDY_PORT.
start_eddy() {
    local name=$1 out=$WORK/$1.eddy.stdout err=$WORK/$1.eddy.stderr pid i
    "$EDDY_BIN" --listen 127.0.0.1:0 --data-dir "$WORK/$name.data" >"$out" 2>"$err" </dev/null &
    pid=$!
    EDDY_PIDS+=("$pid")
    for i in $(seq 1 600); do
        if grep -q '^eddy ready on ' "$out" 2>/dev/null; then
            EDDY_PORT=$(sed -n 's/^eddy ready on .*:\([0-9][0-9]*\)$/\1/p' "$out" | head -n1)
            [ -n "$EDDY_PORT" ] && return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "eddy ($name) exited before it was ready; stderr:" >&2
            tail -n 30 "$err" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "eddy ($name) not ready after 30s; stderr:" >&2
    tail -n 30 "$err" >&2
    return 1
}

# stop_eddy NAME: stop the server start_eddy NAME started last; report it if it had died.
stop_eddy() {
    local name=$1 pid=${EDDY_PIDS[${#EDDY_PIDS[@]}-1]} rc=0
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || rc=$?
        echo "!! eddy ($name) died during the tests (exit status $rc); the end of its log:"
        tail -n 20 "$WORK/$name.eddy.stderr" | sed 's/^/    /'
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------
# Results. Each suite prints a closing line `<name>: N passed, N failed`.

TOTAL_PASS=0
TOTAL_FAIL=0
TOTAL_XFAIL=0
SUMMARY=()
add_result() { # name passed failed [xfail]
    local x=${4:-0}
    TOTAL_PASS=$((TOTAL_PASS + $2))
    TOTAL_FAIL=$((TOTAL_FAIL + $3))
    TOTAL_XFAIL=$((TOTAL_XFAIL + x))
    SUMMARY+=("$(printf '%-8s %3d passed, %3d failed' "$1:" "$2" "$3")$([ "$x" = 0 ] || printf ', %d xfail (known eddy bugs)' "$x")")
}

# count_from_log NAME LOGFILE RC: add the counts a suite printed as
# `NAME: N passed, N failed[, N xfail]`.
count_from_log() {
    local name=$1 logf=$2 rc=$3 line p f x=0
    line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed(, [0-9]+ xfail)?$" "$logf" | tail -n1 || true)
    if [ -z "$line" ]; then
        echo "!! $name suite did not report its results (exit status $rc)"
        add_result "$name" 0 1
        return 0
    fi
    p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    case "$line" in *xfail) x=$(echo "$line" | sed -E 's/.* ([0-9]+) xfail$/\1/') ;; esac
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        echo "!! $name suite exited with status $rc but reported no failure"
        f=1
    fi
    add_result "$name" "$p" "$f" "$x"
}

# ---------------------------------------------------------------------------------------
# psql

ensure_psql() {
    command -v psql >/dev/null && return 0
    log "psql not found; installing postgresql-client"
    if ! apt_install postgresql-client; then
        echo "!! psql is not installed and cannot be installed here (needs root and apt-get);" \
            "install the Debian package postgresql-client" >&2
        return 1
    fi
    command -v psql >/dev/null
}

# Replace what legitimately varies between runs.
normalize_psql() {
    sed -E -e 's/^Time: [0-9]+([.,][0-9]+)? ms( \([^)]*\))?$/Time: <ms>/'
}

run_psql_suite() {
    local dir=$HERE/psql pass=0 fail=0 xfail=0 sql name exp act bug ok
    if ! ensure_psql; then
        add_result psql 0 1
        return 0
    fi
    log "psql suite ($(psql --version))"
    mkdir -p "$WORK/psql"
    for sql in "$dir"/sql/*.sql; do
        name=$(basename "$sql" .sql)
        exp=$dir/expected/$name.out
        act=$WORK/psql/$name.out
        bug=
        grep -q '^-- known eddy bug:' "$sql" && bug=1
        if ! start_eddy "psql-$name"; then
            echo "FAIL psql/$name: eddy did not start"
            fail=$((fail + 1))
            continue
        fi
        (
            cd "$dir/sql" &&
                env -u PGPASSWORD -u PGSERVICE -u PGOPTIONS -u PGTZ -u PGDATESTYLE \
                    -u PGCLIENTENCODING -u PGAPPNAME -u PSQLRC -u PSQL_PAGER -u PAGER \
                    PGHOST=127.0.0.1 PGPORT="$EDDY_PORT" PGUSER=eddy PGDATABASE=eddy \
                    PGSSLMODE=disable PGCONNECT_TIMEOUT=10 LC_ALL=C.UTF-8 LANG=C.UTF-8 \
                    timeout 120 psql -X -a -v ON_ERROR_STOP=0 -P pager=off -f "$name.sql" \
                    </dev/null 2>&1
        ) | normalize_psql >"$act" || true
        stop_eddy "psql-$name"
        if [ "${EDDY_CLIENTS_UPDATE:-}" = all ] || { [ "${EDDY_CLIENTS_UPDATE:-}" = 1 ] && [ -z "$bug" ]; }; then
            cp "$act" "$exp"
        fi
        ok=
        if [ ! -f "$exp" ]; then
            echo "FAIL psql/$name: no expected output $exp (EDDY_CLIENTS_UPDATE=1 creates it)"
            fail=$((fail + 1))
            continue
        fi
        diff -u --label "expected/$name.out" --label "actual/$name.out" "$exp" "$act" \
            >"$act.diff" && ok=1
        if [ -n "$bug" ] && [ "${EDDY_CLIENTS_KNOWN_BUGS:-}" = xfail ]; then
            if [ -n "$ok" ]; then
                echo "FAIL psql/$name: XPASS, the bug is fixed: remove the '-- known eddy bug:' line"
                fail=$((fail + 1))
            else
                echo "xfail psql/$name (known eddy bug)"
                xfail=$((xfail + 1))
            fi
        elif [ -n "$ok" ]; then
            echo "ok   psql/$name"
            pass=$((pass + 1))
        else
            echo "FAIL psql/$name: output differs from expected/$name.out${bug:+ (known eddy bug)}"
            sed 's/^/    /' "$act.diff"
            fail=$((fail + 1))
        fi
    done
    echo "psql: $pass passed, $fail failed$([ $xfail = 0 ] || echo ", $xfail xfail")"
    add_result psql "$pass" "$fail" "$xfail"
}

# ---------------------------------------------------------------------------------------
# Python (psycopg 3)

PY=
ensure_python() {
    local venv=$CACHE/venv req=$HERE/python/requirements.txt want
    if ! command -v python3 >/dev/null; then
        log "python3 not found; installing it"
        apt_install python3 python3-venv || { echo "!! python3 is missing" >&2; return 1; }
    fi
    want="$(python3 -c 'import sys; print(sys.version.split()[0], sys.executable)') $(hash_of "$req")"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.eddy-stamp" 2>/dev/null)" = "$want" ] &&
        "$venv/bin/python" -c 'import psycopg' 2>/dev/null; then
        PY=$venv/bin/python
        return 0
    fi
    log "creating the Python venv in $venv"
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv && python3 -m venv "$venv" ||
            { echo "!! python3 -m venv failed (Debian: python3-venv)" >&2; return 1; }
    fi
    if ! "$venv/bin/python" -m pip install -q -r "$req"; then
        # No binary wheel for this platform: pure-Python psycopg over the system libpq.
        log "psycopg[binary] unavailable; falling back to pure-Python psycopg + libpq"
        "$venv/bin/python" -m pip install -q "$(sed -n 's/^psycopg\[binary\]/psycopg/p' "$req")" ||
            { echo "!! cannot install psycopg" >&2; return 1; }
        if ! "$venv/bin/python" -c 'import psycopg' 2>/dev/null; then
            apt_install libpq5 || { echo "!! psycopg needs libpq (Debian: libpq5)" >&2; return 1; }
        fi
    fi
    "$venv/bin/python" -c 'import psycopg' || { echo "!! psycopg does not import" >&2; return 1; }
    echo "$want" >"$venv/.eddy-stamp"
    PY=$venv/bin/python
}

run_python_suite() {
    local rc=0
    if ! ensure_python; then
        add_result psycopg 0 1
        return 0
    fi
    log "python suite (psycopg $("$PY" -c 'import psycopg; print(psycopg.__version__, psycopg.pq.__impl__)'))"
    if ! start_eddy python; then
        add_result psycopg 0 1
        return 0
    fi
    EDDY_HOST=127.0.0.1 EDDY_PORT=$EDDY_PORT timeout 300 "$PY" "$HERE/python/test_psycopg.py" \
        </dev/null 2>&1 | tee "$WORK/python.log" || rc=$?
    stop_eddy python
    count_from_log psycopg "$WORK/python.log" "$rc"
}

# ---------------------------------------------------------------------------------------
# Node.js (pg)

NODE_MODULES=
ensure_node() {
    local dir=$CACHE/node src=$HERE/node want
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        log "node/npm not found; installing nodejs and npm"
        apt_install nodejs npm ||
            { echo "!! node and npm are missing (Debian: nodejs, npm)" >&2; return 1; }
    fi
    want="$(node --version) $(hash_of "$src/package.json" "$src/package-lock.json")"
    if [ -f "$dir/node_modules/pg/package.json" ] &&
        [ "$(cat "$dir/.eddy-stamp" 2>/dev/null)" = "$want" ]; then
        NODE_MODULES=$dir/node_modules
        return 0
    fi
    log "installing node dependencies in $dir (npm ci)"
    mkdir -p "$dir" && rm -f "$dir/.eddy-stamp" &&
        cp "$src/package.json" "$src/package-lock.json" "$dir/" &&
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error </dev/null) ||
        { echo "!! npm ci failed" >&2; return 1; }
    echo "$want" >"$dir/.eddy-stamp"
    NODE_MODULES=$dir/node_modules
}

run_node_suite() {
    local rc=0
    if ! ensure_node; then
        add_result pg 0 1
        return 0
    fi
    log "node suite (node $(node --version), pg $(node -p "require('$NODE_MODULES/pg/package.json').version"))"
    if ! start_eddy node; then
        add_result pg 0 1
        return 0
    fi
    EDDY_HOST=127.0.0.1 EDDY_PORT=$EDDY_PORT NODE_PATH=$NODE_MODULES TZ=UTC \
        timeout 300 node "$HERE/node/test_pg.js" </dev/null 2>&1 | tee "$WORK/node.log" || rc=$?
    stop_eddy node
    count_from_log pg "$WORK/node.log" "$rc"
}

# ---------------------------------------------------------------------------------------

START=$(date +%s)
for s in "${SUITES[@]}"; do
    case "$s" in
        psql) run_psql_suite ;;
        python) run_python_suite ;;
        node) run_node_suite ;;
    esac
done

echo
for line in "${SUMMARY[@]}"; do echo "   $line"; done
echo "   ($(($(date +%s) - START))s, eddy: $EDDY_BIN)"
if [ "$TOTAL_XFAIL" != 0 ]; then
    echo "   $TOTAL_XFAIL known eddy bugs reported as xfail (EDDY_CLIENTS_KNOWN_BUGS=xfail)"
fi
echo "clients: $TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" -eq 0 ]
