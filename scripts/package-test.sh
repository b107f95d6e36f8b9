#!/usr/bin/env bash
# The Debian package, end to end, on this machine (as root; CI runs it after the tests):
#
#   1. build the .deb (scripts/package.sh) and a second one with a bumped version from the
#      same binary (`scripts/package.sh --deb-version`: the build is a no-op);
#   2. dpkg -i: files, conffile, Depends, man pages, completions, `metro --version` agreeing
#      with the package, getcap on /usr/bin/metro, the unit checked by systemd-analyze
#      (started too if systemd is PID 1);
#   3. capture: the installed binary run as `nobody` (the file capability only) with the
#      shipped /etc/metro/metro.yaml, inside a network namespace joined by a veth pair to
#      another, with TCP traffic between them: RTT metrics must reach a DogStatsD receiver on
#      the namespace's 127.0.0.1:8125 (the default). The same binary copied without the
#      capability must fail to capture;
#   4. edit the conffile (Unix-socket DogStatsD, a tag), upgrade to the bumped package: the
#      edit and the capability survive (on the new file), and capture works again with the
#      edited configuration;
#   5. dpkg --purge: nothing of the package is left.
#
# The machine is left clean even on failure (trap: purge, namespaces, processes). Refuses
# to run if a metro package is already installed (it would purge it). Prints PASS or FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TEST=package-test
. scripts/lib/common.sh

need_root "dpkg -i, network namespaces"
if dpkg-query -W -f='${Status}' metro 2>/dev/null | grep -q installed; then
  fail "a metro package is already installed here; this test would purge it"
fi

WORK=$(mktemp -d /tmp/metro-pkgtest.XXXXXX)
chmod 755 "$WORK"
netns_names pkg
cleanup() {
  local rc=$?
  kill_background
  netns_down
  if dpkg-query -W -f='${Status}' metro 2>/dev/null | grep -q installed; then
    dpkg --purge metro >/dev/null 2>&1 || echo "package-test: cleanup: dpkg --purge metro failed" >&2
  fi
  [ $rc = 0 ] || show_work_logs
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

step "build"
DEB=$(scripts/package.sh -o "$WORK/deb1")
[ -f "$DEB" ] || fail "scripts/package.sh did not print a .deb path (got '$DEB')"
VERSION=$(dpkg-deb -f "$DEB" Version)
UPSTREAM=${VERSION%-*}
BUMPED="$VERSION+upgradetest1"
DEB2=$(scripts/package.sh --deb-version "$BUMPED" -o "$WORK/deb2")
[ -f "$DEB2" ] || fail "scripts/package.sh did not print a .deb path (got '$DEB2')"
dpkg --compare-versions "$BUMPED" gt "$VERSION" || fail "$BUMPED does not sort after $VERSION"
echo "built $DEB ($VERSION) and $DEB2 ($BUMPED)"

step "package metadata"
DEPENDS=$(dpkg-deb -f "$DEB" Depends)
echo "Depends: $DEPENDS"
for d in libpcap0.8 libc6 libcap2-bin procps; do
  grep -q "$d" <<<"$DEPENDS" || fail "Depends lacks $d: $DEPENDS"
done
CONFFILES=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles)
grep -qx /etc/metro/metro.yaml <<<"$CONFFILES" || fail "/etc/metro/metro.yaml is not a conffile"

step "install"
dpkg -i "$DEB" </dev/null >"$WORK/dpkg-install.log" 2>&1 || { cat "$WORK/dpkg-install.log"; fail "dpkg -i failed"; }
for f in /usr/bin/metro /etc/metro/metro.yaml /lib/systemd/system/metro.service \
  /usr/share/bash-completion/completions/metro /usr/share/zsh/vendor-completions/_metro \
  /usr/share/fish/vendor_completions.d/metro.fish; do
  [ -f "$f" ] || fail "$f is not installed"
done
ls /usr/share/man/man1/metro.1* /usr/share/man/man1/metro-run.1* >/dev/null 2>&1 || fail "no man pages"
man_page=$(ls /usr/share/man/man1/metro-run.1*)
man_text=$(case "$man_page" in *.gz) zcat "$man_page" ;; *) cat "$man_page" ;; esac)
grep -qF -- '\-\-config' <<<"$man_text" || fail "$man_page does not document --config"
bash -c 'source /usr/share/bash-completion/completions/metro && complete -p metro' >/dev/null \
  || fail "the bash completion does not register for metro"
