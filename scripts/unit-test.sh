#!/usr/bin/env bash
# The systemd unit under a real systemd, on a machine whose PID 1 is not systemd (CI):
#
#   1. a Debian 12 system made by mmdebstrap (systemd as init) with the package installed
#      by `apt-get install ./metro_*.deb` (so its Depends are resolved as on a host);
#   2. booted with podman (`--systemd=always`; `--privileged` so that systemd, standing in
#      for a host's, can build the unit's sandbox) on --network host inside a network
#      namespace joined by a veth pair to another, with TCP traffic between them;
#   3. checks: the unit is enabled and running on the shipped /etc/metro/metro.yaml as a
#      dynamic (non-root) user with the four capture capabilities only, no_new_privs and a
#      seccomp filter; RTT metrics reach DogStatsD on the namespace's 127.0.0.1:8125;
#      an upgrade restarts the unit and keeps the capability; `systemctl reload` (SIGHUP)
#      works; `systemctl stop` ends it cleanly; the online
#      `systemd-analyze security` score.
#
# Cleans up (container, image, namespaces, processes) even on failure, and checks that this
# host's own metro (installed or not) is as it was. Prints PASS or FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=unit-test
. scripts/lib/common.sh

need_root "mmdebstrap, network namespaces, rootful podman"
HOST_STATE=$(host_metro_state)
WORK=$(mktemp -d /tmp/metro-unittest.XXXXXX)
netns_names unit
CTR=mt-unit-$$
IMAGE=localhost/metro-unit-test:$$
cleanup() {
  local rc=$?
  if [ $rc != 0 ]; then
    "${PODMAN[@]}" exec "$CTR" journalctl -u metro --no-pager 2>/dev/null | tail -n 20 || true
    [ -s "$WORK/mmdebstrap.log" ] && tail -n 20 "$WORK/mmdebstrap.log"
  fi
  "${PODMAN[@]}" rm -f "$CTR" >/dev/null 2>&1 || true
  "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
  kill_background
  netns_down
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
in_ctr() { "${PODMAN[@]}" exec "$CTR" "$@"; }

step "a Debian 12 system with systemd and the package (apt-get install ./metro.deb)"
DEB=$(scripts/package.sh)
cp "$DEB" "$WORK/metro.deb"
mmdebstrap --variant=apt --include=systemd,systemd-sysv \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook="copy-in $WORK/metro.deb /tmp" \
  --customize-hook='chroot "$1" apt-get install -y -q /tmp/metro.deb' \
  --customize-hook='rm "$1/tmp/metro.deb"' \
  bookworm "$WORK/rootfs.tar" >"$WORK/mmdebstrap.log" 2>&1 || fail "mmdebstrap failed"
"${PODMAN[@]}" import -q "$WORK/rootfs.tar" "$IMAGE" >/dev/null
rm -f "$WORK/rootfs.tar"

step "network namespaces, traffic peer, DogStatsD receiver"
netns_up 10.234.0
background ip netns exec "$NS_A" /usr/bin/python3 scripts/lib/testnet.py dsd-udp 127.0.0.1 8125 "$WORK/dsd.out"

step "boot it"
nsenter --net=/run/netns/"$NS_A" "${PODMAN[@]}" run -d --name "$CTR" --privileged --systemd=always \
  --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$IMAGE" /sbin/init >/dev/null
state=""
for ((i = 0; i < 60; i++)); do
  state=$(in_ctr systemctl is-system-running 2>/dev/null || true)
  [ "$state" = running ] || [ "$state" = degraded ] && break
  sleep 0.5
done
echo "system: $state"
in_ctr systemctl is-enabled metro >/dev/null || fail "metro.service is not enabled"
in_ctr systemctl is-active metro >/dev/null || fail "metro.service is not running"

step "the unit's process"
PID=$(in_ctr systemctl show -p MainPID --value metro)
ST=$(in_ctr cat "/proc/$PID/status")
UID_=$(awk '/^Uid:/ {print $2}' <<<"$ST")
[ "$UID_" != 0 ] || fail "metro runs as root"
# CAP_NET_RAW (libpcap), CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF (the in-kernel capture): bits
# 13, 12, 38, 39.
grep -qE '^CapEff:\s+000000c000003000$' <<<"$ST" || fail "the effective set is not the four capture capabilities: $(grep ^CapEff <<<"$ST")"
grep -qE '^CapBnd:\s+000000c000003000$' <<<"$ST" || fail "the bounding set is not the four capture capabilities: $(grep ^CapBnd <<<"$ST")"
grep -qE '^NoNewPrivs:\s+1$' <<<"$ST" || fail "no_new_privs is not set"
grep -qE '^Seccomp:\s+2$' <<<"$ST" || fail "no seccomp filter"
echo "dynamic uid $UID_, CapEff=CapBnd=CAP_NET_RAW CAP_NET_ADMIN CAP_PERFMON CAP_BPF, no_new_privs, seccomp filter"

step "capture under the unit (shipped configuration, DogStatsD on 127.0.0.1:8125)"
traffic 14
wait_for_metric "$WORK/dsd.out" 'system.net.tcp.rtt.avg:.*dst:10.234.0.2' 25 \
  || fail "no system.net.tcp.rtt.avg for dst:10.234.0.2 from the unit"
grep -m1 'system.net.tcp.rtt.avg:' "$WORK/dsd.out"

step "upgrade under the running unit"
VERSION=$(dpkg-deb -f "$DEB" Version)
DEB2=$(scripts/package.sh --deb-version "$VERSION+unittest1" -o "$WORK/deb2")
"${PODMAN[@]}" cp "$DEB2" "$CTR:/tmp/metro2.deb"
in_ctr dpkg -i /tmp/metro2.deb >"$WORK/upgrade.log" 2>&1 || { cat "$WORK/upgrade.log"; fail "the upgrade failed"; }
[ "$(in_ctr dpkg-query -W -f='${Version}' metro)" = "$VERSION+unittest1" ] || fail "not upgraded"
in_ctr systemctl is-active metro >/dev/null || fail "metro is not running after the upgrade"
PID2=$(in_ctr systemctl show -p MainPID --value metro)
[ "$PID2" != "$PID" ] || fail "the upgrade did not restart the unit (MainPID still $PID)"
in_ctr getcap /usr/bin/metro | grep -q ' cap_net_admin,cap_net_raw,cap_perfmon,cap_bpf=p$' || fail "the capabilities are gone after the upgrade"
echo "upgraded to $VERSION+unittest1: the unit restarted (pid $PID -> $PID2), the capability kept"

step "reload and stop"
in_ctr systemctl reload metro || fail "systemctl reload metro failed"
sleep 1
in_ctr journalctl -u metro --no-pager | grep -q 'SIGHUP: reloading' || fail "metro did not log the reload"
in_ctr systemctl is-active metro >/dev/null || fail "metro is not running after the reload"
in_ctr systemctl stop metro
RESULT=$(in_ctr systemctl show -p Result --value metro)
[ "$RESULT" = success ] || fail "metro stopped with result $RESULT"
echo "reloaded (SIGHUP), stopped: $RESULT"
SCORE=$(in_ctr systemd-analyze security metro.service 2>&1 | tail -n 1)
echo "$SCORE"

step "this host's own metro is as it was"
host_metro_unchanged "$HOST_STATE"

echo "PASS: unit-test (metro.service under systemd: dynamic user, the capture capabilities only, seccomp; capture, upgrade restart, reload, stop)"
