#!/usr/bin/env bash
# The container image, end to end, on this machine (as root; CI runs it after the tests):
#
#   1. build it (scripts/container-build.sh: Debian packages only, no registry) and check
#      that its labels and `metro --version` agree, and that it holds no shell;
#   2. run it with podman the way deploy/kubernetes/metro-daemonset.yaml does: --network host
#      (here the "host" is a network namespace joined by a veth pair to another, with TCP
#      traffic between them), all capabilities dropped but NET_RAW, the image's non-root
#      user, a metro.yaml mounted read-only, and the DogStatsD Unix socket's directory
#      mounted from the host: RTT metrics must arrive on that socket;
#   3. the same image without NET_RAW must not capture.
#
# Cleans up (container, image, namespaces, processes) even on failure. Prints PASS or FAIL.
# (This machine's cgroups are hybrid v1/v2, which crun refuses: runc and cgroupfs are used.)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "container-test: $*" >&2
  echo "FAIL: container-test ($*)"
  exit 1
}
step() { echo "== container-test: $*"; }
# Any other failing command fails the test with its line (set -e alone would exit silently).
trap 'fail "line $LINENO: \`$BASH_COMMAND\` failed"' ERR

[ "$(id -u)" = 0 ] || fail "must run as root (network namespaces, rootful podman)"
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
RUN_OPTS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

