#!/usr/bin/env bash
# Start-up time and memory of `metro run` against the length of its watch list.
#
#   scripts/watchlist-scale.sh [--no-build] [--sizes "1000 10000 100000 1000000"]
#
#   --no-build  use target/release/metro as it is (default: `cargo build --release -p metro`)
#   --sizes     the list lengths to measure (default 1k, 10k, 100k, 1M)
#
# Run as root (a network namespace). Needs python3 and iproute2.
#
# What it does, for a 1-entry list (the baseline, measured in the same run) and each N:
#   1. writes target/bench-data/watch-N.yaml: N `ips` entries, 60% IPv4 addresses, 20% IPv6
#      addresses, 10% /24 blocks, 10% addresses inside those blocks or exact repeats (so
#      duplicates and overlaps are merged on the way), one instance on `lo`;
#   2. creates a network namespace of its own (deleted by a trap on success or failure) and
#      starts `metro run` in it: only that namespace's `lo` is captured, and nothing else
#      runs there;
#   3. times from the exec to the log line `capture filter` (the YAML parsed and validated,
#      the watch list built, the kernel filter planned, compiled, installed and read back
#      from the socket) and reads the peak RSS (VmHWM) at that moment;
#   4. sends SIGHUP (the same file again) and times it to `configuration reloaded`, then
#      reads the peak RSS again (old and new configurations overlap during a reload);
#   5. sends SIGTERM and checks that metro exits 0;
#   6. times `metro check-config` of the same file (it compiles the same filter);
#   7. prints a table, with ratios against the 1-entry baseline, also written to
#      target/bench-data/watchlist-results.md.
set -euo pipefail

BUILD=1
SIZES="1000 10000 100000 1000000"
while (($#)); do
    case $1 in
    --no-build) BUILD=0 ;;
    --sizes) SIZES=$2; shift ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(id -u)" != 0 ]; then
    echo "run as root: metro captures inside a network namespace of its own" >&2
    exit 1
fi
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }

cd "$(dirname "$0")/.."
if ((BUILD)); then
    cargo build --release -p metro --locked
fi
METRO=$(pwd)/target/release/metro
OUT=target/bench-data
mkdir -p "$OUT"

NS="metro-wl-$$"
cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up

python3 - "$METRO" "$NS" "$OUT" 1 $SIZES <<'PY'
import os, signal, subprocess, sys, time

metro, ns, out = sys.argv[1], sys.argv[2], sys.argv[3]
sizes = [int(s) for s in sys.argv[4:]]

def entries(n):
    """n watch-list entries: addresses, blocks, and entries inside blocks or repeated."""
    v = []
    for i in range(n):
        j = i * 3
        k = i % 10
        if k <= 5:
            v.append("10.%d.%d.%d" % (64 + (j >> 16 & 63), j >> 8 & 255, j & 255))
        elif k <= 7:
            v.append("fd00:%x:%x::1" % (i >> 16, i & 0xFFFF))
        elif k == 8:
            v.append("172.%d.%d.0/24" % (16 + (i >> 16 & 15), i >> 8 & 255))
        elif i % 20 == 9:
            v.append("172.%d.%d.77" % (16 + (i >> 16 & 15), i >> 8 & 255))
        else:
            v.append(v[-1])
    return v

def config(n):
    path = os.path.join(out, "watch-%d.yaml" % n)
    with open(path, "w") as f:
        f.write("init_config:\n  flush_interval: 10\n  statsd_port: 8125\n")
        f.write("instances:\n  - interface: lo\n    ips:\n")
        for e in entries(n):
            f.write("      - '%s'\n" % e)
    return path

def peak_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise SystemExit("no VmHWM for pid %d" % pid)

def wait_log(path, needle, proc, start, timeout=600):
    while True:
        with open(path, errors="replace") as f:
            if needle in f.read():
                return time.monotonic() - start
        if proc.poll() is not None:
            raise SystemExit("metro exited (%s) before logging %r; log in %s" % (proc.returncode, needle, path))
        if time.monotonic() - start > timeout:
            raise SystemExit("metro did not log %r within %ds; log in %s" % (needle, timeout, path))
        time.sleep(0.005)

rows = []
for n in sizes:
    cfg = config(n)
    log = os.path.join(out, "watch-%d.log" % n)
    with open(log, "w") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(["ip", "netns", "exec", ns, metro, "run", "--config", cfg],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        start = wait_log(log, "capture filter", p, t0)
        rss = peak_mib(p.pid)
        t1 = time.monotonic()
        p.send_signal(signal.SIGHUP)
        reload = wait_log(log, "configuration reloaded", p, t1)
        rss_reload = peak_mib(p.pid)
        p.send_signal(signal.SIGTERM)
        if p.wait(timeout=120) != 0:
            raise SystemExit("metro exited %d after SIGTERM; log in %s" % (p.returncode, log))
    with open(log, errors="replace") as f:
        line = next(l for l in f if "capture filter" in l)
    insns = line.split("(")[-1].split(" BPF")[0] if "BPF instructions" in line else "?"
    t0 = time.monotonic()
    cc = subprocess.run([metro, "check-config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    check = time.monotonic() - t0
    if cc.returncode != 0:
        raise SystemExit("check-config failed: %s" % cc.stderr.decode()[-2000:])
    rows.append((n, start, rss, reload, rss_reload, check, insns, os.path.getsize(cfg)))
    print("N=%d: start %.2fs, peak RSS %.0f MiB; SIGHUP %.2fs, %.0f MiB; check-config %.2fs; %s BPF instructions"
          % (n, start, rss, reload, rss_reload, check, insns), file=sys.stderr)

base = rows[0]
lines = [
    "| entries | YAML | start | x base | peak RSS | x base | SIGHUP reload | peak RSS after | check-config | kernel filter |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for (n, start, rss, reload, rss2, check, insns, size) in rows:
    lines.append("| %s | %.1f MB | %.2f s | %.1f | %.0f MiB | %.1f | %.2f s | %.0f MiB | %.2f s | %s insns |" % (
        format(n, ","), size / 1e6, start, start / base[1], rss, rss / base[2], reload, rss2, check, insns))
table = "\n".join(lines)
print(table)
with open(os.path.join(out, "watchlist-results.md"), "w") as f:
    f.write(table + "\n")
PY
