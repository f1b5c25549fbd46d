# Sourced by the benchmark scripts: a throwaway MariaDB (binlog on, ROW, FULL metadata)
# and Redis in a temporary directory $W, on random ports $P and $RP, stopped and removed
# on exit. Extra mariadbd options in MARIADB_OPTS, extra redis-server ones in REDIS_OPTS.
# Defines sql() (a statement as root), cpu() (a process's CPU seconds) and one_rule_config().
W=$(mktemp -d); mkdir -p $W/tmp $W/itmp
P=$((30000 + RANDOM % 5000)); RP=$((36000 + RANDOM % 5000))
TMPDIR=$W/itmp mariadb-install-db --no-defaults --auth-root-authentication-method=normal --skip-test-db --datadir=$W/data --user=$(id -un) >/dev/null 2>&1
mariadbd --no-defaults --user=$(id -un) --datadir=$W/data --socket=$W/sock --tmpdir=$W/tmp --port=$P --bind-address=127.0.0.1 --server-id=1 --log-bin=binlog --binlog-format=ROW --binlog-row-metadata=FULL --log-error=$W/err ${MARIADB_OPTS:-} & DBP=$!
redis-server --port $RP --save "" --appendonly no --dir $W ${REDIS_OPTS:-} >/dev/null & RPID=$!
# Whatever else the caller starts goes in EXTRA_PIDS, to be stopped with the servers.
EXTRA_PIDS=""
trap 'kill $EXTRA_PIDS $DBP $RPID 2>/dev/null; wait; rm -rf $W' EXIT
for i in $(seq 100); do mariadb -uroot -h127.0.0.1 -P$P -e "select 1" >/dev/null 2>&1 && break; sleep 0.2; done
sql() { mariadb -uroot -h127.0.0.1 -P$P -e "$1"; }
cpu() { awk '{print ($14+$15)/100}' /proc/$1/stat; }
# one_rule_config TABLE ACTION KEY [START]: $W/c.toml for these servers, with one rule.
one_rule_config() {
  cat > $W/c.toml <<EOT
[source]
url = "mysql://root@127.0.0.1:$P/"
server_id = 99
${4:+start = \"$4\"}
[redis]
url = "redis://127.0.0.1:$RP/0"
[log]
level = "warn"
[[rules]]
table = "$1"
action = "$2"
key = "$3"
EOT
}
