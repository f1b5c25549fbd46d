#!/usr/bin/env bash
# The Redis floor of an upsert catch-up: how much CPU a private Redis needs to store the
# writes of scripts/bench-catchup.sh (400,000 new keys, 200,000 overwritten, 100,000
# deleted; JSON values of the sysbench row shape, ~220 bytes), with no daemon at all.
# The commands are prepared in a file first and fed by `redis-cli --pipe`, so the only
# work measured is Redis's: once as one command per write, once the way the daemon sends
# them (one MSET, or one DEL, of 1,000 keys in a MULTI/EXEC per step).
# Usage: scripts/redis-floor.sh [rounds]   (default 2)
set -euo pipefail
W=$(mktemp -d)
RP=$((41000 + RANDOM % 5000))
redis-server --port $RP --save "" --appendonly no --dir $W >/dev/null & RPID=$!
trap 'kill $RPID 2>/dev/null; wait; rm -rf $W' EXIT
for i in $(seq 50); do redis-cli -p $RP ping >/dev/null 2>&1 && break; sleep 0.1; done
python3 - "$W" <<'PY'
import sys
w = sys.argv[1]
def cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)
def value(i):
    return '{"id":%d,"k":%d,"c":"%s","pad":"%s"}' % (i, i % 100, "c" * 120, "p" * 60)
sets = list(range(400000))
sets += [i for t in range(2000) for i in range(t * 200, t * 200 + 100)]
dels = [i for t in range(1000) for i in range(t * 400, t * 400 + 100)]
with open(f"{w}/single.resp", "wb") as f:
    for i in sets:
        f.write(cmd("SET", f"sb:{i}", value(i)))
    for i in dels:
        f.write(cmd("DEL", f"sb:{i}"))
with open(f"{w}/steps.resp", "wb") as f:
    for s in range(0, len(sets), 1000):
        args = ["MSET"]
        for i in sets[s:s + 1000]:
            args += [f"sb:{i}", value(i)]
        f.write(cmd("MULTI") + cmd(*args) + cmd("EXEC"))
    for s in range(0, len(dels), 1000):
        args = ["DEL"] + [f"sb:{i}" for i in dels[s:s + 1000]]
        f.write(cmd("MULTI") + cmd(*args) + cmd("EXEC"))
PY
cpu() { awk '{print ($14+$15)/100}' /proc/$RPID/stat; }
for round in $(seq ${1:-2}); do for f in single steps; do
  redis-cli -p $RP flushall >/dev/null
  C0=$(cpu); S=$(date +%s.%N)
  redis-cli -p $RP --pipe < $W/$f.resp >/dev/null
  E=$(date +%s.%N); C1=$(cpu)
  python3 -c "c=$C1-$C0; t=$E-$S; print(f'$f: 700000 writes, Redis CPU {c:.2f} s ({700000/c:,.0f} writes per CPU-second), wall {t:.2f} s')"
done; done
