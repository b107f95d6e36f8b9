#!/usr/bin/env bash
# Live benchmark of `metro run`: a generated capture replayed with `tcpreplay --topspeed`
# onto a veth pair between two private network namespaces, `metro run` capturing the other
# end with its default settings, and the CPU it used per million packets next to the same
# figure for `metro analyze -q` of the same file, measured in the same run.
#
#   scripts/live-bench.sh [--quick] [--packets N] [--connections C] [--seed S] [--no-build] [--perf]
#                         [--pause-metro SECONDS] [--fleet] [--capture auto|ebpf|pcap] [--threads N]
#                         [--perf-all] [--pps N] [--callgrind]
#
#   default   2,000,000 packets over 20,000 concurrent connections, seed 1
#   --quick     500,000 packets over  5,000 concurrent connections
#   --no-build  use target/release/metro as it is (default: `cargo build --release -p metro`)
#   --perf      also profile metro during the replay (`perf record -g`, Debian `linux-perf`)
#               and print the top of `perf report`; the data stays in target/bench-data/
#   --perf-all  profile every CPU instead (`perf record -a`): where the capture's kernel work
#               (AF_PACKET's copy into libpcap's ring, the tc program) runs, by command
#   --pps N     replay at N packets/s (`tcpreplay --pps`) instead of --topspeed, for the
#               highest drop-free rate (the replay with nothing capturing stays --topspeed)
#   --callgrind run metro under callgrind (valgrind) and report the instructions it executed
#               per packet received (user space only: the kernel's work and its system calls are
#               not counted), next to `metro analyze -q --threads 1`'s under callgrind: counts
#               that compare across builds and paths on a loaded machine, which CPU seconds do
#               not. Replays at --pps (default 20000: callgrind runs ~50x slower and the ring
#               must not overflow); the output files stay in target/bench-data/.
#   --pause-metro S  stop metro (SIGSTOP) for S seconds during the replay: the ring overflows,
#               so the run must report kernel drops and exit 1 (checks the drop detection)
#   --fleet     every fleet output on: `distributions: true` (every sample a DogStatsD
#               distribution value), `prometheus_listen` (histogram buckets per series) and
#               `otlp_endpoint` (an exponential histogram per series, pushed to a port on the
#               namespace's loopback where nothing listens: the encoding is done, the push
#               fails at once). Compare its CPU per million packets with a run without.
#   --capture M the instance's `capture` key: `ebpf` (the in-kernel program), `pcap`
#               (libpcap) or `auto` (the default: ebpf when it loads). Run the script once
#               with each to compare; the report names the path metro took. metro's CPU is
#               its own threads' time: the kernel's work for either path (the tc program, or
#               copying frames into libpcap's ring) runs in softirq context on the delivering
#               CPU and shows in the sender's rate and CPU (its own rows) instead.
#   --threads N the instance's `threads` key: N engine threads for an in-kernel capture.
#
# Run as root. Installs `tcpreplay` and `iproute2` with apt-get if missing; needs python3
# (the DogStatsD listener).
#
# What it does:
#   1. generates (or reuses) target/bench-data/live-sS-pN-cC.pcap with `metro generate`
#      (regenerated when the metro binary is newer than the file);
#   2. creates two network namespaces of its own joined by a veth pair (no addresses, IPv6
#      off; the generated packets never leave the pair and no other interface or namespace
#      carries anything). Everything is deleted by a trap, on success or failure;
#   3. in the receiving namespace: a DogStatsD listener on 127.0.0.1 (UDP) and `metro run`
#      with a configuration that sets only the interface, the watch list (the generator's
#      address space: clients 10.0.0.0/8 and fd00:0:0:c::/64, servers 172.16.0.0/12 and
#      fd00:0:0:5::/64, so every packet of the capture passes the kernel filter) and the
#      DogStatsD address; every other key (snaplen, buffer_size, flush_interval, max_flows...)
#      is the default;
#   4. `tcpreplay --topspeed --preload-pcap --no-flow-stats` of the capture from the sending
#      namespace: once before metro starts (nothing captures: the sender's own ceiling),
#      then with metro capturing;
#   5. waits for metro to drain (its CPU time stops moving, then 2 s so that libpcap's drop
#      counter has been read again), reads metro's utime+stime from /proc/PID/stat, sends
#      SIGTERM (metro flushes once more and exits 0), and totals the DogStatsD self-metrics
#      `metro.packets.received` and `metro.packets.dropped` over every flush;
#   6. times `metro analyze -q` of the same file (page cache warm; best of 2 by CPU);
#   7. prints a table. Exit status 1 if the kernel dropped packets (or packets were lost
#      before the capture: metro received fewer than tcpreplay sent); the results are also
#      written to target/bench-data/live-results.md.
set -euo pipefail

