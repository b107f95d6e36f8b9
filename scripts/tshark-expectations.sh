#!/usr/bin/env bash
# Regenerate crates/metro/tests/data/tshark_ack_rtt.tsv: tshark's tcp.analysis.ack_rtt for every
# frame of every capture in the shared corpus that has one. The corpus test compares metro's
# seq/handshake samples against this file, so tshark is not needed to run the tests.
#
# usage: scripts/tshark-expectations.sh [CORPUS_DIR]    (needs tshark; Debian: apt-get install tshark)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=${1:-$here/../shared/corpus}
out=$here/crates/metro/tests/data/tshark_ack_rtt.tsv
tmp=$(mktemp)
{
  echo "# tshark $(tshark --version | head -1 | awk '{print $3}'): tshark -r FILE -Y tcp.analysis.ack_rtt -T fields -e frame.number -e tcp.analysis.ack_rtt"
  echo -e "file\tframe\tack_rtt"
  for f in "$corpus"/*; do
    case "$f" in *.md|*.tsv) continue;; esac
    name=$(basename "$f")
    tshark -r "$f" -Y tcp.analysis.ack_rtt -T fields -e frame.number -e tcp.analysis.ack_rtt 2>/dev/null \
      | awk -v n="$name" -F'\t' '$1!="" && $2!="" {split($2, a, ","); print n "\t" $1 "\t" a[1]}' || true
  done
} > "$tmp"
mv "$tmp" "$out"
echo "wrote $out ($(($(wc -l < "$out") - 2)) samples)"
