#!/usr/bin/env bash
# The Debian package, end to end, in a Debian 12 system of its own (a chroot made by
# mmdebstrap from the package's Depends: this host's packages, its own metro included, are
# never touched; as root; CI runs it after the tests):
#
#   1. build the .deb (scripts/package.sh) and a second one with a bumped version from the
#      same binary (`scripts/package.sh --deb-version`: the build is a no-op);
#   2. dpkg -i in the chroot: files, conffile, Depends, man pages, completions, `metro
#      --version` agreeing with the package, getcap on /usr/bin/metro, the unit enabled and
#      checked by systemd-analyze (scripts/unit-test.sh runs it under systemd);
#   3. capture: the installed binary run in the chroot as `nobody` (the file capability
#      only) with the shipped /etc/metro/metro.yaml, inside a network namespace joined by a
#      veth pair to another, with TCP traffic between them: RTT metrics must reach a
#      DogStatsD receiver on the namespace's 127.0.0.1:8125 (the default). The same binary
#      copied without the capability must fail to capture;
#   4. edit the conffile (Unix-socket DogStatsD, a tag), upgrade to the bumped package: the
#      edit and the capability survive (on the new file), and capture works again with the
#      edited configuration;
#   5. dpkg --purge: nothing of the package is left;
#   6. this host's own metro (installed or not) is as it was: package, conffile, binary and
#      capability.
#
# The machine is left clean even on failure (trap: the chroot, namespaces, processes).
# Prints PASS or FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TEST=package-test
. scripts/lib/common.sh

need_root "mmdebstrap, chroot, network namespaces"
HOST_STATE=$(host_metro_state)

WORK=$(mktemp -d /tmp/metro-pkgtest.XXXXXX)
chmod 755 "$WORK"
# The Debian system the package is installed into; every path the package owns is under it.
R=$WORK/root
netns_names pkg
cleanup() {
  local rc=$?
  kill_background
  netns_down
  [ $rc = 0 ] || show_work_logs
  # Nothing is mounted under $R outside a namespace of its own (in_root, in_root_ns): a
  # plain rm cannot reach the host through it.
  rm -rf --one-file-system "$WORK"
  exit $rc
}
trap cleanup EXIT

# in_root CMD...: CMD chrooted in $R, with /proc mounted in a mount namespace of its own
# (gone when CMD ends).
in_root() {
  unshare --mount --propagation private sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$R" "$@"
}
# in_root_ns NS CMD...: the same inside network namespace NS, with that namespace's /sys
# (`ip netns exec` gives the command a mount namespace of its own, the host's as its slave).
# Every step execs the next: CMD has the process's PID.
IN_ROOT_NS_SH='mount -t proc proc "$0/proc" && mount --bind /sys "$0/sys" && exec chroot "$0" "$@"'
in_root_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" sh -c "$IN_ROOT_NS_SH" "$R" "$@"
}

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

step "a Debian 12 system of its own (mmdebstrap: minbase, systemd and the package's Depends)"
# The Depends' package names, without their versions or alternatives: dpkg -i checks both.
# systemd: the unit's checks (systemd-analyze), as on a host that runs it.
PKGS=$(sed -E 's/\([^)]*\)//g; s/\|[^,]*//g; s/[[:space:]]//g' <<<"$DEPENDS"),systemd
mmdebstrap --variant=minbase --include="$PKGS" bookworm "$R" >"$WORK/mmdebstrap.log" 2>&1 \
  || { tail -n 20 "$WORK/mmdebstrap.log"; fail "mmdebstrap failed"; }
mkdir -p "$R/tmp/pkgtest"
cp "$DEB" "$R/tmp/pkgtest/metro.deb"
cp "$DEB2" "$R/tmp/pkgtest/metro2.deb"
echo "$R: Debian $(cat "$R/etc/debian_version") with $PKGS"

step "install"
in_root dpkg -i /tmp/pkgtest/metro.deb </dev/null >"$WORK/dpkg-install.log" 2>&1 || { cat "$WORK/dpkg-install.log"; fail "dpkg -i failed"; }
for f in /usr/bin/metro /etc/metro/metro.yaml /lib/systemd/system/metro.service \
  /usr/share/bash-completion/completions/metro /usr/share/zsh/vendor-completions/_metro \
  /usr/share/fish/vendor_completions.d/metro.fish /usr/share/doc/metro/examples/scp-upload.pcap; do
  [ -f "$R$f" ] || fail "$f is not installed"