PACKETS=2000000
CONNECTIONS=20000
SEED=1
BUILD=1
PERF=0
PAUSE=""
FLEET=0
CAPTURE=""
THREADS=""
PPS=""
CALLGRIND=0
while (($#)); do
    case $1 in
    --quick) PACKETS=500000 CONNECTIONS=5000 ;;
    --packets) PACKETS=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --no-build) BUILD=0 ;;
    --perf) PERF=1 ;;
    --perf-all) PERF=2 ;;
    --pps) PPS=$2; shift ;;
    --callgrind) CALLGRIND=1 ;;
    --pause-metro) PAUSE=$2; shift ;;
    --fleet) FLEET=1 ;;
    --capture) CAPTURE=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if ((CALLGRIND)); then
    command -v valgrind >/dev/null || { echo "live-bench: --callgrind needs valgrind" >&2; exit 2; }
    ((PERF)) && { echo "live-bench: --callgrind and --perf exclude each other" >&2; exit 2; }
    PPS=${PPS:-20000}
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "live-bench: run as root (it creates network namespaces)" >&2
    exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
data="$target/bench-data"
mkdir -p "$data"
metro="$target/release/metro"

# --- tools -----------------------------------------------------------------------------------
missing=()
command -v tcpreplay >/dev/null || missing+=(tcpreplay)
command -v ip >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
    echo "installing ${missing[*]} ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v python3 >/dev/null || { echo "live-bench: python3 is needed (DogStatsD listener)" >&2; exit 2; }

# --- build and generate ----------------------------------------------------------------------
if ((BUILD)); then
    echo "building metro (release) ..." >&2
    cargo build --release --quiet -p metro
fi
[[ -x $metro ]] || { echo "live-bench: no $metro (build it: cargo build --release -p metro)" >&2; exit 2; }
file="$data/live-s$SEED-p$PACKETS-c$CONNECTIONS.pcap"
if [[ ! -s $file || $metro -nt $file ]]; then
    echo "generating $file ..." >&2
    "$metro" generate --seed "$SEED" --packets "$PACKETS" --connections "$CONNECTIONS" \
        --output "$file.tmp"
    mv "$file.tmp" "$file"
fi

# --- namespaces, cleaned up on any exit ------------------------------------------------------
tag="mlb$$"
ns_tx="metro-livebench-$$-tx"
ns_rx="metro-livebench-$$-rx"
if_tx="${tag}t" # in ns_tx: tcpreplay sends here
if_rx="${tag}r" # in ns_rx: metro captures here
tmp=$(mktemp -d /tmp/metro-live-bench.XXXXXX)
metro_pid="" time_pid="" listener_pid="" replay_pid="" perf_pid="" pause_pid=""

