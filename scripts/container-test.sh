#!/usr/bin/env bash
# The container image, end to end, on this machine (as root; CI runs it after the tests):
#
#   1. build it (scripts/container-build.sh: Debian packages only, no registry) and check
#      that its labels and `metro --version` agree, and that it holds no shell;
#   2. run it with podman the way deploy/kubernetes/metro.yaml's DaemonSet does, every
#      setting read from the manifest by scripts/lib/k8s-podman.py (so that the two cannot
#      drift): host network (here the "host" is a network namespace joined by veth pairs to
#      two others, with TCP traffic between them), the host's pid namespace, the user, the
#      capabilities (NET_RAW, SYS_PTRACE, DAC_READ_SEARCH), no_new_privs, a read-only root,
#      the host's / read-only at /host with METRO_HOST_ROOT, the ConfigMap's directory and the
#      DogStatsD Unix socket's directory mounted from the host: RTT metrics must arrive on
#      that socket, and a workload container's pairs must carry its container tags (as the
#      local end: container_name; as the remote end: dst_container_name);
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
NS_C=mt-ctr-$$-c
VETH_C=mtcy$$
VETH_AC=mtcx$$  # (VETH_A, VETH_B are mtca$$, mtcb$$)
CTR=mt-ctr-$$
WORKLOAD_IMAGE=localhost/metro-ctrtest-busybox:$$
IMAGE=""
cleanup() {
  local rc=$?
  "${PODMAN[@]}" rm -f "$CTR" >/dev/null 2>&1 || true
  "${PODMAN[@]}" rm -f "$CTR-nocap" >/dev/null 2>&1 || true
  "${PODMAN[@]}" rm -f "$CTR-work" >/dev/null 2>&1 || true
  "${PODMAN[@]}" rmi -f "$WORKLOAD_IMAGE" >/dev/null 2>&1 || true
  kill_background
  netns_down
  ip netns del "$NS_C" 2>/dev/null || true
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

step "run with the DaemonSet's settings (deploy/kubernetes/metro.yaml): container tags"
# A third namespace C for a workload container, joined to A (the "host") by a veth pair.
ip netns add "$NS_C"
ip link add "$VETH_AC" type veth peer name "$VETH_C"
ip link set "$VETH_AC" netns "$NS_A"
ip link set "$VETH_C" netns "$NS_C"
ip -n "$NS_A" addr add 10.233.0.1/24 dev "$VETH_AC"
ip -n "$NS_C" addr add 10.233.0.2/24 dev "$VETH_C"
ip -n "$NS_A" link set "$VETH_AC" up
ip -n "$NS_C" link set "$VETH_C" up
ip -n "$NS_C" link set lo up
# The workload: busybox only (no registry), serving echo on 7100 and fetching from A's
# echo server on 7778 in a loop; the only processes of namespace C are this container's.
mkdir -p "$WORK/busybox/bin"
cp "$(command -v busybox)" "$WORK/busybox/bin/busybox"
for a in sh sleep nc echo cat timeout; do ln -s busybox "$WORK/busybox/bin/$a"; done
tar -C "$WORK/busybox" -cf "$WORK/busybox.tar" .
"${PODMAN[@]}" import "$WORK/busybox.tar" "$WORKLOAD_IMAGE" >/dev/null
background ip netns exec "$NS_A" /usr/bin/python3 scripts/lib/testnet.py echo-server 10.233.0.1 7778
"${PODMAN[@]}" run -d --name "$CTR-work" "${RUN_OPTS[@]}" --network "ns:/run/netns/$NS_C" \
  "$WORKLOAD_IMAGE" /bin/sh -c 'nc -ll -p 7100 -e /bin/cat & while true; do echo hello | timeout 2 nc 10.233.0.1 7778 >/dev/null; sleep 0.2; done' >/dev/null
mkdir -m 755 "$WORK/datadog" "$WORK/etc-metro"
background /usr/bin/python3 scripts/lib/testnet.py dsd-unix "$WORK/datadog/dsd.socket" "$WORK/dsd.out"
wait_for_socket "$WORK/datadog/dsd.socket"
cat >"$WORK/etc-metro/metro.yaml" <<YAML
init_config:
  statsd_socket: /var/run/datadog/dsd.socket
  flush_interval: 2
instances:
  - interface: any
    ips: [10.232.0.2, 10.233.0.0/24]
    tags: [ctrtest:$$]
YAML
chmod 644 "$WORK/etc-metro/metro.yaml"
# The pod's settings, read from the manifest: podman options, `--`, the container's args.
# The DaemonSet's hostPath volumes are the host's own paths, but for the DogStatsD socket's
# directory (this test's receiver) and the ConfigMap (this test's configuration).
mapfile -t K8S < <(/usr/bin/python3 scripts/lib/k8s-podman.py deploy/kubernetes/metro.yaml \
  "/var/run/datadog/=$WORK/datadog" "configMap:metro-config=$WORK/etc-metro")
OPTS=()
ARGS=()
seen=""
for a in "${K8S[@]}"; do
  if [ -z "$seen" ] && [ "$a" = "--" ]; then seen=1; continue; fi
  if [ -z "$seen" ]; then OPTS+=("$a"); else ARGS+=("$a"); fi
done
[ -n "$seen" ] || fail "k8s-podman.py printed no '--': ${K8S[*]}"
echo "podman run ${OPTS[*]} IMAGE ${ARGS[*]}"
for want in --network=host --pid=host "--env=METRO_HOST_ROOT=/host" "--volume=/:/host:ro,rslave"; do
  printf '%s\n' "${OPTS[@]}" | grep -qx -- "$want" || fail "the manifest's settings lack $want: ${OPTS[*]}"
done
# nsenter, not `ip netns exec` (which remounts /sys, hiding the cgroup mounts runc needs):
# the container's host network is namespace A.
nsenter --net=/run/netns/"$NS_A" "${PODMAN[@]}" run -d --name "$CTR" "${RUN_OPTS[@]}" "${OPTS[@]}" \
  "$IMAGE" "${ARGS[@]}" >/dev/null
sleep 1
PID=$("${PODMAN[@]}" inspect -f '{{.State.Pid}}' "$CTR")
[ "$PID" -gt 0 ] 2>/dev/null || { "${PODMAN[@]}" logs "$CTR" >"$WORK/ctr.log" 2>&1 || true; fail "the container is not running"; }
ST=$(cat "/proc/$PID/status")
UID_WANT=$(printf '%s\n' "${OPTS[@]}" | sed -n 's/^--user=\([0-9]*\).*/\1/p')
grep -qE "^Uid:\s+$UID_WANT\s" <<<"$ST" || fail "metro in the container is not uid $UID_WANT: $(grep ^Uid <<<"$ST")"
# Exactly the manifest's capabilities: CapEff's bits from their names.
declare -A CAPBIT=([DAC_READ_SEARCH]=2 [NET_RAW]=13 [SYS_PTRACE]=19 [NET_ADMIN]=12 [SYS_ADMIN]=21 [DAC_OVERRIDE]=1 [PERFMON]=38 [BPF]=39)
mask=0
for a in "${OPTS[@]}"; do
  case "$a" in --cap-add=*)
    c=${a#--cap-add=}
    [ -n "${CAPBIT[$c]:-}" ] || fail "no bit known for capability $c"
    mask=$((mask | (1 << CAPBIT[$c])));;
  esac
done
CAPEFF=$(printf '%016x' "$mask")
grep -qE "^CapEff:\s+$CAPEFF$" <<<"$ST" || fail "metro's effective capabilities are not the manifest's ($CAPEFF): $(grep ^CapEff <<<"$ST")"
grep -qE '^NoNewPrivs:\s+1$' <<<"$ST" || fail "no_new_privs is not set (allowPrivilegeEscalation: false)"
echo "metro runs as uid $UID_WANT with CapEff=$CAPEFF (the manifest's), no_new_privs, in the host's pid namespace"
traffic 5
background ip netns exec "$NS_A" /usr/bin/python3 scripts/lib/testnet.py client 10.233.0.2 7100 20
ok=""
wait_for_metric "$WORK/dsd.out" "system.net.tcp.rtt.avg:.*dst:10.232.0.2.*ctrtest:$$" 20 && ok=1
[ -n "$ok" ] || { "${PODMAN[@]}" logs "$CTR" >"$WORK/ctr.log" 2>&1 || true; fail "no system.net.tcp.rtt.avg for dst:10.232.0.2 over the mounted socket"; }
grep -m1 'system.net.tcp.rtt.avg:.*dst:10.232.0.2' "$WORK/dsd.out"
# The workload's pairs: as the local end (its fetches from A) and as the remote end (A's
# client to its echo service), named by the container's name podman gave it.
ok=""
wait_for_metric "$WORK/dsd.out" "system.net.tcp.rtt.avg:.*src:10.233.0.2,.*,container_name:$CTR-work" 30 && ok=1
[ -n "$ok" ] || { "${PODMAN[@]}" logs "$CTR" >"$WORK/ctr.log" 2>&1 || true; fail "no pair of the workload container tagged container_name:$CTR-work"; }
grep -m1 "system.net.tcp.rtt.avg:.*src:10.233.0.2,.*,container_name:$CTR-work" "$WORK/dsd.out"
ok=""
wait_for_metric "$WORK/dsd.out" "system.net.tcp.rtt.avg:.*dst:10.233.0.2,.*,dst_container_name:$CTR-work" 30 && ok=1
[ -n "$ok" ] || { "${PODMAN[@]}" logs "$CTR" >"$WORK/ctr.log" 2>&1 || true; fail "no pair towards the workload container tagged dst_container_name:$CTR-work"; }
grep -m1 "system.net.tcp.rtt.avg:.*dst:10.233.0.2,.*,dst_container_name:$CTR-work" "$WORK/dsd.out"
"${PODMAN[@]}" logs "$CTR" >"$WORK/ctr.log" 2>&1 || true
"${PODMAN[@]}" stop -t 10 "$CTR" >/dev/null
[ "$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$CTR")" = 0 ] || fail "metro did not exit 0 on stop"

step "without NET_RAW the image cannot capture"
rc=0
nsenter --net=/run/netns/"$NS_A" timeout 30 "${PODMAN[@]}" run --name "$CTR-nocap" "${RUN_OPTS[@]}" --network host \
  --cap-drop=all -v "$WORK/etc-metro/metro.yaml:/etc/metro/metro.yaml:ro" "$IMAGE" >"$WORK/nocap.log" 2>&1 || rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || fail "the container without NET_RAW did not fail (exit $rc)"
# The kernel refuses to exec a binary whose file capability cannot be granted; had it run,
# metro would have named CAP_NET_RAW.
grep -Eq 'operation not permitted|CAP_NET_RAW' "$WORK/nocap.log" || fail "the container without NET_RAW failed for another reason: $(cat "$WORK/nocap.log")"
echo "refused as expected (exit $rc): $(head -c 160 "$WORK/nocap.log")"

echo "PASS: container-test ($IMAGE, $((SIZE / 1000000)) MB: labels agree with the binary, the DaemonSet's settings read from its manifest (uid $UID_WANT, CapEff $CAPEFF, host pid namespace, host root at /host), metrics over the mounted DogStatsD socket, container tags on both ends)"
