#!/usr/bin/env python3
"""Where a process's wall time went while it was off the CPU, from a scheduler trace.

Record the whole machine while the process runs, then give its pid:

    perf record -e sched:sched_switch,sched:sched_wakeup -a -o sched.data -- sleep 5
    scripts/offcpu.py sched.data PID

Each time a thread of PID leaves the CPU, the time until it runs again is counted under
what ended the wait: the process whose wakeup call woke it (mariadbd: binlog data arrived;
redis-server: a reply; swapper: an interrupt on an idle CPU), or "preempted" when it was
switched out while still runnable (state R). The time from a wakeup until it got a CPU
is counted on its own line. Why: `utime + stime` says how much CPU a catch-up used, not
why its wall time was longer than that.
"""

import collections
import re
import subprocess
import sys

LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+): sched:(\w+): (.*)$")
FIELD = re.compile(r"(\w+)=(\S+)")


def events(data):
    text = subprocess.run(
        ["perf", "script", "-i", data, "-F", "comm,pid,tid,cpu,time,event,trace"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [m.groups() for m in map(LINE.match, text.splitlines()) if m]
    rows.sort(key=lambda r: float(r[4]))
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows, pid = events(sys.argv[1]), int(sys.argv[2])
    tids = {int(r[2]) for r in rows if int(r[1]) == pid}
    if not tids:
        sys.exit(f"no event of pid {pid} in {sys.argv[1]}")
    off, woken = {}, {}
    waited, count = collections.Counter(), collections.Counter()
    runqueue, first, last = 0.0, None, None
    for comm, _, _, _, t, event, trace in rows:
        t, kv = float(t), dict(FIELD.findall(trace))
        if event == "sched_wakeup":
            tid = int(kv["pid"])
            if tid in off:
                woken[tid] = (t, comm)
            continue
        prev, nxt = int(kv["prev_pid"]), int(kv["next_pid"])
        if prev in tids:
            off[prev], last = (t, kv["prev_state"]), t
        if nxt in tids:
            first = t if first is None else first
            if nxt in off:
                since, state = off.pop(nxt)
                wake = woken.pop(nxt, None)
                if wake is None or state.startswith("R"):
                    cause, until = "preempted (still runnable)", t
                else:
                    cause, until = f"woken by {wake[1]}", wake[0]
                    runqueue += t - until
                waited[cause] += until - since
                count[cause] += 1
    print(f"pid {pid}, threads {sorted(tids)}: {last - first:.3f} s from first run to last")
    for cause, secs in waited.most_common():
        print(f"  off CPU, {cause}: {secs * 1000:.1f} ms over {count[cause]} waits")
    print(f"  runnable after a wakeup, waiting for a CPU: {runqueue * 1000:.1f} ms")


if __name__ == "__main__":
    main()
