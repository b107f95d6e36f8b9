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

TEST=container-test
. scripts/lib/common.sh

need_root "network namespaces, rootful podman"
RUN_OPTS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

WORK=$(mktemp -d /tmp/metro-ctrtest.XXXXXX)
chmod 755 "$WORK"
netns_names ctr
CTR=mt-ctr-$$
IMAGE=""
cleanup() {
  local rc=$?
  "${PODMAN[@]}" rm -f "$CTR" >/dev/null 2>&1 || true
  "${PODMAN[@]}" rm -f "$CTR-nocap" >/dev/null 2>&1 || true
  kill_background
  netns_down
  [ -n "$IMAGE" ] && [ -z "${KEEP_IMAGE:-}" ] && "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1
  [ $rc = 0 ] || show_work_logs
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
grep -q ' cap_net_admin,cap_net_raw,cap_perfmon,cap_bpf=p$' <<<"$CAPS" || fail "/usr/bin/metro in the image lacks its capture capabilities (+p): '$CAPS'"
echo "no shell; $(sed 's#.*/usr/bin/metro#/usr/bin/metro#' <<<"$CAPS")"

step "network namespaces"
netns_up 10.232.0

step "run: --network host, NET_RAW only, DogStatsD socket mounted from the host"
mkdir -m 755 "$WORK/datadog"
background /usr/bin/python3 scripts/lib/testnet.py dsd-unix "$WORK/datadog/dsd.socket" "$WORK/dsd.out"
wait_for_socket "$WORK/datadog/dsd.socket"
cat >"$WORK/metro.yaml" <<YAML
init_config:
  statsd_socket: /var/run/datadog/dsd.socket
  flush_interval: 2
instances:
  - interface: $VETH_A
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
net_raw_only "$ST" metro
echo "metro runs as uid 65532 with CapEff=CAP_NET_RAW"
traffic 5
ok=""
wait_for_metric "$WORK/dsd.out" "system.net.tcp.rtt.avg:.*dst:10.232.0.2.*ctrtest:$$" 15 && ok=1
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
