# Shared by the packaging tests (scripts/{package,unit,container,k8s}-test.sh): sourced from
# the repository's root after setting TEST (the script's name in its messages). It owns how a
# test fails and reports its steps, the background processes to kill on exit, the pair of
# network namespaces joined by a veth with a TCP echo server on the far side and a traffic
# client on the near one, and the waits for a DogStatsD metric or a socket. A failing
# command anywhere, helpers included (errtrace), fails the test with its line.
# shellcheck shell=bash

: "${TEST:?set TEST before sourcing scripts/lib/common.sh}"

fail() {
  echo "$TEST: $*" >&2
  echo "FAIL: $TEST ($*)"
  exit 1
}
step() { echo "== $TEST: $*"; }
# Any other failing command fails the test with its line (set -e alone would exit silently),
# in the helpers too (errtrace). Not in subshells (command substitutions, background jobs):
# there the caller sees the status, and a FAIL line would land in a captured value.
set -E
trap '[ "$BASH_SUBSHELL" != 0 ] || fail "line $LINENO: \`$BASH_COMMAND\` failed"' ERR

need_root() { # WHY
  [ "$(id -u)" = 0 ] || fail "must run as root ($1)"
}

# host_metro_state: this host's own metro, as the packaging tests must leave it (they test in
# a chroot or container of their own): the package's status and version, and the conffile's
# and the binary's checksum, inode, mode and owner, and the binary's capability.
host_metro_state() {
  dpkg-query -W -f='${Status} ${Version}\n' metro 2>/dev/null || echo "metro: no package"
  local f
  for f in /etc/metro/metro.yaml /usr/bin/metro; do
    if [ -e "$f" ]; then
      echo "$(sha256sum <"$f" | cut -d' ' -f1) $(stat -c '%i %a %U:%G %y' "$f") $f"
    else
      echo "$f: absent"
    fi
  done
  [ ! -e /usr/bin/metro ] || echo "capability: $(getcap /usr/bin/metro)"
}
host_metro_unchanged() { # STATE: what host_metro_state said at the start
  local now
  now=$(host_metro_state)
  [ "$now" = "$1" ] || fail "this host's metro changed during the test: was
$1
now
$now"
  echo "$1"
}

# Rootful podman with runc and cgroupfs: crun refuses this machine's hybrid cgroup layout.
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)

# Background processes (receivers, servers, clients), killed by kill_background on exit.
PIDS=()
background() { # COMMAND...: start it in the background, remembered in PIDS
  "$@" &
  PIDS+=($!)
}
kill_background() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}

# netns_names TAG: this run's namespaces NS_A, NS_B (mt-TAG-PID-a/b) and veth ends VETH_A,
# VETH_B (mt + TAG's first letter + a/b + PID: within the kernel's 15 bytes). Set before the
# EXIT trap, so that netns_down knows what to remove whatever state the test ends in.
netns_names() {
  NS_A=mt-$1-$$-a
  NS_B=mt-$1-$$-b
  VETH_A=mt${1:0:1}a$$
  VETH_B=mt${1:0:1}b$$
}

# netns_up NET: NET.1/24 on A's end, NET.2/24 on B's, loopback and the veth up in both, and
# a TCP echo server on NET.2:7777 in B (scripts/lib/testnet.py). NET is a /24's first three
# bytes (10.231.0).
netns_up() {
  NET=$1
  ip netns add "$NS_A"
  ip netns add "$NS_B"
  ip link add "$VETH_A" type veth peer name "$VETH_B"
  ip link set "$VETH_A" netns "$NS_A"
  ip link set "$VETH_B" netns "$NS_B"
  ip -n "$NS_A" addr add "$NET.1/24" dev "$VETH_A"
  ip -n "$NS_B" addr add "$NET.2/24" dev "$VETH_B"
  local ns
  for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
  ip -n "$NS_A" link set "$VETH_A" up
  ip -n "$NS_B" link set "$VETH_B" up
  background ip netns exec "$NS_B" /usr/bin/python3 scripts/lib/testnet.py echo-server "$NET.2" 7777
}
netns_down() {
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
}

# traffic SECONDS: one connection from A to B's echo server, a request every 20 ms.
traffic() {
  background ip netns exec "$NS_A" /usr/bin/python3 scripts/lib/testnet.py client "$NET.2" 7777 "$1"
}

# The tail of every log and receiver output in $WORK (on failure, before it is removed).
show_work_logs() {
  local f
  for f in "$WORK"/*.log "$WORK"/*.out; do
    if [ -s "$f" ]; then
      echo "--- $f"
      tail -n 20 "$f"
    fi
  done
}

wait_for_metric() { # FILE PATTERN SECONDS: 0 once a line of FILE matches, 1 after SECONDS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

wait_for_socket() { # PATH: up to 5 s for a receiver to create its socket
  local i
  for ((i = 0; i < 50; i++)); do
    [ -S "$1" ] && return 0
    sleep 0.1
  done
  fail "no socket at $1 after 5 s"
}

# capture_caps_only PID WHO: metro's effective capabilities are exactly the four capture
# capabilities its file holds as permitted (CAP_NET_RAW, CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF:
# bits 13, 12, 38, 39), which it raises at start (agent::ebpf::raise_capabilities): waits up
# to 5 s for the raise, then checks the set. Prints the status it read.
capture_caps_only() {
  local st i
  for ((i = 0; i < 50; i++)); do
    st=$(cat "/proc/$1/status") || fail "$2 (pid $1) is not running"
    grep -qE '^CapEff:\s+0000000000000000$' <<<"$st" || break
    sleep 0.1
  done
  grep -qE '^CapEff:\s+000000c000003000$' <<<"$st" \
    || fail "$2's effective capabilities are not the four capture capabilities: $(grep ^CapEff <<<"$st")"
  printf '%s\n' "$st"
}
