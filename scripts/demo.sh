#!/usr/bin/env bash
# Demo: start a throwaway MariaDB (binlog on) and Redis on free ports in a temporary
# directory, run cdc-cache against a sample table, and show Redis keys following row
# changes. Everything it starts is stopped and removed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."

find_bin() {
    for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
        [ -x "$dir/$1" ] && { echo "$dir/$1"; return 0; }
    done
    echo "demo: $1 not found; install it with: apt-get install -y mariadb-server redis-server" >&2
    exit 1
}
MARIADBD=$(find_bin mariadbd)
INSTALL_DB=$(find_bin mariadb-install-db)
MARIADB=$(find_bin mariadb)
REDIS_SERVER=$(find_bin redis-server)
REDIS_CLI=$(find_bin redis-cli)

free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

WORK=$(mktemp -d -t cdc-cache-demo.XXXXXX)
DB_PORT=$(free_port)
REDIS_PORT=$(free_port)
METRICS_PORT=$(free_port)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building cdc-cache"
cargo build --quiet
CDC=target/debug/cdc-cache

echo "== starting MariaDB on 127.0.0.1:$DB_PORT and Redis on 127.0.0.1:$REDIS_PORT (in $WORK)"
# Private temporary directories: servers sharing /tmp collide on temporary table names.
mkdir -p "$WORK/install-tmp" "$WORK/tmp"
TMPDIR="$WORK/install-tmp" "$INSTALL_DB" --no-defaults --datadir="$WORK/data" --auth-root-authentication-method=normal \
    --skip-test-db --user="$(id -un)" >"$WORK/install.log" 2>&1
"$MARIADBD" --no-defaults --user="$(id -un)" --datadir="$WORK/data" --socket="$WORK/sock" \
    --pid-file="$WORK/pid" --tmpdir="$WORK/tmp" --port="$DB_PORT" --bind-address=127.0.0.1 --server-id=1 \
    --log-bin=binlog --binlog-format=ROW --binlog-row-metadata=FULL \
    --log-error="$WORK/mariadb.log" &
PIDS+=($!)
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)

sql() { "$MARIADB" --no-defaults -uroot -h127.0.0.1 -P"$DB_PORT" -e "$1"; }
rcli() { "$REDIS_CLI" -p "$REDIS_PORT" "$@"; }
for _ in $(seq 150); do sql "SELECT 1" >/dev/null 2>&1 && rcli ping >/dev/null 2>&1 && break; sleep 0.2; done
if ! sql "SELECT 1" >/dev/null 2>&1 || ! rcli ping >/dev/null 2>&1; then
    echo "demo: the servers did not come up; their logs:" >&2
    tail -n 20 "$WORK/mariadb.log" "$WORK/redis.log" >&2
    exit 1
fi

sql "CREATE DATABASE shop;
     CREATE TABLE shop.users (id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(80),
                              balance DECIMAL(10,2), joined DATETIME);"

cat >"$WORK/config.toml" <<EOF
[source]
url = "mysql://root@127.0.0.1:$DB_PORT/"
server_id = 4242
start = "current"

[redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"

[checkpoint]
key = "cdc-cache:checkpoint:demo"

[metrics]
listen = "127.0.0.1:$METRICS_PORT"

[[rules]]                 # the row as JSON under user:<id>
table = "shop.users"
action = "upsert"
key = "user:{id}"

[[rules]]                 # a secondary key, invalidated on every change
table = "shop.users"
action = "delete"
key = "user:by-email:{email}"
EOF

echo "== config"
cat "$WORK/config.toml"
echo "== cdc-cache check"
"$CDC" check --config "$WORK/config.toml"

show() {
    sleep 0.5
    echo "-- redis now:"
    for key in $(rcli --scan --pattern 'user:*' | sort); do
        echo "   $key = $(rcli get "$key")"
    done
}

echo
echo "== a row that exists before the first start; cdc-cache load fills the cache from a"
echo "   consistent snapshot and sets the checkpoint to the snapshot's binlog position"
sql "INSERT INTO shop.users VALUES (9, 'Zed', 'zed@example.org', 7.00, '2026-01-02 03:04:05')"
"$CDC" load --config "$WORK/config.toml" 2>"$WORK/load.log"
show

"$CDC" run --config "$WORK/config.toml" 2>"$WORK/daemon.log" &
DAEMON=$!
PIDS+=("$DAEMON")
for _ in $(seq 100); do rcli exists cdc-cache:checkpoint:demo | grep -q 1 && break; sleep 0.1; done

step() { echo; echo "== SQL: $1"; sql "$1"; show; }

rcli set user:by-email:ann@example.org stale-entry >/dev/null
step "INSERT INTO shop.users VALUES (1, 'Ann', 'ann@example.org', 10.50, '2026-11-24 09:00:00'),
                                    (2, 'Bob', 'bob@example.org', 0.00, NOW())"
step "UPDATE shop.users SET balance = balance + 5, name = 'Ann B.' WHERE id = 1"
step "UPDATE shop.users SET id = 3 WHERE id = 2"
step "BEGIN; DELETE FROM shop.users WHERE id = 1; INSERT INTO shop.users VALUES (4, 'Cy', NULL, 1, NULL); ROLLBACK"
step "DELETE FROM shop.users WHERE id = 1"
step "INSERT INTO shop.users VALUES (5, 'Di', 'di@example.org', 2, NULL)"
# A two-phase XA transaction logs its rows at XA PREPARE: they wait in a stash under the
# checkpoint key, and reach the cache at XA COMMIT (here from another session).
step "XA START 'order-7'; UPDATE shop.users SET balance = 99 WHERE id = 5; XA END 'order-7'; XA PREPARE 'order-7'"
step "XA COMMIT 'order-7'"
# A column change rewrites every row without logging one: the values the upsert rule
# stored lack the new column, so its keys go; the next change writes the row with it.
step "ALTER TABLE shop.users ADD COLUMN tier VARCHAR(8) DEFAULT 'basic'"
step "UPDATE shop.users SET balance = balance + 1 WHERE id = 3"
# TRUNCATE logs no rows: the daemon deletes the keys the rules' templates match.
step "TRUNCATE TABLE shop.users"

echo
echo "== cdc-cache status"
"$CDC" status --config "$WORK/config.toml"

echo "== metrics (http://127.0.0.1:$METRICS_PORT/metrics), a few lines"
exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT"
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
grep -E '^cdc_cache_(transactions_applied_total|row_changes_applied_total|lag_seconds|lag_bytes|ready)[ {]' <&3 || true
exec 3<&-

echo "== stopping the daemon with SIGTERM (finishes the current step, exits 0)"
kill -TERM "$DAEMON"
wait "$DAEMON" && echo "daemon exited 0"
echo "== daemon log"
cat "$WORK/daemon.log"
