#!/usr/bin/env bash
# Where one core's time goes in `metro analyze`, as instructions per packet by stage.
#
#   scripts/profile.sh [PACKETS [CONNECTIONS]]     (defaults: 200000 2000)
#
# Counts with callgrind (valgrind): exact and repeatable, unlike timings on a shared machine,
# and available where perf has no hardware counters (virtual machines). Generates the capture
# with `metro generate --seed 1` (cached under target/bench-data), runs `metro analyze
# --threads 1` under callgrind, and prints the inclusive instruction count per packet of each
# stage (reader, decoder, engine, per-sample aggregation), then the top functions by their
# own count. The whole program's count includes start-up and the final table, which a
# capture this size does not amortise: the per-stage lines are what the packets cost.
#
# Needs valgrind (Debian package valgrind); run as root, the script installs it if missing.
set -euo pipefail

PACKETS=${1:-200000}
CONNECTIONS=${2:-2000}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
data="$target/bench-data"
mkdir -p "$data"

if ! command -v valgrind >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing valgrind ..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    else
        echo "profile.sh needs valgrind: apt-get install valgrind" >&2
        exit 1
    fi
fi

cargo build --release -p metro -q
metro="$target/release/metro"
capture="$data/profile-s1-p$PACKETS-c$CONNECTIONS.pcap"
if [[ ! -f $capture ]]; then
    "$metro" generate --seed 1 --packets "$PACKETS" --connections "$CONNECTIONS" -o "$capture"
fi

out="$data/callgrind.out"
valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$metro" analyze -q --threads 1 "$capture" >/dev/null 2>"$data/callgrind.log"

echo "metro analyze --threads 1, $PACKETS packets over $CONNECTIONS connections (seed 1)"
echo "instructions per packet, by the source they come from (inlined code counts where it was written):"
callgrind_annotate --threshold=100 --auto=no "$out" 2>/dev/null | awk -v n="$PACKETS" '
    /file:function/ { listing = 1; next }
    listing && /^ *[0-9][0-9,]* \(/ {
        c = $1; gsub(",", "", c)
        f = $0; sub(/^[^)]*\) +/, "", f)
        if (f ~ /\/pcap\//) k = "reader (pcap/)"
        else if (f ~ /\/wire\//) k = "decoder (wire/)"
        else if (f ~ /\/flow\/|\/rtt\/|\/seq\.rs|\/segment\.rs|\/sample\.rs|\/engine\.rs/) k = "engine, inlined into the analyze loop"
        else if (f ~ /aggregate|ddsketch|e_log|floor|log@|analyze\/mod\.rs:<metro::analyze::Collector/) k = "aggregation (sketches, per responder)"
        else if (f ~ /memmove|memcpy/) k = "memcpy (libc: moving decoded packets)"
        else if (f ~ /analyze\/output\.rs|fmt|format/) k = "final table and formatting (once)"
        else if (f ~ /^\/rustc\/|hashbrown|rustc-hash/) {
            # Library code inlined somewhere: charge it to the function it was inlined into.
            g = f; sub(/^[^:]*:/, "", g)
            if (g ~ /wire::|TcpOptions/) k = "decoder (wire/)"
            else if (g ~ /pcap::/) k = "reader (pcap/)"
            else if (g ~ /DDSketch|Collector|Stats/) k = "aggregation (sketches, per responder)"
            else if (g ~ /analyze_one|Engine|Conn::|FlowTable|rtt::/) k = "engine, inlined into the analyze loop"
            else k = "analyze loop, start-up, allocator"
        }
        else k = "analyze loop, start-up, allocator"
        sum[k] += c; total += c
    }
    END {
        for (k in sum) printf "  %-44s %8.1f\n", k, sum[k] / n | "sort -k1,1 -t@"
        close("sort -k1,1 -t@")
        printf "  %-44s %8.1f\n", "total", total / n
    }
'
echo
echo "top functions by their own instructions (file:function, inlined code under its caller):"
callgrind_annotate "$out" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,22p' | cut -c1-150
echo
echo "full data: callgrind_annotate $out"
