#!/usr/bin/env bash
# Runs a command with a private, throw-away PostgreSQL cluster:
#
#   scripts/with-postgres.sh swift test --filter VaultPostgresTests
#
# It finds PostgreSQL's server programs (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on
# PATH, creates a cluster in a new temporary directory, owned and run by a non-root user
# (PostgreSQL refuses to run as root: when started by root it uses the `postgres` system user,
# or creates a `pvtest` user), with a random superuser password (scram-sha-256), listening on
# 127.0.0.1 on a free port and on a unix socket in that directory. It creates the database
# `profilevault_test`, exports
#
#   PROFILEVAULT_TEST_POSTGRES=postgres://pvadmin@127.0.0.1:PORT/profilevault_test?sslmode=disable
#   PGPASSWORD=<the superuser's password>
#
# runs the command, then stops the cluster and removes the directory on every exit path
# (success, failure, Ctrl-C). The command's exit status is the script's.
set -euo pipefail

say() { printf 'with-postgres.sh: %s\n' "$*" >&2; }

if [ "$#" -eq 0 ]; then
    say "usage: scripts/with-postgres.sh COMMAND [ARGS...]"
    exit 64
fi

# --- the server programs -----------------------------------------------------------------
PGBIN=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then PGBIN="$d"; break; fi
done
if [ -z "$PGBIN" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    PGBIN="$(dirname "$(command -v initdb)")"
fi
if [ -z "$PGBIN" ]; then
    say "PostgreSQL's server programs (initdb, pg_ctl) are not installed."
    say "Install them with:  apt-get install -y postgresql      (as root; sudo apt-get install -y postgresql otherwise)"
    exit 69
fi
tool() {   # a client program: beside initdb when there, else on PATH
    if [ -x "$PGBIN/$1" ]; then printf '%s\n' "$PGBIN/$1"; else command -v "$1"; fi
}
PSQL="$(tool psql)" || { say "psql is missing; install it with: apt-get install -y postgresql-client"; exit 69; }

# --- who runs the server -------------------------------------------------------------------
RUNAS=""
if [ "$(id -u)" -eq 0 ]; then
    if id -u postgres >/dev/null 2>&1; then
        RUNAS=postgres
    else
        if ! id -u pvtest >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin pvtest
        fi
        RUNAS=pvtest
    fi
fi
as_server_user() {   # runs a server program as the non-root user, from the cluster's directory
    if [ -n "$RUNAS" ]; then
        (cd "$DIR" && runuser -u "$RUNAS" -- "$@")
    else
        (cd "$DIR" && "$@")
    fi
}

# --- the cluster ---------------------------------------------------------------------------
DIR="$(mktemp -d "${TMPDIR:-/tmp}/profilevault-pg.XXXXXX")"
STARTED=0
cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    if [ "$STARTED" -eq 1 ]; then
        as_server_user "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 \
            || as_server_user "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    exit "$status"
}
CHILD=""
# A signal stops the command too (bash runs a trap only once the foreground command ends, so
# the command runs in the background and the script waits for it; `wait` is interruptible).
forward() {
    if [ -n "$CHILD" ]; then
        kill -s "$1" "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    exit "$2"
}
trap cleanup EXIT
trap 'forward INT 130' INT
trap 'forward TERM 143' TERM
trap 'forward HUP 129' HUP

chmod 700 "$DIR"
SUPERUSER=pvadmin
PGPASSWORD="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
export PGPASSWORD
( umask 077; printf '%s\n' "$PGPASSWORD" > "$DIR/pwfile" )
if [ -n "$RUNAS" ]; then
    chown -R "$RUNAS" "$DIR"
    if ! runuser -u "$RUNAS" -- test -w "$DIR"; then
        say "the user $RUNAS cannot reach $DIR (a private TMPDIR?); run with TMPDIR=/tmp"
        exit 1
    fi
fi

as_server_user "$PGBIN/initdb" -D "$DIR/data" -U "$SUPERUSER" --pwfile="$DIR/pwfile" \
    --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; say "initdb failed"; exit 1; }
rm -f "$DIR/pwfile"

# A free loopback port: pick random ones until the server starts on one (another process may
# take a port between the check and the start, so the start itself is the test).
PORT=""
for _ in 1 2 3 4 5 6 7 8; do
    candidate=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000 ))
    if (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then continue; fi   # something listens there
    if as_server_user "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$candidate -c unix_socket_directories=$DIR -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null 2>&1; then
        PORT=$candidate
        STARTED=1
        break
    fi
done
if [ -z "$PORT" ]; then
    cat "$DIR/server.log" >&2 2>/dev/null || true
    say "could not start PostgreSQL on a free port"
    exit 1
fi

"$PSQL" -q -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE profilevault_test" >/dev/null

export PROFILEVAULT_TEST_POSTGRES="postgres://$SUPERUSER@127.0.0.1:$PORT/profilevault_test?sslmode=disable"
say "PostgreSQL $("$PGBIN/pg_ctl" --version | awk "{print \$3}") on 127.0.0.1:$PORT (socket in $DIR), run by ${RUNAS:-$(id -un)}"

set +e
"$@" <&0 &
CHILD=$!
wait "$CHILD"
status=$?
CHILD=""
set -e
exit "$status"