stop_pid() { # stop_pid PID: SIGTERM, then SIGKILL after 5 s
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$replay_pid"
    stop_pid "$pause_pid"
    [[ -n $metro_pid ]] && kill -CONT "$metro_pid" 2>/dev/null
    [[ -n $perf_pid ]] && kill -INT "$perf_pid" 2>/dev/null
    stop_pid "$metro_pid"
    stop_pid "$time_pid"
    stop_pid "$listener_pid"
    wait 2>/dev/null || true
    ip netns del "$ns_tx" 2>/dev/null || true
    ip netns del "$ns_rx" 2>/dev/null || true
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$ns_tx"
ip netns add "$ns_rx"
for ns in "$ns_tx" "$ns_rx"; do
    ip -n "$ns" link set lo up
    # No IPv6 on the namespace's interfaces: no link-local address, no router solicitation.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
done
ip link add "$if_tx" netns "$ns_tx" type veth peer name "$if_rx" netns "$ns_rx"
ip -n "$ns_tx" link set "$if_tx" up
ip -n "$ns_rx" link set "$if_rx" up

# The machine's CPU time by kind (/proc/stat, all CPUs, clock ticks): "user system softirq".
machine_cpu() { awk '$1 == "cpu" { print $2 + $3, $4, $8 }' /proc/stat; }
replay() { # replay OUT: tcpreplay from ns_tx (--topspeed, or REPLAY_RATE's option), output to
    # OUT, the sender's own CPU (user, sys s) to OUT.time and the machine's (user, system,
    # softirq ticks over the replay) to OUT.machine
    local rate=(--topspeed) before
    [[ -n ${REPLAY_RATE:-} ]] && read -ra rate <<<"$REPLAY_RATE"
    before=$(machine_cpu)
    if [[ -x /usr/bin/time ]]; then
        ip netns exec "$ns_tx" /usr/bin/time -f '%U %S' -o "$1.time" \
            tcpreplay "${rate[@]}" --preload-pcap --no-flow-stats -i "$if_tx" "$file" >"$1" 2>&1 &
    else
        ip netns exec "$ns_tx" tcpreplay "${rate[@]}" --preload-pcap --no-flow-stats -i "$if_tx" "$file" \
            >"$1" 2>&1 &
    fi
    replay_pid=$!
    wait "$replay_pid" || { cat "$1" >&2; replay_pid=""; exit 2; }
    replay_pid=""
    paste -d' ' <(echo "$before") <(machine_cpu) | awk '{ print $4 - $1, $5 - $2, $6 - $3 }' >"$1.machine"
}
sender_cpu() { # sender_cpu OUT: "user sys" of the replay's tcpreplay, or "- -"
    if [[ -s $1.time ]]; then tail -1 "$1.time"; else echo "- -"; fi
}
# tcpreplay fields: packets sent, failed, pps, seconds.
replay_fields() {
    awk '/Successful packets:/ { ok = $3 } /Failed packets:/ { bad = $3 }
         /Rated:/ { for (i = 1; i <= NF; i++) if ($i ~ /^pps/) pps = $(i - 1) }
         /Actual:/ { for (i = 1; i <= NF; i++) if ($i == "in") secs = $(i + 1) }
         END { printf "%s %s %.0f %s\n", ok, bad, pps, secs }' "$1"
}

# The sender's ceiling: the same replay with nothing capturing on the other end.
cat "$file" >/dev/null # page cache
echo "replaying $file ($(du -m "$file" | cut -f1) MB) with nothing capturing ..." >&2
REPLAY_RATE="" replay "$tmp/tcpreplay-alone.txt"
read -r alone_sent _ alone_pps alone_s < <(replay_fields "$tmp/tcpreplay-alone.txt")

# --- DogStatsD listener ----------------------------------------------------------------------
port=8125
cat >"$tmp/listener.py" <<'EOF'
# DogStatsD listener: totals the metro.* self-metrics over every datagram; on SIGTERM it
# drains the socket and writes `name value` lines.
import signal, socket, sys

port, out, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:  # SO_RCVBUFFORCE (root): a flush of tens of thousands of pairs must not overflow it
    s.setsockopt(socket.SOL_SOCKET, 33, 512 << 20)
except OSError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 512 << 20)
s.bind(("127.0.0.1", port))
s.settimeout(0.3)
open(ready, "w").close()
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
totals = {"datagrams": 0, "bytes": 0, "lines": 0, "pairs": 0, "bad_lines": 0}
while True:
    try:
        d = s.recv(65536)
    except socket.timeout:
        if stop:
            break
        continue
    totals["datagrams"] += 1
    totals["bytes"] += len(d)
    for line in d.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        totals["lines"] += 1
        try:
            name, rest = line.split(":", 1)
            fields = rest.split("|")
            value = float(fields[0])
        except ValueError:
            totals["bad_lines"] += 1
            continue
        if name == "system.net.tcp.rtt.samples":
            totals["pairs"] += 1  # one per (src, dst) pair and flush
            name = "rtt.samples"
        elif not name.startswith("metro."):
            continue
        totals[name] = totals.get(name, 0) + value
