#!/usr/bin/env bash
# metro under hostile input: the figures of README's "Under attack" section (flood and reader
# parts), reproducible from a seed.
#
#   scripts/under-attack.sh                  # release build of this tree
#   BASE=/path/to/older/metro scripts/under-attack.sh   # the same figures for another binary too
#
# 1. SYN flood: `metro generate --attack syn-flood` writes 1M spoofed SYNs in one second from
#    random sources (each answered by the server's SYN/ACK) with 300 real connections among
#    them (client RTT 0.2-5 ms, 10 samples each); `--attack syn-flood-clean` writes the same
#    real packets alone. `metro analyze --max-flows 10000` (1 and 2 threads) over both: the
#    real connections' samples kept, compared exactly (closing time, opening time, kind,
#    endpoints, RTT; frame numbers differ between the two files), the flows shed, peak RSS.
# 2. Far clients: the same with real clients up to 100 ms away, and with clients exactly
#    20 ms, 100 ms and 1.5 s away starting within 0.2 s, the flood lasting until 0.1 s after
#    the last handshake: each handshake outlasts the ~10 ms an unconfirmed entry survives at
#    1M new flows/s in 10,000 entries, and its final ACK is timed from the handshake cache.
#    Fails unless at least 99% of the real samples are kept exactly and none differs.
# 3. The pcapng interface-description bomb (30M blocks, gzip -9): the error and peak RSS.
#
# Needs GNU time (/usr/bin/time), gzip, sort, comm, jq. Files go to target/under-attack/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
work="$target/under-attack"
mkdir -p "$work"
cargo build --release --locked -p metro >&2
metro="$target/release/metro"
bins=("$metro")
[[ -n ${BASE:-} ]] && bins+=("$BASE")
MAX_FLOWS=10000
failed=0

# The real connections' samples of a sample-lines file, as comparable keys: without the file
# name and frame numbers (the flood shifts them), with the closing time (unique per packet).
real_keys() {
    grep -E '"(src|dst)":"198\.1[89]\.' "$1" |
        sed -E 's/^\{"file":"[^"]*","frame":[0-9]+,"open_frame":[0-9]+,//' | sort
}

# Peak RSS (MiB) and exit status of a command; its stderr goes to $work/last.err.
peak() {
    local status=0
    /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null 2>"$work/last.err" || status=$?
    echo "$(($(tail -1 "$work/rss") / 1024)) MiB (exit $status)"
}

gen() { "$metro" generate "$@"; }

# One flood case: generate both captures, then every binary with 1 and 2 threads.
flood_case() {
    local name=$1 seed=$2 rtt_max=$3
    shift 3
    # Further arguments go to both `metro generate` runs.
    gen --attack syn-flood --seed "$seed" --real-rtt-max-us "$rtt_max" "$@" -o "$work/$name.pcap" -v
    gen --attack syn-flood-clean --seed "$seed" --real-rtt-max-us "$rtt_max" "$@" -o "$work/$name-clean.pcap"
    "$metro" analyze -q --samples "$work/$name-clean.jsonl" "$work/$name-clean.pcap" >/dev/null
    real_keys "$work/$name-clean.jsonl" >"$work/$name-clean.keys"
    local total bin threads rss kept other shed
    total=$(wc -l <"$work/$name-clean.keys")
    for bin in "${bins[@]}"; do
        for threads in 1 2; do
            rss=$(peak "$bin" analyze -q --threads "$threads" --max-flows "$MAX_FLOWS" \
                --samples "$work/$name.jsonl" "$work/$name.pcap")
            real_keys "$work/$name.jsonl" >"$work/$name.keys"
            kept=$(comm -12 "$work/$name-clean.keys" "$work/$name.keys" | wc -l)
            other=$(comm -13 "$work/$name-clean.keys" "$work/$name.keys" | wc -l)
            comm -23 "$work/$name-clean.keys" "$work/$name.keys" >"$work/$name.lost"
            "$bin" analyze -q --threads "$threads" --max-flows "$MAX_FLOWS" --format json \
                "$work/$name.pcap" >"$work/$name.json"
            shed=$(jq -r '.summary.evicted | "\(.flows_table_full) flows evicted for room (unconfirmed shed \(.flows_unconfirmed_shed // "-"), confirmed \(.flows_confirmed_evicted // "-"))"' "$work/$name.json")
            cache=$(jq -r '.summary.handshake_cache | if . then "handshake cache: \(.cached) cached, \(.resumed) resumed, \(.overwritten) overwritten" else "no handshake cache" end' "$work/$name.json")
            printf '%s --threads %s: real samples kept exactly: %s of %s (%s.%s%%), %s differing; %s; %s; peak RSS %s\n' \
                "$bin" "$threads" "$kept" "$total" "$((100 * kept / total))" "$((1000 * kept / total % 10))" \
                "$other" "$shed" "$cache" "$rss"
            if [[ $bin == "$metro" ]] && ((other > 0 || 100 * kept < 99 * total)); then
                failed=1
            fi
            if [[ -s $work/$name.lost ]]; then
                printf '    lost: %s; their RTT %s to %s ms\n' \
                    "$(grep -o '"kind":"[a-z]*","src":"[0-9.]*' "$work/$name.lost" |
                        sed -E 's/"kind":"([a-z]*)","src":"(198\.1[89]|[0-9]+).*/\1 answered by \2/; s/by 198\.1[89]/by the client/; s/by [0-9]+$/by the server/' |
                        sort | uniq -c | sed -E 's/^ *//' | paste -sd, -)" \
                    "$(grep -o '"rtt_ms":[0-9.]*' "$work/$name.lost" | cut -d: -f2 | sort -g | head -1)" \
                    "$(grep -o '"rtt_ms":[0-9.]*' "$work/$name.lost" | cut -d: -f2 | sort -g | tail -1)"
            fi
        done
    done
}

echo "== 1. SYN flood: 1M spoofed SYN/s for 1 s, 300 real connections (clients 0.2-5 ms away), max_flows $MAX_FLOWS"
flood_case near 1 5000
echo
echo "== 2. The same with clients 0.2-100 ms away (beyond the ~10 ms the table holds for most)"
flood_case far 3 100000
for rtt_ms in 20 100 1500; do
    echo
    echo "== 2. Clients $rtt_ms ms away, starting within 0.2 s, the flood lasting until 0.1 s after the last handshake"
    flood_case "far-$rtt_ms" 4 $((rtt_ms * 1000)) --real-rtt-min-us $((rtt_ms * 1000)) \
        --real-starts-secs 0.2 --flood-secs "$(awk "BEGIN { print 0.3 + $rtt_ms / 1000 }")"
done
echo

echo "== 3. pcapng interface bomb: 30M interface description blocks, gzip -9"
if [[ ! -s $work/bomb.pcapng.gz ]]; then
    gen --attack interface-bomb --interfaces 30000000 | gzip -9 >"$work/bomb.pcapng.gz"
fi
echo "file: $(stat -c %s "$work/bomb.pcapng.gz") bytes"
for bin in "${bins[@]}"; do
    rss=$(peak "$bin" analyze -q --threads 1 "$work/bomb.pcapng.gz")
    echo "$bin: peak RSS $rss: $(head -c 300 "$work/last.err")"
done
if ((failed)); then
    echo "FAILED: fewer than 99% of the real samples kept exactly, or some differ" >&2
    exit 1
fi