grep -q 'ExecStart=/usr/bin/metro run' /lib/systemd/system/metro.service || fail "the unit does not run /usr/bin/metro"

step "version and provenance"
LINE=$(/usr/bin/metro --version)
echo "$LINE"
[[ "$LINE" == "metro $UPSTREAM (commit "* ]] || fail "'metro --version' ($LINE) does not agree with the package version $UPSTREAM"
if COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  [[ "$LINE" == *"commit $COMMIT,"* ]] || fail "'metro --version' ($LINE) does not name HEAD ($COMMIT)"
fi
[[ "$LINE" =~ built\ [0-9]{4}-[0-9]{2}-[0-9]{2}\)$ ]] || fail "'metro --version' has no build date: $LINE"

step "capability"
CAPS=$(getcap /usr/bin/metro)
echo "$CAPS"
grep -q ' cap_net_admin,cap_net_raw,cap_perfmon,cap_bpf=p$' <<<"$CAPS" || fail "/usr/bin/metro lacks its capture capabilities (+p) after install: '$CAPS'"
INODE1=$(stat -c %i /usr/bin/metro)

step "systemd unit"
systemd-analyze verify /lib/systemd/system/metro.service || fail "systemd-analyze verify rejects the unit"
SCORE=$(systemd-analyze security --offline=yes /lib/systemd/system/metro.service 2>&1 | tail -n 1)
echo "$SCORE"
if [ "$(ps -p 1 -o comm=)" = systemd ]; then
  systemctl is-enabled metro >/dev/null || fail "the unit is not enabled after install"
  sleep 2
  systemctl is-active metro >/dev/null || { systemctl status metro --no-pager || true; fail "the unit is not running after install"; }
  echo "the unit is enabled and running"
else
  echo "systemd is not PID 1 here ($(ps -p 1 -o comm=)): the unit was checked by systemd-analyze, not started; capture is checked below by running the binary as an unprivileged user"
fi

step "network namespaces"
netns_up 10.231.0

# capture_as_nobody LOG OUT PATTERN TRAFFIC_S WAIT_S FAILURE: the installed metro as nobody
# (the file capability only) in A with /etc/metro/metro.yaml, logging to LOG, traffic to B
# for TRAFFIC_S; a line matching PATTERN must reach the receiver's OUT within WAIT_S (else
# FAILURE); it is printed, and SIGTERM must end metro with 0.
capture_as_nobody() {
  ip netns exec "$NS_A" setpriv --reuid=nobody --regid=nogroup --clear-groups \
    /usr/bin/metro run --config /etc/metro/metro.yaml >"$1" 2>&1 &
  local pid=$!
  PIDS+=($pid)
  sleep 1
  local st
  st=$(cat "/proc/$pid/status") || fail "metro (pid $pid) is not running"
  grep -qE '^Uid:\s+65534\s' <<<"$st" || fail "metro does not run as nobody: $(grep ^Uid <<<"$st")"
  net_raw_only "$st" metro
  traffic "$4"
  wait_for_metric "$2" "$3" "$5" || fail "$6"
  grep -m1 'system.net.tcp.rtt.avg:' "$2"
  kill "$pid"
  wait "$pid" || fail "metro did not exit 0 on SIGTERM"
}

step "capture as nobody with the shipped configuration (DogStatsD on 127.0.0.1:8125)"
background ip netns exec "$NS_A" /usr/bin/python3 scripts/lib/testnet.py dsd-udp 127.0.0.1 8125 "$WORK/dsd1.out"
# The shipped flush_interval is 10 s: traffic for 14 s covers a whole interval.
capture_as_nobody "$WORK/metro1.log" "$WORK/dsd1.out" 'system.net.tcp.rtt.avg:.*dst:10.231.0.2' 14 25 \
  "no system.net.tcp.rtt.avg for dst:10.231.0.2 from metro as nobody with /etc/metro/metro.yaml"

step "without the capability, the same binary cannot capture"
cp /usr/bin/metro "$WORK/metro-nocap"
chmod 755 "$WORK/metro-nocap"
[ -z "$(getcap "$WORK/metro-nocap")" ] || fail "the copy kept a capability"
rc=0
timeout 10 ip netns exec "$NS_A" setpriv --reuid=nobody --regid=nogroup --clear-groups \
  "$WORK/metro-nocap" run --config /etc/metro/metro.yaml >"$WORK/nocap.log" 2>&1 || rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || fail "metro without the capability did not fail (exit $rc)"