with open(out, "w") as f:
    for k, v in totals.items():
        f.write(f"{k} {v:.0f}\n")
EOF
ip netns exec "$ns_rx" python3 "$tmp/listener.py" "$port" "$tmp/statsd.txt" "$tmp/listener.ready" &
listener_pid=$!
for ((i = 0; i < 100; i++)); do
    [[ -e $tmp/listener.ready ]] && break
    kill -0 "$listener_pid" 2>/dev/null || { echo "live-bench: the DogStatsD listener failed" >&2; exit 2; }
    sleep 0.05
done
[[ -e $tmp/listener.ready ]] || { echo "live-bench: the DogStatsD listener did not start" >&2; exit 2; }

# --- metro run -------------------------------------------------------------------------------
# Only what the setup needs; every other key keeps its default.
cat >"$tmp/metro.yaml" <<EOF
init_config:
  statsd_ip: 127.0.0.1
  statsd_port: $port
$(if ((FLEET)); then printf '  distributions: true\n  prometheus_listen: 127.0.0.1:9464\n  otlp_endpoint: http://127.0.0.1:4318\n'; fi)
instances:
  - interface: $if_rx
    ips: [10.0.0.0/8, 172.16.0.0/12, 'fd00:0:0:c::/64', 'fd00:0:0:5::/64']
$(if [[ -n $CAPTURE ]]; then printf '    capture: %s\n' "$CAPTURE"; fi)
$(if [[ -n $THREADS ]]; then printf '    threads: %s\n' "$THREADS"; fi)
EOF
ip netns exec "$ns_rx" "$metro" check-config "$tmp/metro.yaml" >"$tmp/check-config.txt" 2>&1 || {
    cat "$tmp/check-config.txt" >&2
    exit 2
}

# metro itself, or metro under callgrind.
run_metro=("$metro")
if ((CALLGRIND)); then
    rm -f "$data/live-callgrind.out"
    run_metro=(valgrind --tool=callgrind --callgrind-out-file="$data/live-callgrind.out" "$metro")
fi

# Under /usr/bin/time (when present) for the total CPU including the final flush; metro is
# its child, found by parent pid.
if [[ -x /usr/bin/time ]]; then
    ip netns exec "$ns_rx" /usr/bin/time -f '%U %S %M' -o "$tmp/time.txt" \
        "${run_metro[@]}" run --config "$tmp/metro.yaml" 2>"$tmp/metro.log" &
    time_pid=$!
    for ((i = 0; i < 100; i++)); do
        metro_pid=$(pgrep -P "$time_pid" || true)
        [[ -n $metro_pid ]] && break
        sleep 0.05
    done
else
    ip netns exec "$ns_rx" "${run_metro[@]}" run --config "$tmp/metro.yaml" 2>"$tmp/metro.log" &
    metro_pid=$!
fi
[[ -n $metro_pid ]] || { echo "live-bench: metro run did not start" >&2; exit 2; }
for ((i = 0; i < 200 * (1 + 4 * CALLGRIND); i++)); do
    grep -q "capture filter" "$tmp/metro.log" 2>/dev/null && break
    kill -0 "$metro_pid" 2>/dev/null || { echo "live-bench: metro run exited:" >&2; cat "$tmp/metro.log" >&2; exit 2; }
    sleep 0.05
