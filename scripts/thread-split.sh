#!/usr/bin/env bash
# Where `metro analyze --threads N` spends its instructions, thread by thread, against one
# thread: the load-independent side of "N cores vs 1".
#
#   scripts/thread-split.sh BIN FILE [N]          (N defaults to 2)
#
# Runs `BIN analyze -q --threads 1 FILE` and `BIN analyze -q --threads N FILE` under
# callgrind (`--separate-threads=yes`) and prints each thread's instruction count: the
# calling thread (which merges the shards' samples into the tables), the N shards (an
# engine each), the reader (reads, decodes, hands each packet to its shard). Then the
# best scaling those counts allow on N cores: one thread's count over the larger of
# (all threads' count / N) and the busiest thread's count; it assumes the cores never
# wait and the caches help neither run, so a run on a quiet machine may beat it (more
# connections than one core's caches hold) or fall short of it (hand-over stalls).
#
# Counts with callgrind, so figures from two builds compare on a shared machine; wall
# time does not (time both alternately, e.g. `hyperfine -N`, and note the load).
# Needs valgrind (Debian package valgrind).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
bin=$1
file=$2
n=${3:-2}
command -v valgrind >/dev/null || { echo "thread-split.sh: valgrind is not installed" >&2; exit 1; }
[[ -x $bin ]] || { echo "thread-split.sh: $bin: not an executable" >&2; exit 1; }
[[ -r $file ]] || { echo "thread-split.sh: $file: not readable" >&2; exit 1; }
[[ $n =~ ^[0-9]+$ && $n -ge 2 ]] || { echo "thread-split.sh: N must be 2 or more, not $n" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The instruction count of one callgrind output file.
count() { awk '/^summary:/ { print $2; exit }' "$1"; }

valgrind --tool=callgrind --callgrind-out-file="$tmp/one.cg" \
    "$bin" analyze -q --threads 1 "$file" >"$tmp/one.out" 2>"$tmp/one.err" ||
    { cat "$tmp/one.err" >&2; exit 1; }
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$tmp/many.cg" \
    "$bin" analyze -q --threads "$n" "$file" >"$tmp/many.out" 2>"$tmp/many.err" ||
    { cat "$tmp/many.err" >&2; exit 1; }
cmp -s "$tmp/one.out" "$tmp/many.out" ||
    echo "thread-split.sh: warning: --threads $n printed another table than --threads 1" >&2

# Threads in the order they start: the calling thread, the shards, the reader (analyze's
# parallel.rs spawns the shards first). Checked by a function each runs.
files=("$tmp"/many.cg-*)
if [[ ${#files[@]} -ne $((n + 2)) ]]; then
    echo "thread-split.sh: expected $((n + 2)) threads, callgrind saw ${#files[@]}" >&2
    exit 1
fi
grep -q 'read_and_dispatch' "${files[$((n + 1))]}" ||
    { echo "thread-split.sh: the last thread is not the reader" >&2; exit 1; }

one=$(count "$tmp/one.cg")
printf '%-22s %15s\n' "thread" "instructions"
printf '%-22s %15s\n' "--threads 1 (all)" "$one"
names=("merging (calling)")
for ((i = 1; i <= n; i++)); do names+=("shard $i"); done
names+=("reader")
total=0
busiest=0
for i in "${!files[@]}"; do
    c=$(count "${files[$i]}")
    printf '%-22s %15s\n' "${names[$i]}" "$c"
    total=$((total + c))
    ((c > busiest)) && busiest=$c
done
printf '%-22s %15s  (%+.1f%% over one thread)\n' "--threads $n (sum)" "$total" \
    "$(awk -v t="$total" -v o="$one" 'BEGIN { print (t / o - 1) * 100 }')"
awk -v o="$one" -v t="$total" -v b="$busiest" -v n="$n" 'BEGIN {
    share = t / n
    printf "best case on %d cores: %.2fx (one thread / max(sum / %d = %.0f, busiest thread = %.0f))\n",
        n, o / (share > b ? share : b), n, share, b
}'
