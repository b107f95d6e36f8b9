#!/usr/bin/env bash
# Compare metro with tcptrace and tshark on the same generated capture, in the same run.
#
#   scripts/compare.sh [PACKETS [CONNECTIONS [RUNS]]]     (defaults: 1000000 10000 3)
#
# Generates the capture once (cached under target/bench-data, keyed by seed and size), warms
# the page cache, then times, best of RUNS:
#   metro analyze FILE                    (release build; also pinned to one core)
#   tcptrace -r FILE                      (per-connection RTT statistics)
#   tshark -r FILE -Y tcp.analysis.ack_rtt -T fields -e tcp.analysis.ack_rtt
# and prints each one's time, packets per second and ratio to metro's time. Every tool's
# output goes to /dev/null except the line counts shown for tshark and metro's sample counts.
#
# Needs tshark, tcptrace (Debian packages of the same names). Run as root, the script installs
# whichever is missing with apt-get; otherwise it says what to install.
set -euo pipefail

PACKETS=${1:-1000000}
CONNECTIONS=${2:-10000}
RUNS=${3:-3}
SEED=${SEED:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
data="$target/bench-data"
mkdir -p "$data"

# --- tools -----------------------------------------------------------------------------------
missing=()
command -v tshark >/dev/null || missing+=(tshark)
command -v tcptrace >/dev/null || missing+=(tcptrace)
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]} ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # tshark asks whether non-root users may capture; answer no without a prompt.
        echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing: ${missing[*]}. Install with: sudo apt-get install ${missing[*]}" >&2
        echo "(continuing without them)" >&2
    fi
fi

# --- build and generate ----------------------------------------------------------------------
echo "building metro (release) ..." >&2
cargo build --release --quiet -p metro --bin metro -p metro-bench --bin metro-gen
metro="$target/release/metro"
file="$data/compare-s$SEED-p$PACKETS-c$CONNECTIONS.pcap"
if "$metro" generate --help >/dev/null 2>&1; then
    gen=("$metro" generate)
else
    gen=("$target/release/metro-gen")
fi
# Regenerate when the generator was rebuilt since (its model may have changed).
if [[ ! -s $file || ${gen[0]} -nt $file ]]; then
    echo "generating $file ..." >&2
    "${gen[@]}" --seed "$SEED" --packets "$PACKETS" --connections "$CONNECTIONS" --output "$file.tmp" --verbose
    mv "$file.tmp" "$file"
fi
cat "$file" >/dev/null # into the page cache

# --- timing ----------------------------------------------------------------------------------
# best_of NAME CMD...: runs CMD (stdout to /dev/null) RUNS times, prints the best wall time.
best_of() {
    local best="" t0 t1 dt
    for ((i = 0; i < RUNS; i++)); do
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; echo "nan"; return; }
        t1=$(date +%s.%N)
        dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
        if [[ -z $best ]] || awk -v d="$dt" -v b="$best" 'BEGIN { exit !(d < b) }'; then best=$dt; fi
    done
    echo "$best"
}

names=()
times=()
add() {
    local name=$1
    shift
    echo "timing: $name ..." >&2
    names+=("$name")
    times+=("$(best_of "$@")")
}

add "metro analyze" "$metro" analyze --quiet "$file"
if command -v taskset >/dev/null; then
    add "metro analyze (1 core)" taskset -c 0 "$metro" analyze --quiet "$file"
fi
if command -v tcptrace >/dev/null; then
    add "tcptrace -r" tcptrace -r -n "$file"
fi
if command -v tshark >/dev/null; then
    add "tshark ack_rtt" tshark -n -r "$file" -Y tcp.analysis.ack_rtt -T fields -e tcp.analysis.ack_rtt
fi

# --- report ----------------------------------------------------------------------------------
echo
echo "capture: $file"
echo "$PACKETS packets, $CONNECTIONS concurrent connections; best of $RUNS runs; $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-24s %10s %12s %10s\n' "tool" "seconds" "Mpkt/s" "x metro"
base=${times[0]}
for i in "${!names[@]}"; do
    t=${times[$i]}
    if [[ $t == nan ]]; then
        printf '%-24s %10s\n' "${names[$i]}" "failed"
        continue
    fi
    awk -v n="${names[$i]}" -v t="$t" -v p="$PACKETS" -v b="$base" \
        'BEGIN { printf "%-24s %10.3f %12.2f %10.1f\n", n, t, p / t / 1e6, t / b }'
done
if command -v tshark >/dev/null; then
    n=$(tshark -n -r "$file" -Y tcp.analysis.ack_rtt -T fields -e tcp.analysis.ack_rtt 2>/dev/null | wc -l)
    echo
    echo "tshark ack_rtt values: $n"
    "$metro" analyze "$file" 2>&1 >/dev/null | grep -E '^ *samples:' || true
fi