done
grep -q "capture filter" "$tmp/metro.log" || { echo "live-bench: metro run installed no filter:" >&2; cat "$tmp/metro.log" >&2; exit 2; }

clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of PID (all threads), in clock ticks; `cpu_ticks PID split`: "utime stime"
    local s split=${2:-}
    s=$(<"/proc/$1/stat")
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    if [[ -n $split ]]; then echo "${12} ${13}"; else echo $((${12} + ${13})); fi
}
sysfs() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"; }

# --- replay ----------------------------------------------------------------------------------
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rx_before=$(sysfs "$ns_rx" "$if_rx" rx_packets)
cpu_start=$(cpu_ticks "$metro_pid")
if ((PERF)); then
    command -v perf >/dev/null || { echo "live-bench: --perf needs perf (apt-get install linux-perf)" >&2; exit 2; }
    if ((PERF == 2)); then # every CPU: the kernel's share of capture wherever it runs
        perf record -q -a -g -F 1999 -o "$data/live-perf.data" 2>"$tmp/perf.err" &
    else
        perf record -q ${LIVE_BENCH_CALL_GRAPH:--g} -F 1999 -p "$metro_pid" -o "$data/live-perf.data" 2>"$tmp/perf.err" &
    fi
    perf_pid=$!
    sleep 0.5
fi
echo "replaying it onto $if_tx -> $if_rx, metro run capturing ..." >&2
if [[ -n $PAUSE ]]; then
    # Once packets flow (tcpreplay preloads the file first): the receiving veth's counter,
    # read from metro's own view of its namespace.
    rx_now() { awk -v i="$if_rx:" '$1 == i { print $3 }' "/proc/$metro_pid/net/dev"; }
    rx0=$(rx_now)
    (
        while (($(rx_now) < rx0 + 10000)); do sleep 0.01; done
        kill -STOP "$metro_pid" && sleep "$PAUSE"
        kill -CONT "$metro_pid"
    ) &
    pause_pid=$!
fi
REPLAY_RATE=${PPS:+--pps $PPS} replay "$tmp/tcpreplay.txt"
if [[ -n $pause_pid ]]; then
    wait "$pause_pid" || true
    pause_pid=""
fi

# Wait for metro to drain the ring: until its CPU time stops moving for 0.5 s (30 s at
# most), then 2 s more so that the capture thread has read libpcap's drop counter again
# (it does so every second).
prev=-1
for ((i = 0; i < 60; i++)); do
    now=$(cpu_ticks "$metro_pid")
    ((now == prev)) && break
    prev=$now
    sleep 0.5
done
sleep 2
if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    perf_pid=""
fi
cpu_end=$(cpu_ticks "$metro_pid")
read -r cpu_end_user cpu_end_sys < <(cpu_ticks "$metro_pid" split)
kill -TERM "$metro_pid"
if [[ -n $time_pid ]]; then
    wait "$time_pid" && metro_rc=0 || metro_rc=$?
else
    wait "$metro_pid" && metro_rc=0 || metro_rc=$?
fi
metro_pid="" time_pid=""
if ((metro_rc != 0)); then
    echo "live-bench: metro run exited with status $metro_rc after SIGTERM:" >&2
    tail -20 "$tmp/metro.log" >&2
    exit 2
fi
kill -TERM "$listener_pid"
wait "$listener_pid" || true
listener_pid=""

