#!/usr/bin/env bash
# load: fills the cache from N sysbench-shaped rows (id, k, c CHAR(120), pad CHAR(60)) for
# one upsert JSON rule, and prints the wall time, rows per second, the load's peak RSS
# and the CPU seconds of the load and of Redis. Then 1 % of the rows are deleted and
# `load --yes` rebuilds the cache over its checkpoint: every key rewritten in place and
# the keys of the deleted rows found (looked up in batches) and deleted.
# Usage: N=1000000 scripts/bench-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin cdc-cache
CDC=$PWD/target/release/cdc-cache
N=${N:-1000000}
. scripts/servers.sh
sql "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, k INT NOT NULL,
     c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL);
     INSERT INTO d.t SELECT seq, seq % 1000, REPEAT(CHAR(97 + seq % 26), 120),
     REPEAT('p', 60) FROM d.seq_1_to_$N"
one_rule_config "d.t" upsert "t:{id}"
timed_load() { # label, extra arguments
    local redis_cpu0 t0 t1 rss user sys secs
    redis_cpu0=$(cpu $RPID)
    t0=$(date +%s.%N)
    /usr/bin/time -f "%M %U %S" -o $W/time $CDC load --config $W/c.toml "${@:2}" > $W/out
    t1=$(date +%s.%N)
    read -r rss user sys < $W/time
    secs=$(echo "$t1 - $t0" | bc)
    echo "$1: $N rows in $secs s = $(echo "$N / $secs" | bc) rows/s; peak RSS $((rss / 1024)) MiB;" \
         "CPU: load $(echo "$user + $sys" | bc) s, Redis $(echo "$(cpu $RPID) - $redis_cpu0" | bc) s;" \
         "$(redis-cli -p $RP DBSIZE) keys; $(grep 'no row produces' $W/out)"
}
timed_load load
sql "DELETE FROM d.t WHERE id % 100 = 0"
timed_load rebuild --yes
