#!/usr/bin/env bash
# Regenerate crates/metro/tests/data/tshark_proto.tsv: tshark's DNS response times (dns.time)
# and ICMP/ICMPv6 echo response times (icmp.resptime, icmpv6.resptime) for every frame of
# every capture in the shared corpora that has one. crates/metro/tests/it/proto.rs compares
# metro's dns and icmp samples with it, frame by frame, so tshark is not needed to run the tests.
#
# DNS responses sent to a multicast or broadcast address are left out: tshark pairs an mDNS
# host's own probe with its own announcement (no round trip); metro does not time DNS sent
# to a group. tshark's dns.time is in seconds, icmp.resptime in milliseconds: both are
# written here in seconds.
#
# usage: scripts/tshark-proto-expectations.sh [SHARED_DIR]    (needs tshark)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${1:-$here/../shared}
out=$here/crates/metro/tests/data/tshark_proto.tsv
tmp=$(mktemp)
dns='dns.time && !(ip.dst == 224.0.0.0/4) && !(ip.dst == 255.255.255.255) && !(ipv6.dst == ff00::/8)'
{
  echo "# tshark $(tshark --version | head -1 | awk '{print $3}'): -Y '$dns' -e dns.time; -Y icmp.resptime; -Y icmpv6.resptime"
  echo -e "file\tkind\tframe\tseconds"
  for f in "$shared"/corpus/* "$shared"/corpus-proto/*; do
    case "$f" in *.md|*.tsv) continue;; esac
    name=$(basename "$f")
    tshark -r "$f" -Y "$dns" -T fields -e frame.number -e dns.time 2>/dev/null \
      | awk -v n="$name" -F'\t' '$1!="" && $2!="" {split($2, a, ","); print n "\tdns\t" $1 "\t" a[1]}' || true
    for field in icmp.resptime icmpv6.resptime; do
      tshark -r "$f" -Y "$field" -T fields -e frame.number -e "$field" 2>/dev/null \
        | awk -v n="$name" -F'\t' '$1!="" && $2!="" {split($2, a, ","); printf "%s\ticmp\t%s\t%.9f\n", n, $1, a[1] / 1000}' || true
    done
  done
} > "$tmp"
mv "$tmp" "$out"
echo "wrote $out ($(($(wc -l < "$out") - 2)) samples)"