rx_packets=$(($(sysfs "$ns_rx" "$if_rx" rx_packets) - rx_before))
# UDP datagrams the namespace's stack dropped for want of receive buffer (the listener's).
udp_rcvbuf_errors=$(ip netns exec "$ns_rx" awk '$1 == "Udp:" && !h { for (i = 2; i <= NF; i++) c[$i] = i; h = 1; next }
    $1 == "Udp:" { print $c["RcvbufErrors"] }' /proc/net/snmp)
rx_dropped=$(sysfs "$ns_rx" "$if_rx" rx_dropped)
tx_dropped=$(sysfs "$ns_tx" "$if_tx" tx_dropped)

# --- metro analyze of the same file ----------------------------------------------------------
# CPU (user + sys), best of 2 by CPU; the file is in the page cache.
TIMEFORMAT='%R %U %S'
an_cpu="" an_wall=""
for _ in 1 2; do
    { time "$metro" analyze -q "$file" >/dev/null 2>"$tmp/analyze.err"; } 2>"$tmp/analyze.time" || {
        cat "$tmp/analyze.err" >&2
        exit 2
    }
    read -r w u s <"$tmp/analyze.time"
    c=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.3f", u + s }')
    if [[ -z $an_cpu ]] || awk -v c="$c" -v b="$an_cpu" 'BEGIN { exit !(c < b) }'; then
        an_cpu=$c an_wall=$w an_user=$u an_sys=$s
    fi
done

# --- callgrind: instructions per packet, live and analyze ------------------------------------
cg_total() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }
if ((CALLGRIND)); then
    echo "metro analyze -q --threads 1 under callgrind ..." >&2
    valgrind --tool=callgrind --callgrind-out-file="$data/live-callgrind-analyze.out" \
        "$metro" analyze -q --threads 1 "$file" >/dev/null 2>"$tmp/analyze-cg.err" || {
        cat "$tmp/analyze-cg.err" >&2
        exit 2
    }
fi

# --- report ----------------------------------------------------------------------------------
metric() { awk -v k="$1" '$1 == k { print $2; f = 1 } END { if (!f) print 0 }' "$tmp/statsd.txt"; }
read -r sent failed rate_pps replay_s < <(replay_fields "$tmp/tcpreplay.txt")
received=$(metric metro.packets.received)
dropped=$(metric metro.packets.dropped)
samples=$(($(metric metro.samples)))
pairs=$(metric pairs)
live_cpu=$(awk -v b="$cpu_end" -v t="$clk_tck" 'BEGIN { printf "%.2f", b / t }')
live_user=$(awk -v b="$cpu_end_user" -v t="$clk_tck" 'BEGIN { printf "%.2f", b / t }')
live_sys=$(awk -v b="$cpu_end_sys" -v t="$clk_tck" 'BEGIN { printf "%.2f", b / t }')
live_cpu_replay=$(awk -v a="$cpu_start" -v b="$cpu_end" -v t="$clk_tck" 'BEGIN { printf "%.2f", (b - a) / t }')
live_total=""
if [[ -s $tmp/time.txt ]]; then
    read -r tu ts tm < <(tail -1 "$tmp/time.txt")
    live_total=$(awk -v u="$tu" -v s="$ts" 'BEGIN { printf "%.2f", u + s }')
    live_rss_mb=$((tm / 1024))
