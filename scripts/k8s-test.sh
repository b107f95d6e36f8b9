#!/usr/bin/env bash
# The Kubernetes manifest deploy/kubernetes/metro.yaml, checked without a cluster:
#   1. every object against the Kubernetes schemas (kubernetes-validate --strict, from PyPI,
#      pinned, in a virtualenv under target/), for the current and an older Kubernetes;
#   2. the validator is not a no-op: a copy with a misspelt field must be rejected;
#   3. the ConfigMap's metro.yaml passes `metro check-config`;
#   4. the pod's settings are what container tags need (scripts/container-test.sh runs the
#      image with the settings it reads from this manifest and checks the tags): host
#      network and pid namespace, capabilities exactly drop ALL / add NET_RAW, BPF, PERFMON,
#      NET_ADMIN, SYS_PTRACE, DAC_READ_SEARCH, uid 0 without privilege escalation, the host's / mounted read-only
#      where METRO_HOST_ROOT says; and the DogStatsD socket inside the mounted
#      /var/run/datadog, the image tagged with the package's version, the Prometheus port in
#      the scrape annotation equal to prometheus_listen's.
# Prints PASS or FAIL. Nothing here runs the pod on a real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=k8s-test
. scripts/lib/common.sh
MANIFEST=deploy/kubernetes/metro.yaml
KV_VERSION=1.37.0
VENV=target/k8s-venv
WORK=$(mktemp -d /tmp/metro-k8stest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

if [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null | awk '{print $NF}')" != "$KV_VERSION" ]; then
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "kubernetes-validate==$KV_VERSION"
fi

step schemas
for k in 1.37.0 1.30.0; do
  "$VENV/bin/kubernetes-validate" --strict -k "$k" "$MANIFEST" || fail "$MANIFEST does not validate against Kubernetes $k"
done
sed 's/^      hostNetwork: true/      hostNetwrok: true/' "$MANIFEST" >"$WORK/broken.yaml"
! cmp -s "$MANIFEST" "$WORK/broken.yaml" || fail "could not make the misspelt copy"
if "$VENV/bin/kubernetes-validate" --strict --quiet "$WORK/broken.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted a misspelt field (hostNetwrok): the check proves nothing"
fi
echo "a misspelt field is rejected"

step "configuration and pod settings"
cargo build --release --locked -p metro 2>/dev/null || cargo build --release --locked -p metro
VERSION=$(target/release/metro --version | awk '{print $2}')
"$VENV/bin/python3" - "$MANIFEST" "$WORK" "$VERSION" <<'PY'
import sys, yaml
manifest, work, version = sys.argv[1:]
docs = {d["kind"]: d for d in yaml.safe_load_all(open(manifest)) if d}
def need(cond, what):
    if not cond:
        sys.exit(f"{manifest}: {what}")
cfg_text = docs["ConfigMap"]["data"]["metro.yaml"]
open(f"{work}/metro.yaml", "w").write(cfg_text)
cfg = yaml.safe_load(cfg_text)["init_config"]
pod = docs["DaemonSet"]["spec"]["template"]
spec = pod["spec"]
c = spec["containers"][0]
sc = c["securityContext"]
need(spec.get("hostNetwork") is True, "hostNetwork is not true")
need(spec.get("hostPID") is True, "hostPID is not true (container tags read the node's /proc)")
caps = {"drop": ["ALL"], "add": ["NET_RAW", "BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"]}
need(sc["capabilities"] == caps, f"capabilities are {sc['capabilities']}, not {caps}")
need(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false (uid 0 holds its capabilities)")
need(sc.get("readOnlyRootFilesystem") is True, "the root filesystem is not read-only")
need(spec["securityContext"].get("runAsUser") == 0, "not uid 0 (the runtimes' state is root's)")
need(c["image"].endswith(":" + version), f"image {c['image']} is not tagged with the package version {version}")
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
vols = {v["name"]: v for v in spec["volumes"]}
sock = cfg["statsd_socket"]
need(sock == "/var/run/datadog/dsd.socket", f"statsd_socket is {sock}")
dsd = [n for n, p in mounts.items() if sock.startswith(p.rstrip("/") + "/")]
need(dsd and vols[dsd[0]]["hostPath"]["path"].rstrip("/") == "/var/run/datadog", "the DogStatsD socket directory is not mounted from the host's /var/run/datadog")
cm = [n for n, p in mounts.items() if p == "/etc/metro"]
need(cm and vols[cm[0]]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"], "the ConfigMap is not mounted at /etc/metro")
need(c["args"] == ["run", "--config", "/etc/metro/metro.yaml"], f"args are {c['args']}")
env = {e["name"]: e.get("value") for e in c.get("env", [])}
root = env.get("METRO_HOST_ROOT")
hr = [m for m in c["volumeMounts"] if m["mountPath"] == root]
need(root and hr and hr[0].get("readOnly") is True and vols[hr[0]["name"]].get("hostPath", {}).get("path") == "/",
     f"METRO_HOST_ROOT ({root}) is not the mount point of the host's / read-only")
port = cfg["prometheus_listen"].rsplit(":", 1)[1]
ann = pod["metadata"]["annotations"]
need(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == port, f"scrape annotations {ann} do not match prometheus_listen {cfg['prometheus_listen']}")
need(c["livenessProbe"]["httpGet"]["path"] == "/metrics", "no /metrics liveness probe")
r = c["resources"]
need("cpu" in r["requests"] and "memory" in r["requests"] and "memory" in r["limits"], f"resources incomplete: {r}")
print(f"pod settings agree (image {c['image']}, DogStatsD {sock}, Prometheus :{port}, resources {r})")
PY
target/release/metro check-config "$WORK/metro.yaml" >/dev/null || fail "the ConfigMap's metro.yaml fails metro check-config"
echo "the ConfigMap's metro.yaml passes metro check-config"
echo "PASS: k8s-test ($MANIFEST: Kubernetes 1.37 and 1.30 schemas, strict; pod settings for container tags, as container-test.sh runs them with podman; not run on a real cluster)"
