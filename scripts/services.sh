#!/usr/bin/env bash
# Install (when missing), start, check and stop the real servers the tests use.
#
#   scripts/services.sh up NAME [NAME...]   NAME: mongo mysql rocketmq
#   scripts/services.sh down                stop everything started here
#   scripts/services.sh env                 export lines for what is running
#
# `up` and `env` print only `export VAR='value'` lines on stdout, so that
#   eval "$(scripts/services.sh up mongo mysql)"
# works; progress and errors go to stderr. Downloads are cached under
# ~/.cache/fleets_mailbox, so a second run only starts the servers.
#
# Settings (environment): FLEETS_SERVICES_DIR (pid files, data, logs),
# FLEETS_MONGO_PORT (27018), FLEETS_MYSQL_PORT (3307),
# FLEETS_SERVICES_TIMEOUT (seconds to wait for a server, 60).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=$HOME/.cache/fleets_mailbox
STATE=${FLEETS_SERVICES_DIR:-$CACHE/services}
[[ $STATE == /* ]] || STATE=$PWD/$STATE
MONGO_PORT=${FLEETS_MONGO_PORT:-27018}
MYSQL_PORT=${FLEETS_MYSQL_PORT:-3307}
TIMEOUT=${FLEETS_SERVICES_TIMEOUT:-60}

# SecantusDB is GPL: it lives in its own venv, never in the project's.
SECANTUS_VENV=$CACHE/secantus-venv
SECANTUS_REQS=(secantusdb==0.7.0b3 "pymongo>=4.6,<5")
MYSQL_SOCKET=$STATE/mysql.sock
ROCKETMQ_SCRIPT=$ROOT/scripts/services-rocketmq.sh

log() { printf 'services.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    die "usage: $0 up {mongo|mysql|rocketmq}... | down | env"
}

# ---------------------------------------------------------------- processes

# True when PID is alive and was started by us: pid files outlive reboots,
# so a reused pid must not be mistaken for our server (or killed by `down`).
ours() {
    [[ -n ${1:-} ]] && grep -qaF -- "$STATE/" "/proc/$1/cmdline" 2>/dev/null
}

running() {  # NAME
    ours "$(cat "$STATE/$1.pid" 2>/dev/null)"
}

port_in_use() {
    (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null
}

launch() {  # NAME CMD...: run CMD detached, output to NAME.log, pid in NAME.pid
    local name=$1
    shift
    # Own session, so the caller's Ctrl-C does not reach the server; stdout
    # not inherited, so `$(services.sh up ...)` returns; fd 9 is our lock.
    setsid "$@" </dev/null >>"$STATE/$name.log" 2>&1 9>&- &
    echo $! >"$STATE/$name.pid"
}

stop() {  # NAME
    local name=$1 pid deadline
    pid=$(cat "$STATE/$name.pid" 2>/dev/null) || true
    if ours "$pid"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" || true
        deadline=$((SECONDS + TIMEOUT))
        while ours "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        if ours "$pid"; then
            log "$name did not stop within ${TIMEOUT}s, killing it"
            kill -KILL "$pid" || true
            while ours "$pid"; do sleep 0.2; done
        fi
    fi
    rm -f "$STATE/$name.pid" "$STATE/$name.port"
}

fail() {  # NAME MESSAGE: stop NAME, show its log tail, exit non-zero
    log "error: $1 $2; last lines of $STATE/$1.log:"
    tail -n 30 "$STATE/$1.log" >&2 || true
    stop "$1"
    exit 1
}

wait_ready() {  # NAME CMD...: poll CMD until it succeeds
    local name=$1 deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        running "$name" || fail "$name" "exited during start-up"
        ((SECONDS < deadline)) || fail "$name" "did not answer within ${TIMEOUT}s"
        sleep 0.3
    done
}

# The port the running NAME listens on, or the configured one if we start it.
port_for() {  # NAME DEFAULT_PORT
    if running "$1"; then
        cat "$STATE/$1.port"
        return
    fi
    if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then
        die "invalid port for $1: $2"
    fi
    port_in_use "$2" && die "port $2 (for $1) is used by a process this script did not start"
    echo "$2"
}

apt_install() {  # PACKAGE...
    local policy=/usr/sbin/policy-rc.d added=""
    log "installing $* with apt-get"
    apt-cache show "$@" >/dev/null 2>&1 || apt-get update -q >&2

    # Keep the packages' system services from starting: we run our own.
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        added=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "$@" >&2 || { [[ -z $added ]] || rm -f "$policy"; exit 1; }
    [[ -z $added ]] || rm -f "$policy"
}

# -------------------------------------------------------------------- mongo

secantus_install() {
    local py=$SECANTUS_VENV/bin/python stamp=$SECANTUS_VENV/.requirements
    if [[ -x $SECANTUS_VENV/bin/secantusd-py && "$(cat "$stamp" 2>/dev/null)" == "${SECANTUS_REQS[*]}" ]] &&
        "$py" -c 'import pymongo' 2>/dev/null; then
        return
    fi

    log "installing ${SECANTUS_REQS[*]} into $SECANTUS_VENV"
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3 python3-venv
    rm -rf "$SECANTUS_VENV"
    python3 -m venv "$SECANTUS_VENV"
    "$py" -m pip install -q --disable-pip-version-check "${SECANTUS_REQS[@]}" >&2
    echo "${SECANTUS_REQS[*]}" >"$stamp"
}

mongo_uri() {
    echo "mongodb://127.0.0.1:$1/?directConnection=true&retryWrites=false"
}

mongo_ping() {  # URI
    "$SECANTUS_VENV/bin/python" - "$1" <<'PY'
import sys

import pymongo

with pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=2000) as client:
    client.admin.command("ping")
PY
}

mongo_up() {
    local port
    secantus_install
    port=$(port_for mongo "$MONGO_PORT")
    if ! running mongo; then
        log "starting SecantusDB on 127.0.0.1:$port"
        mkdir -p "$STATE/mongo"
        launch mongo "$SECANTUS_VENV/bin/secantusd-py" \
            --host 127.0.0.1 --port "$port" --storage-path "$STATE/mongo"
        echo "$port" >"$STATE/mongo.port"
    fi
    wait_ready mongo mongo_ping "$(mongo_uri "$port")"
    log "mongo ready on port $port"
    mongo_env
}

mongo_env() {
    echo "export FLEETS_TEST_MONGO_URI='$(mongo_uri "$(cat "$STATE/mongo.port")")'"
}

# -------------------------------------------------------------------- mysql

mariadb_install() {
    local tool
    for tool in mariadbd mariadb-install-db mariadb mariadb-admin; do
        command -v "$tool" >/dev/null || {
            apt_install mariadb-server mariadb-client
            return
        }
    done
}

mysql_root() {
    mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot "$@"
}

mysql_fleets() {  # PORT ARGS...
    local port=$1
    shift
    mariadb --no-defaults -h127.0.0.1 -P"$port" -ufleets -pfleets fleets_test "$@"
}

mysql_init() {
    # Built aside and renamed, so an interrupted first run leaves no half
    # data dir for the next run to trip on.
    log "creating the MariaDB data dir $STATE/mysql"
    rm -rf "$STATE/mysql.new"
    mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql.new" \
        --auth-root-authentication-method=socket --skip-test-db >>"$STATE/mysql.log" 2>&1 ||
        fail mysql "mariadb-install-db failed"
    mv "$STATE/mysql.new" "$STATE/mysql"
}

mysql_up() {
    local port
    mariadb_install
    port=$(port_for mysql "$MYSQL_PORT")
    if ! running mysql; then
        [[ -d $STATE/mysql/mysql ]] || mysql_init
        log "starting MariaDB on 127.0.0.1:$port"
        launch mysql mariadbd --no-defaults --user=root \
            --datadir="$STATE/mysql" --socket="$MYSQL_SOCKET" \
            --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
            --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci
        echo "$port" >"$STATE/mysql.port"
    fi
    wait_ready mysql mysql_root -e 'SELECT 1'

    # Every time, so that a data dir from an older version of this script
    # gets the same database and grants. Tests create more fleets_* databases.
    mysql_root <<'SQL'
CREATE DATABASE IF NOT EXISTS fleets_test
    CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'fleets'@'%' IDENTIFIED BY 'fleets';
CREATE USER IF NOT EXISTS 'fleets'@'localhost' IDENTIFIED BY 'fleets';
GRANT ALL PRIVILEGES ON `fleets%`.* TO 'fleets'@'%', 'fleets'@'localhost';
SQL
    wait_ready mysql mysql_fleets "$port" -e 'SELECT 1'
    log "mysql ready on port $port"
    mysql_env
}

mysql_env() {
    local port
    port=$(cat "$STATE/mysql.port")
    echo "export FLEETS_TEST_MYSQL_URL='mysql+asyncmy://fleets:fleets@127.0.0.1:$port/fleets_test?charset=utf8mb4'"
}

# ----------------------------------------------------------------- rocketmq

rocketmq_up() {
    local out
    [[ -f $ROCKETMQ_SCRIPT ]] || die "cannot start rocketmq: $ROCKETMQ_SCRIPT does not exist"
    out=$(FLEETS_SERVICES_DIR=$STATE bash "$ROCKETMQ_SCRIPT" up 9>&-) || die "$ROCKETMQ_SCRIPT up failed"
    printf '%s\n' "$out" | tee "$STATE/rocketmq.env"
}

rocketmq_down() {
    rm -f "$STATE/rocketmq.env"
    [[ ! -f $ROCKETMQ_SCRIPT ]] || FLEETS_SERVICES_DIR=$STATE bash "$ROCKETMQ_SCRIPT" down 9>&- >&2
}

# --------------------------------------------------------------------- main

lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -n 9 || {
        log "waiting for another services.sh run to finish"
        flock 9
    }
}

main() {
    local cmd=${1:-} name status=0
    shift || true
    case $cmd in
        up)
            (($#)) || usage
            for name; do
                case $name in mongo | mysql | rocketmq) ;; *) usage ;; esac
            done
            lock
            for name; do "${name}_up"; done
            ;;
        down)
            (($# == 0)) || usage
            lock
            rocketmq_down || status=$?
            stop mongo
            stop mysql
            return "$status"
            ;;
        env)
            (($# == 0)) || usage
            if running mongo; then mongo_env; fi
            if running mysql; then mysql_env; fi
            cat "$STATE/rocketmq.env" 2>/dev/null || true
            ;;
        *) usage ;;
    esac
}

main "$@"