fi
machine_s() { awk -v t="$clk_tck" '{ printf "%.2f, %.2f, %.2f", $1 / t, $2 / t, $3 / t }' "$1.machine"; }
per_m() { awk -v c="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.3f", c / (n / 1e6); else print "-" }'; }
live_per_m=$(per_m "$live_cpu" "$received")
an_per_m=$(per_m "$an_cpu" "$PACKETS")
ratio=$(awk -v a="$live_per_m" -v b="$an_per_m" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')

verdict="PASS: zero kernel drops"
status=0
if ((dropped > 0)); then
    verdict="FAIL: the kernel dropped $dropped packets ($(awk -v d="$dropped" -v s="$sent" 'BEGIN { printf "%.2f", 100 * d / s }')%)"
    status=1
elif ((received != sent)); then
    verdict="FAIL: metro received $received of $sent packets sent (libpcap reports no drop; veth received $rx_packets; UDP receive-buffer errors $udp_rcvbuf_errors)"
    status=1
fi

report=$(
    cat <<EOF
Live capture: \`tcpreplay --topspeed\` onto a veth, \`metro run\` (default settings) on the peer

capture: $(basename "$file")
  $PACKETS packets, $CONNECTIONS concurrent connections, seed $SEED, $(du -m "$file" | cut -f1) MB
machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r), load average before: $load_before

| measure                                   | value |
|---|---|
| tcpreplay packets sent (failed)           | $sent ($failed) |
| tcpreplay time, rate                      | $replay_s s, $rate_pps pps |
| same replay with nothing capturing        | $alone_s s, $alone_pps pps |
| sender (tcpreplay) CPU s user, sys: capturing / alone | $(sender_cpu "$tmp/tcpreplay.txt") / $(sender_cpu "$tmp/tcpreplay-alone.txt") |
| machine CPU s user, system, softirq over the replay: capturing / alone | $(machine_s "$tmp/tcpreplay.txt") / $(machine_s "$tmp/tcpreplay-alone.txt") |
| veth rx packets (rx dropped, peer tx dropped) | $rx_packets ($rx_dropped, $tx_dropped) |
| metro.packets.received                    | $received |
| capture path (metro.capture.ebpf)         | $(if (($(metric metro.capture.ebpf) > 0)); then echo "in the kernel (eBPF)"; else echo "libpcap"; fi)${THREADS:+, threads: $THREADS} |
| metro.packets.dropped (kernel)            | $dropped |
| metro.samples (all kinds)                 | $samples |
| (src, dst) pairs reported                 | $pairs |
| DogStatsD datagrams (UDP rcvbuf errors)   | $(metric datagrams) ($udp_rcvbuf_errors) |
| metro run CPU s, start to before SIGTERM  | $live_cpu (user $live_user, sys $live_sys; during the replay $live_cpu_replay) |
| metro run CPU s, including final flush    | ${live_total:--} |
| metro run peak RSS                        | ${live_rss_mb:--} MB |
| metro analyze -q CPU s                    | $an_cpu (user $an_user, sys $an_sys; wall $an_wall s) |

| CPU s per million packets | |
|---|---|
| metro run (live)          | $live_per_m |
| metro analyze (same file) | $an_per_m |
| ratio live / analyze      | $ratio |
$(if ((CALLGRIND)); then
    live_ir=$(cg_total "$data/live-callgrind.out")
    an_ir=$(cg_total "$data/live-callgrind-analyze.out")
    echo
    echo "| callgrind: instructions per packet (user space) | |"
    echo "|---|---|"
    echo "| metro run (live), over metro.packets.received | $(awk -v i="$live_ir" -v n="$received" 'BEGIN { if (n > 0) printf "%.0f (%s in all)", i / n, i; else print "-" }') |"
    echo "| metro analyze -q --threads 1 (same file)       | $(awk -v i="$an_ir" -v n="$PACKETS" 'BEGIN { printf "%.0f (%s in all)", i / n, i }') |"
fi)

$verdict
EOF
)
echo
echo "$report"
echo "$report" >"$data/live-results.md"
if ((PERF == 1)); then
    echo
    echo "perf report (metro during the replay; data: $data/live-perf.data):"
    perf report -i "$data/live-perf.data" --no-children -g none --percent-limit 0.7 -F overhead,dso,sym --stdio 2>/dev/null |
        grep -v '^#' | grep -E '^ +[0-9]' | head -30 || true
elif ((PERF == 2)); then
    echo
    echo "perf report, every CPU during the replay, by command (data: $data/live-perf.data):"
    perf report -i "$data/live-perf.data" --no-children -g none --sort comm --stdio 2>/dev/null |
        grep -v '^#' | grep -E '^ +[0-9]' | head -12 || true
    echo "the capture's kernel work, by command (AF_PACKET's copy, the tc program, its ring buffer):"
    perf report -i "$data/live-perf.data" --no-children -g none --sort comm,sym --stdio 2>/dev/null |
        grep -v '^#' | grep -E 'tpacket_rcv|packet_rcv|run_filter|bpf_prog_|bpf_ringbuf|__bpf_ringbuf|tcx_|sch_handle|skb_copy_bits|bpf_skb_load|prb_' | head -20 || true
fi
if ((status)); then
    echo
    echo "metro log (last lines):"
    tail -5 "$tmp/metro.log"
fi
exit "$status"
