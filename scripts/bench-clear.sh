#!/usr/bin/env bash
# How long a TRUNCATE of a cached table takes to clear its keys: Redis holds MATCHING keys
# of the table's rule (`sb:{id}`) and OTHER keys of no rule; the daemon follows live, then
# `TRUNCATE TABLE` runs and the time until the checkpoint passes it is the clear's time
# (SCAN over the whole keyspace, DEL steps for the matches).
# Usage: MATCHING=100000 OTHER=1000000 scripts/bench-clear.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MATCHING=${MATCHING:-100000}; OTHER=${OTHER:-1000000}
cargo build --release --quiet
CDC=${CDC:-$PWD/target/release/cdc-cache}
# DEBUG POPULATE fills the keyspace quickly; only this private server allows it.
REDIS_OPTS="--enable-debug-command yes"
. scripts/servers.sh
sql "CREATE DATABASE sb; CREATE TABLE sb.sbtest1 (id INT PRIMARY KEY, k INT)"
one_rule_config "sb.sbtest1" delete "sb:{id}"
redis-cli -p $RP debug populate $MATCHING sb 10 >/dev/null
redis-cli -p $RP debug populate $OTHER other 10 >/dev/null
"$CDC" run --config $W/c.toml 2>$W/log & D=$!; EXTRA_PIDS=$D
until redis-cli -p $RP exists cdc-cache:checkpoint:default | grep -q 1; do sleep 0.05; done
R0=$(cpu $RPID); C0=$(cpu $D)
START=$(date +%s.%N)
sql "TRUNCATE TABLE sb.sbtest1"
HEAD=$(sql "SHOW MASTER STATUS\G" | awk '/Position/{print $2}')
redis-cli -p $RP -r -1 -i 0.005 get cdc-cache:checkpoint:default | grep -m1 -q "\"pos\":$HEAD[,}]" || true
END=$(date +%s.%N)
echo "keys: $MATCHING matching, $OTHER other; left: $(redis-cli -p $RP dbsize) (other + checkpoint)"
echo "CPU seconds: daemon $(python3 -c "print(round($(cpu $D)-$C0,2))"), redis $(python3 -c "print(round($(cpu $RPID)-$R0,2))")"
python3 -c "t=$END-$START; print(f'clear: {t:.2f}s, {($MATCHING+$OTHER)/t:,.0f} keys scanned/s')"
grep -o 'deleted=[0-9]*' $W/log