done
ls "$R"/usr/share/man/man1/metro.1* "$R"/usr/share/man/man1/metro-run.1* >/dev/null 2>&1 || fail "no man pages"
man_page=$(ls "$R"/usr/share/man/man1/metro-run.1*)
man_text=$(case "$man_page" in *.gz) zcat "$man_page" ;; *) cat "$man_page" ;; esac)
grep -qF -- '\-\-config' <<<"$man_text" || fail "$man_page does not document --config"
bash -c 'source "$1/usr/share/bash-completion/completions/metro" && complete -p metro' _ "$R" >/dev/null \
  || fail "the bash completion does not register for metro"
grep -q 'ExecStart=/usr/bin/metro run' "$R/lib/systemd/system/metro.service" || fail "the unit does not run /usr/bin/metro"

step "the README's first command, from the installed package"
in_root metro analyze /usr/share/doc/metro/examples/scp-upload.pcap >"$WORK/analyze.out" 2>"$WORK/analyze.log" \
  || fail "metro analyze /usr/share/doc/metro/examples/scp-upload.pcap failed"
grep -q '^162\.243\.251\.92 ' "$WORK/analyze.out" || fail "metro analyze on the bundled capture does not report 162.243.251.92"
head -n 3 "$WORK/analyze.out"

step "version and provenance"
LINE=$(in_root /usr/bin/metro --version)
echo "$LINE"
[[ "$LINE" == "metro $UPSTREAM (commit "* ]] || fail "'metro --version' ($LINE) does not agree with the package version $UPSTREAM"
if COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  [[ "$LINE" == *"commit $COMMIT,"* ]] || fail "'metro --version' ($LINE) does not name HEAD ($COMMIT)"
fi
[[ "$LINE" =~ built\ [0-9]{4}-[0-9]{2}-[0-9]{2}\)$ ]] || fail "'metro --version' has no build date: $LINE"

step "capability"
CAPS=$(in_root getcap /usr/bin/metro)
echo "$CAPS"
grep -q ' cap_net_admin,cap_net_raw,cap_perfmon,cap_bpf=p$' <<<"$CAPS" || fail "/usr/bin/metro lacks its capture capabilities (+p) after install: '$CAPS'"
INODE1=$(stat -c %i "$R/usr/bin/metro")

step "systemd unit"
# Enabled by the package (deb-systemd-helper); started by it only where systemd runs, which
# scripts/unit-test.sh checks under a real systemd.
WANTS=/etc/systemd/system/multi-user.target.wants/metro.service
[ "$(readlink "$R$WANTS")" = /lib/systemd/system/metro.service ] || fail "the unit is not enabled after install ($WANTS)"
in_root systemd-analyze verify /lib/systemd/system/metro.service || fail "systemd-analyze verify rejects the unit"
SCORE=$(in_root systemd-analyze security --offline=yes /lib/systemd/system/metro.service 2>&1 | tail -n 1)
echo "$SCORE"

step "network namespaces"
netns_up 10.231.0

