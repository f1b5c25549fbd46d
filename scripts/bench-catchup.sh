#!/usr/bin/env bash
# Catch-up benchmark (a first harness for the performance issue; not the full one).
# Commits 400,000 inserts, 200,000 updates and 100,000 deletes (transactions of 100 rows)
# on a sysbench-shaped table with the daemon stopped, then times the daemon from
# `start = "earliest"` until its checkpoint reaches the head, and times
# `mariadb-binlog --read-from-remote-server -v` over the same binlog as the reference.
# Usage: scripts/bench-catchup.sh [delete|upsert]   (PERF=1 records perf data to /tmp/perf.data;
# CLUSTER=1 applies to a three-node Redis Cluster instead, `redis.cluster = true`; HOT=N
# makes the backlog N rows inserted, then 700,000 updates of them in transactions of 100,
# so each row changes 700,000/N times: the writes a step replaces are coalesced)
set -euo pipefail
cd "$(dirname "$0")/.."
ACTION=${1:-delete}
cargo build --release --quiet
CDC=${CDC:-$PWD/target/release/cdc-cache}
MARIADB_OPTS="--innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=0 --sync-binlog=0"
. scripts/servers.sh
sql "CREATE DATABASE sb; CREATE TABLE sb.sbtest1 (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60))"
REDIS_URL="redis://127.0.0.1:$RP/0"; CLUSTER_LINE=""; NODES=$RP; RCLI="redis-cli -p $RP"
if [ -n "${CLUSTER:-}" ]; then
  NODES="$((RP + 1)) $((RP + 2)) $((RP + 3))"; i=0
  for port in $NODES; do
    mkdir -p $W/node$port
    redis-server --port $port --save "" --appendonly no --dir $W/node$port --cluster-enabled yes >/dev/null & EXTRA_PIDS="$EXTRA_PIDS $!"
    until redis-cli -p $port ping >/dev/null 2>&1; do sleep 0.1; done
    redis-cli -p $port cluster addslotsrange $((i * 5462)) $([ $i = 2 ] && echo 16383 || echo $((i * 5462 + 5461))) >/dev/null
    redis-cli -p $((RP + 1)) cluster meet 127.0.0.1 $port >/dev/null; i=$((i + 1))
  done
  for port in $NODES; do until redis-cli -p $port cluster info | grep -q cluster_state:ok; do sleep 0.2; done; done
  REDIS_URL="redis://127.0.0.1:$((RP + 1))"; CLUSTER_LINE="cluster = true"; RCLI="redis-cli -c -p $((RP + 1))"
fi
cat > $W/c.toml <<EOT
[source]
url = "mysql://root@127.0.0.1:$P/"
server_id = 99
start = "earliest"
channel_capacity = ${CAP:-64}
chunk_rows = ${CHUNK:-1024}
[redis]
url = "$REDIS_URL"
$CLUSTER_LINE
[sink]
max_ops_per_step = ${MAX_OPS:-10000}
[log]
level = "${LOGLEVEL:-warn}"
[[rules]]
table = "sb.sbtest*"
action = "$ACTION"
key = "sb:{id}"
EOT
# 400k inserts in txns of 100 rows + 200k updates + 100k deletes, as one big SQL script
# (or, with HOT=N, N inserts and 700k updates of those N rows)
python3 - > $W/load.sql <<'PY'
import os
out=[]
hot=int(os.environ.get("HOT") or 0)
if hot:
    for t in range(0, hot, 100):
        rows=",".join(f"({i},{i},'{'c'*120}','{'p'*60}')" for i in range(t, min(t+100, hot)))
        out.append(f"INSERT INTO sb.sbtest1 VALUES {rows};")
    for t in range(7000):
        a=(t*100) % hot
        out.append(f"UPDATE sb.sbtest1 SET k=k+1 WHERE id>={a} AND id<{a+100};")
    print("\n".join(out))
    raise SystemExit
for t in range(4000):
    rows=",".join(f"({t*100+i},{i},'{'c'*120}','{'p'*60}')" for i in range(100))
    out.append(f"INSERT INTO sb.sbtest1 VALUES {rows};")
for t in range(2000):
    a=t*200
    out.append(f"UPDATE sb.sbtest1 SET k=k+1 WHERE id>={a} AND id<{a+100};")
for t in range(1000):
    a=t*400
    out.append(f"DELETE FROM sb.sbtest1 WHERE id>={a} AND id<{a+100};")
print("\n".join(out))
PY
sql "source $W/load.sql" 
HEAD=$(sql "SHOW MASTER STATUS\G" | awk '/Position/{print $2}')
ROWS=$((700000 + ${HOT:-0}))
echo "binlog bytes: $HEAD rows: $ROWS"
# Each binary in BINS (default: the release build) runs RUNS times (default 1), Redis
# flushed in between, so two builds can be compared on the same data in one go.
for BIN in ${BINS:-$CDC}; do for RUN in $(seq ${RUNS:-1}); do
for port in $NODES; do redis-cli -p $port flushall >/dev/null; done
redis_cpu() { t=0; for port in $NODES; do t=$(python3 -c "print($t + $(cpu $(redis-cli -p $port info server | awk -F: '/^process_id/{print $2}' | tr -d '\r')))"); done; echo $t; }
R0=$(redis_cpu); M0=$(cpu $DBP)
START=$(date +%s.%N)
${PERF:+perf record ${PERF_ARGS:--F 999 -g} -o /tmp/perf.data} "$BIN" run --config $W/c.toml & D=$!
# Poll every 5 ms on one connection (one redis-cli, no start-up per poll: the CPU is
# shared with the daemon); grep stops at the first checkpoint at the head.
$RCLI -r -1 -i 0.005 get cdc-cache:checkpoint:default | grep -m1 -q "\"pos\":$HEAD[,}]" || true
END=$(date +%s.%N)
PEAK=$(grep VmHWM /proc/$D/status 2>/dev/null || true)
DCPU=$(cpu $D); R1=$(redis_cpu); M1=$(cpu $DBP)
kill -TERM $D; wait $D || true
echo "CPU seconds: daemon $DCPU, redis $(python3 -c "print(round($R1-$R0,2))"), mariadbd $(python3 -c "print(round($M1-$M0,2))")"
python3 -c "t=$END-$START; print(f'$BIN $ACTION: $ROWS row changes in {t:.2f}s = {$ROWS/t:,.0f} rows/s')"
echo "daemon $PEAK"
done; done
S2=$(date +%s.%N); mariadb-binlog --read-from-remote-server -uroot -h127.0.0.1 -P$P -v binlog.000001 > /dev/null; E2=$(date +%s.%N)
python3 -c "t=$E2-$S2; print(f'mariadb-binlog -v: {t:.2f}s = {$ROWS/t:,.0f} rows/s')"
# The transfer alone (no decoding): the floor any binlog client is bound by.
mkdir -p $W/raw; S3=$(date +%s.%N); mariadb-binlog --read-from-remote-server -uroot -h127.0.0.1 -P$P --raw --result-file=$W/raw/ binlog.000001; E3=$(date +%s.%N)
python3 -c "t=$E3-$S3; print(f'mariadb-binlog --raw (transfer only): {t:.2f}s = {$ROWS/t:,.0f} rows/s')"