grep -q CAP_NET_RAW "$WORK/nocap.log" || fail "metro without the capability does not name CAP_NET_RAW: $(cat "$WORK/nocap.log")"
echo "refused as expected: $(grep -m1 CAP_NET_RAW "$WORK/nocap.log" | cut -c1-160)..."

step "edit the conffile, upgrade to $BUMPED"
DSD_SOCK="$WORK/dsd.socket"
python3 - "$DSD_SOCK" <<'PY'
import re, sys
p = "/etc/metro/metro.yaml"
s = open(p).read()
s = s.replace("  flush_interval: 10 ", "  flush_interval: 2  ", 1)
s = re.sub(r"(?m)^  # statsd_socket: \S+", "  statsd_socket: " + sys.argv[1], s, count=1)
s = s.replace("    # tags: [env:prod, service:web]", "    tags: [pkgtest:edited]", 1)
open(p, "w").write(s)
PY
grep -q 'tags: \[pkgtest:edited\]' /etc/metro/metro.yaml && grep -q "statsd_socket: $DSD_SOCK" /etc/metro/metro.yaml \
  && grep -q 'flush_interval: 2 ' /etc/metro/metro.yaml || fail "could not edit /etc/metro/metro.yaml"
/usr/bin/metro check-config /etc/metro/metro.yaml >/dev/null || fail "the edited configuration is invalid"
EDITED_SUM=$(sha256sum </etc/metro/metro.yaml)
dpkg -i "$DEB2" </dev/null >"$WORK/dpkg-upgrade.log" 2>&1 || { cat "$WORK/dpkg-upgrade.log"; fail "the upgrade failed"; }
[ "$(dpkg-query -W -f='${Version}' metro)" = "$BUMPED" ] || fail "the installed version is not $BUMPED after the upgrade"
[ "$(sha256sum </etc/metro/metro.yaml)" = "$EDITED_SUM" ] || fail "the edited /etc/metro/metro.yaml did not survive the upgrade"
[ ! -e /etc/metro/metro.yaml.dpkg-new ] && [ ! -e /etc/metro/metro.yaml.dpkg-dist ] || fail "the upgrade left a .dpkg-new/.dpkg-dist beside the conffile"
INODE2=$(stat -c %i /usr/bin/metro)
[ "$INODE1" != "$INODE2" ] || fail "the upgrade did not replace /usr/bin/metro (same inode): the capability check would prove nothing"
CAPS=$(getcap /usr/bin/metro)
grep -q ' cap_net_admin,cap_net_raw,cap_perfmon,cap_bpf=p$' <<<"$CAPS" || fail "/usr/bin/metro lacks its capture capabilities (+p) after the upgrade: '$CAPS'"
echo "conffile kept, $CAPS on the new file (inode $INODE1 -> $INODE2)"

step "capture as nobody after the upgrade, edited configuration (DogStatsD on a Unix socket)"
background /usr/bin/python3 scripts/lib/testnet.py dsd-unix "$DSD_SOCK" "$WORK/dsd2.out"
wait_for_socket "$DSD_SOCK"
capture_as_nobody "$WORK/metro2.log" "$WORK/dsd2.out" 'system.net.tcp.rtt.avg:.*dst:10.231.0.2.*pkgtest:edited' 5 15 \
  "no system.net.tcp.rtt.avg tagged pkgtest:edited over the Unix socket after the upgrade"

step "purge"
dpkg -L metro | sort >"$WORK/files"
dpkg --purge metro </dev/null >"$WORK/dpkg-purge.log" 2>&1 || { cat "$WORK/dpkg-purge.log"; fail "dpkg --purge failed"; }
dpkg-query -W -f='${Status}' metro 2>/dev/null | grep -q installed && fail "metro is still installed after purge"
left=""
while read -r f; do
  # Directories shared with other packages (/usr/bin, /usr/share/man/man1, ...) stay.
  [ -d "$f" ] && continue
  [ -e "$f" ] || [ -L "$f" ] && left="$left $f"
done <"$WORK/files"
[ -z "$left" ] || fail "left after purge:$left"
for p in /etc/metro /var/log/metro /var/log/private/metro /usr/share/doc/metro \
  /etc/systemd/system/multi-user.target.wants/metro.service; do
  [ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p is left after purge"
done
echo "nothing left"

echo "PASS: package-test (install, capture as nobody, upgrade $VERSION -> $BUMPED keeps the conffile and the capability, purge)"