# capture_as_nobody LOG OUT PATTERN TRAFFIC_S WAIT_S FAILURE: the installed metro as nobody
# (the file capability only) in the chroot, in A with /etc/metro/metro.yaml, logging to LOG, traffic to B
# for TRAFFIC_S; a line matching PATTERN must reach the receiver's OUT within WAIT_S (else
# FAILURE); it is printed, and SIGTERM must end metro with 0.
capture_as_nobody() {
  # Not through the in_root_ns function: in the background, a function runs in a subshell
  # whose PID would be $!.
  ip netns exec "$NS_A" sh -c "$IN_ROOT_NS_SH" "$R" setpriv --reuid=nobody --regid=nogroup --clear-groups \
    /usr/bin/metro run --config /etc/metro/metro.yaml >"$1" 2>&1 &
  local pid=$! i
  PIDS+=($pid)
  # Until the exec chain (ip, sh, chroot, setpriv) has become metro.
  for ((i = 0; i < 100; i++)); do
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$R/usr/bin/metro" ] && break
    sleep 0.1
  done
  local st
  st=$(capture_caps_only "$pid" metro)
  grep -qE '^Uid:\s+65534\s' <<<"$st" || fail "metro does not run as nobody: $(grep ^Uid <<<"$st")"
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
cp "$R/usr/bin/metro" "$R/tmp/pkgtest/metro-nocap"
chmod 755 "$R/tmp/pkgtest/metro-nocap"
[ -z "$(getcap "$R/tmp/pkgtest/metro-nocap")" ] || fail "the copy kept a capability"
rc=0
in_root_ns "$NS_A" timeout 10 setpriv --reuid=nobody --regid=nogroup --clear-groups \
  /tmp/pkgtest/metro-nocap run --config /etc/metro/metro.yaml >"$WORK/nocap.log" 2>&1 || rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || fail "metro without the capability did not fail (exit $rc)"
grep -q CAP_NET_RAW "$WORK/nocap.log" || fail "metro without the capability does not name CAP_NET_RAW: $(cat "$WORK/nocap.log")"
echo "refused as expected: $(grep -m1 CAP_NET_RAW "$WORK/nocap.log" | cut -c1-160)..."

step "edit the conffile, upgrade to $BUMPED"
# The socket's path as metro in the chroot sees it; the receiver (on the host) binds $R$DSD_SOCK.
DSD_SOCK=/tmp/pkgtest/dsd.socket
python3 - "$DSD_SOCK" "$R/etc/metro/metro.yaml" <<'PY'
import re, sys
p = sys.argv[2]
s = open(p).read()
s = s.replace("  flush_interval: 10 ", "  flush_interval: 2  ", 1)
s = re.sub(r"(?m)^  # statsd_socket: \S+", "  statsd_socket: " + sys.argv[1], s, count=1)
s = s.replace("    # tags: [env:prod, service:web]", "    tags: [pkgtest:edited]", 1)
open(p, "w").write(s)
PY
CONF=$R/etc/metro/metro.yaml
grep -q 'tags: \[pkgtest:edited\]' "$CONF" && grep -q "statsd_socket: $DSD_SOCK" "$CONF" \
  && grep -q 'flush_interval: 2 ' "$CONF" || fail "could not edit /etc/metro/metro.yaml"
in_root /usr/bin/metro check-config /etc/metro/metro.yaml >/dev/null || fail "the edited configuration is invalid"
EDITED_SUM=$(sha256sum <"$CONF")
in_root dpkg -i /tmp/pkgtest/metro2.deb </dev/null >"$WORK/dpkg-upgrade.log" 2>&1 || { cat "$WORK/dpkg-upgrade.log"; fail "the upgrade failed"; }
[ "$(in_root dpkg-query -W -f='${Version}' metro)" = "$BUMPED" ] || fail "the installed version is not $BUMPED after the upgrade"
[ "$(sha256sum <"$CONF")" = "$EDITED_SUM" ] || fail "the edited /etc/metro/metro.yaml did not survive the upgrade"
[ ! -e "$CONF.dpkg-new" ] && [ ! -e "$CONF.dpkg-dist" ] || fail "the upgrade left a .dpkg-new/.dpkg-dist beside the conffile"
INODE2=$(stat -c %i "$R/usr/bin/metro")
[ "$INODE1" != "$INODE2" ] || fail "the upgrade did not replace /usr/bin/metro (same inode): the capability check would prove nothing"
CAPS=$(in_root getcap /usr/bin/metro)
grep -q ' cap_net_admin,cap_net_raw,cap_perfmon,cap_bpf=p$' <<<"$CAPS" || fail "/usr/bin/metro lacks its capture capabilities (+p) after the upgrade: '$CAPS'"
echo "conffile kept, $CAPS on the new file (inode $INODE1 -> $INODE2)"

step "capture as nobody after the upgrade, edited configuration (DogStatsD on a Unix socket)"
background /usr/bin/python3 scripts/lib/testnet.py dsd-unix "$R$DSD_SOCK" "$WORK/dsd2.out"
wait_for_socket "$R$DSD_SOCK"
capture_as_nobody "$WORK/metro2.log" "$WORK/dsd2.out" 'system.net.tcp.rtt.avg:.*dst:10.231.0.2.*pkgtest:edited' 5 15 \
  "no system.net.tcp.rtt.avg tagged pkgtest:edited over the Unix socket after the upgrade"

step "purge"
in_root dpkg -L metro | sort >"$WORK/files"
in_root dpkg --purge metro </dev/null >"$WORK/dpkg-purge.log" 2>&1 || { cat "$WORK/dpkg-purge.log"; fail "dpkg --purge failed"; }
in_root dpkg-query -W -f='${Status}' metro 2>/dev/null | grep -q installed && fail "metro is still installed after purge"
left=""
while read -r f; do
  # Directories shared with other packages (/usr/bin, /usr/share/man/man1, ...) stay.
  [ -d "$R$f" ] && continue
  [ -e "$R$f" ] || [ -L "$R$f" ] && left="$left $f"
done <"$WORK/files"
[ -z "$left" ] || fail "left after purge:$left"
for p in /etc/metro /var/log/metro /var/log/private/metro /usr/share/doc/metro "$WANTS"; do
  [ ! -e "$R$p" ] && [ ! -L "$R$p" ] || fail "$p is left after purge"
done
echo "nothing left"

step "this host's own metro is as it was"
host_metro_unchanged "$HOST_STATE"

echo "PASS: package-test (in a chroot: install, capture as nobody, upgrade $VERSION -> $BUMPED keeps the conffile and the capability, purge; the host's metro untouched)"