WORK=$(mktemp -d /tmp/metro-ctrtest.XXXXXX)
chmod 755 "$WORK"
NS_A=mt-ctr-$$-a
NS_B=mt-ctr-$$-b
CTR=mt-ctr-$$
IMAGE=""
PIDS=()
cleanup() {
  local rc=$?
  "${PODMAN[@]}" rm -f "$CTR" >/dev/null 2>&1 || true
  "${PODMAN[@]}" rm -f "$CTR-nocap" >/dev/null 2>&1 || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  [ -n "$IMAGE" ] && [ -z "${KEEP_IMAGE:-}" ] && "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1
  if [ $rc != 0 ]; then
    for f in "$WORK"/*.log "$WORK"/*.out; do
      [ -s "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
    done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

step "build"
IMAGE=$(scripts/container-build.sh | tail -n 1)
[[ "$IMAGE" == localhost/metro:* ]] || fail "container-build.sh printed '$IMAGE', not an image name"
SIZE=$("${PODMAN[@]}" image inspect -f '{{.Size}}' "$IMAGE")
echo "$IMAGE: $((SIZE / 1000000)) MB"

step "labels and version"
LINE=$("${PODMAN[@]}" run --rm "${RUN_OPTS[@]}" --cap-drop=all --cap-add=NET_RAW "$IMAGE" --version)
echo "$LINE"
label() { "${PODMAN[@]}" image inspect -f "{{index .Labels \"org.opencontainers.image.$1\"}}" "$IMAGE"; }
VERSION=$(label version)
REVISION=$(label revision)
[[ "$LINE" == "metro $VERSION (commit $REVISION, built "* ]] \
  || fail "the image labels (version $VERSION, revision $REVISION) disagree with '$LINE'"
[ "$VERSION:$REVISION" != "unknown:unknown" ] || fail "the labels are not set"
echo "labels: version $VERSION, revision $REVISION"
MNT=$("${PODMAN[@]}" image mount "$IMAGE")
for sh in bin/sh usr/bin/sh bin/bash usr/bin/bash bin/dash usr/bin/dash bin/busybox; do
  [ ! -e "$MNT/$sh" ] || { "${PODMAN[@]}" image unmount "$IMAGE" >/dev/null; fail "the image has a shell: /$sh"; }
done
CAPS=$(getcap "$MNT/usr/bin/metro")
"${PODMAN[@]}" image unmount "$IMAGE" >/dev/null
grep -q 'cap_net_raw[=+]ep' <<<"$CAPS" || fail "/usr/bin/metro in the image lacks cap_net_raw+ep: '$CAPS'"
echo "no shell; $(sed 's#.*/usr/bin/metro#/usr/bin/metro#' <<<"$CAPS")"

step "network namespaces"
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "mtca$$" type veth peer name "mtcb$$"
ip link set "mtca$$" netns "$NS_A"
ip link set "mtcb$$" netns "$NS_B"
ip -n "$NS_A" addr add 10.232.0.1/24 dev "mtca$$"
ip -n "$NS_B" addr add 10.232.0.2/24 dev "mtcb$$"
for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
ip -n "$NS_A" link set "mtca$$" up
ip -n "$NS_B" link set "mtcb$$" up
ip netns exec "$NS_B" /usr/bin/python3 scripts/lib/testnet.py echo-server 10.232.0.2 7777 &
PIDS+=($!)

step "run: --network host, NET_RAW only, DogStatsD socket mounted from the host"
mkdir -m 755 "$WORK/datadog"
/usr/bin/python3 scripts/lib/testnet.py dsd-unix "$WORK/datadog/dsd.socket" "$WORK/dsd.out" &
PIDS+=($!)
for ((i = 0; i < 50; i++)); do [ -S "$WORK/datadog/dsd.socket" ] && break; sleep 0.1; done
cat >"$WORK/metro.yaml" <<YAML
init_config:
  statsd_socket: /var/run/datadog/dsd.socket
  flush_interval: 2
instances:
  - interface: mtca$$
    ips: [10.232.0.2]
    tags: [ctrtest:$$]
YAML
chmod 644 "$WORK/metro.yaml"
# nsenter, not `ip netns exec` (which remounts /sys, hiding the cgroup mounts runc needs):
# the container's host network is namespace A.
nsenter --net=/run/netns/"$NS_A" "${PODMAN[@]}" run -d --name "$CTR" "${RUN_OPTS[@]}" --network host \
  --cap-drop=all --cap-add=NET_RAW \
  -v "$WORK/datadog:/var/run/datadog" -v "$WORK/metro.yaml:/etc/metro/metro.yaml:ro" \
  "$IMAGE" >/dev/null
sleep 1
PID=$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' "$CTR")
[ "$PID" -gt 0 ] 2>/dev/null || { "${PODMAN[@]}" logs "$CTR" >"$WORK/ctr.log" 2>&1 || true; fail "the container is not running"; }
ST=$(cat "/proc/$PID/status")
grep -qE '^Uid:\s+65532\s' <<<"$ST" || fail "metro in the container is not uid 65532: $(grep ^Uid <<<"$ST")"
grep -qE '^CapEff:\s+0000000000002000$' <<<"$ST" || fail "metro's effective capabilities are not CAP_NET_RAW alone: $(grep ^CapEff <<<"$ST")"
echo "metro runs as uid 65532 with CapEff=CAP_NET_RAW"
ip netns exec "$NS_A" /usr/bin/python3 scripts/lib/testnet.py client 10.232.0.2 7777 5 &
PIDS+=($!)
ok=""
for ((i = 0; i < 150; i++)); do
  grep -q "system.net.tcp.rtt.avg:.*dst:10.232.0.2.*ctrtest:$$" "$WORK/dsd.out" 2>/dev/null && { ok=1; break; }
  sleep 0.1
done
"${PODMAN[@]}" logs "$CTR" >"$WORK/ctr.log" 2>&1 || true
[ -n "$ok" ] || fail "no system.net.tcp.rtt.avg for dst:10.232.0.2 over the mounted socket"
grep -m1 'system.net.tcp.rtt.avg:' "$WORK/dsd.out"
"${PODMAN[@]}" stop -t 10 "$CTR" >/dev/null
[ "$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$CTR")" = 0 ] || fail "metro did not exit 0 on stop"

step "without NET_RAW the image cannot capture"
rc=0
nsenter --net=/run/netns/"$NS_A" timeout 30 "${PODMAN[@]}" run --name "$CTR-nocap" "${RUN_OPTS[@]}" --network host \
  --cap-drop=all -v "$WORK/metro.yaml:/etc/metro/metro.yaml:ro" "$IMAGE" >"$WORK/nocap.log" 2>&1 || rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || fail "the container without NET_RAW did not fail (exit $rc)"
# The kernel refuses to exec a binary whose file capability cannot be granted; had it run,
# metro would have named CAP_NET_RAW.
grep -Eq 'operation not permitted|CAP_NET_RAW' "$WORK/nocap.log" || fail "the container without NET_RAW failed for another reason: $(cat "$WORK/nocap.log")"
echo "refused as expected (exit $rc): $(head -c 160 "$WORK/nocap.log")"

echo "PASS: container-test ($IMAGE, $((SIZE / 1000000)) MB: labels agree with the binary, capture with NET_RAW only as uid 65532, metrics over the mounted DogStatsD socket)"
