#!/usr/bin/env bash
# XA catch-up: N one-row transactions committed as two-phase XA (XA PREPARE, then XA
# COMMIT) against N ordinary ones, with the daemon stopped; then times the daemon from
# the first of them until its checkpoint reaches the head. An XA transaction is two event
# groups, and its operations go through a stash in Redis (README, Guarantees 8).
# Usage: N=5000 scripts/bench-xa.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin cdc-cache
CDC=$PWD/target/release/cdc-cache
N=${N:-5000}
MARIADB_OPTS="--innodb-flush-log-at-trx-commit=0 --sync-binlog=0"
. scripts/servers.sh
sql "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v INT)"
load() {
  python3 - "$N" "$1" "$2" <<'PY'
import sys
n, xa, base = int(sys.argv[1]), sys.argv[2] == "xa", int(sys.argv[3])
for i in range(base, base + n):
    if xa:
        print(f"XA START 'x{i}'; INSERT INTO d.t VALUES ({i},1); XA END 'x{i}'; "
              f"XA PREPARE 'x{i}'; XA COMMIT 'x{i}';")
    else:
        print(f"BEGIN; INSERT INTO d.t VALUES ({i},1); COMMIT;")
PY
}
head_pos() { mariadb -uroot -h127.0.0.1 -P$P -N -e "SHOW MASTER STATUS" | awk '{print $1":"$2}'; }
for mode in plain xa; do
  base=$([ $mode = plain ] && echo 0 || echo 1000000)
  start=$(head_pos)
  load $mode $base | mariadb -uroot -h127.0.0.1 -P$P
  head=$(head_pos); head=${head#*:}
  redis-cli -p $RP FLUSHALL >/dev/null
  one_rule_config "d.t" upsert "t:{id}" "$start"
  t0=$(date +%s.%N)
  $CDC run --config $W/c.toml & D=$!
  until redis-cli -p $RP GET cdc-cache:checkpoint:default | grep -q "\"pos\":$head[,}]"; do
    sleep 0.01
  done
  t1=$(date +%s.%N)
  kill $D; wait $D || true
  echo "$mode: $N transactions applied in $(echo "$t1 - $t0" | bc) s; $(redis-cli -p $RP DBSIZE) keys"
done
