#!/usr/bin/python3
"""The podman options that run a container the way a Kubernetes DaemonSet's pod runs it.

  k8s-podman.py MANIFEST [HOSTPATH=LOCAL | configMap:NAME=LOCAL]...

Reads the DaemonSet in MANIFEST (its first container) and prints, one per line, the podman
`run` options for its pod and container settings, then a line `--`, then the container's
args. Every setting that podman can express is translated; any other (an unknown volume
kind, a capability set podman cannot take) is an error, so that the test that uses this
(scripts/container-test.sh) and the manifest cannot drift apart:

  hostNetwork            --network=host
  hostPID                --pid=host
  runAsUser/runAsGroup   --user=UID:GID (container's securityContext over the pod's)
  capabilities           --cap-drop=... --cap-add=...
  allowPrivilegeEscalation: false   --security-opt=no-new-privileges
  readOnlyRootFilesystem --read-only
  privileged             --privileged
  env (value only)       --env=NAME=VALUE
  volumeMounts           --volume=SOURCE:PATH[:ro][,rslave|,rshared]; a hostPath's SOURCE is
                         its path, or LOCAL when HOSTPATH=LOCAL is given; a configMap's is
                         the LOCAL of configMap:NAME=LOCAL (required)

Needs PyYAML (Debian's python3-yaml).
"""

import sys

import yaml


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    manifest = sys.argv[1]
    subst = {}
    for a in sys.argv[2:]:
        k, sep, v = a.partition("=")
        if not sep:
            sys.exit(f"k8s-podman.py: {a}: not KEY=LOCAL")
        subst[k] = v
    docs = [d for d in yaml.safe_load_all(open(manifest)) if d]
    ds = [d for d in docs if d.get("kind") == "DaemonSet"]
    if len(ds) != 1:
        sys.exit(f"{manifest}: {len(ds)} DaemonSets, want one")
    spec = ds[0]["spec"]["template"]["spec"]
    c = spec["containers"][0]
    psc = spec.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    out = []
    if spec.get("hostNetwork"):
        out.append("--network=host")
    if spec.get("hostPID"):
        out.append("--pid=host")
    user = sc.get("runAsUser", psc.get("runAsUser"))
    group = sc.get("runAsGroup", psc.get("runAsGroup"))
    if user is not None:
        out.append(f"--user={user}" + (f":{group}" if group is not None else ""))
    caps = sc.get("capabilities") or {}
    for d in caps.get("drop", []):
        out.append(f"--cap-drop={d.lower()}")
    for a in caps.get("add", []):
        out.append(f"--cap-add={a}")
    if sc.get("allowPrivilegeEscalation") is False:
        out.append("--security-opt=no-new-privileges")
    if sc.get("privileged"):
        out.append("--privileged")
    if sc.get("readOnlyRootFilesystem"):
        out.append("--read-only")
    for e in c.get("env", []):
        if "value" not in e:
            sys.exit(f"{manifest}: env {e['name']} is not a plain value")
        out.append(f"--env={e['name']}={e['value']}")
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v = vols[m["name"]]
        if "hostPath" in v:
            path = v["hostPath"]["path"]
            src = subst.get(path, path)
        elif "configMap" in v:
            key = f"configMap:{v['configMap']['name']}"
            if key not in subst:
                sys.exit(f"k8s-podman.py: give {key}=LOCAL for the volume {m['name']}")
            src = subst[key]
        else:
            sys.exit(f"{manifest}: volume {m['name']}: only hostPath and configMap are translated")
        opts = ["ro"] if m.get("readOnly") else []
        prop = m.get("mountPropagation")
        if prop == "HostToContainer":
            opts.append("rslave")
        elif prop == "Bidirectional":
            opts.append("rshared")
        elif prop not in (None, "None"):
            sys.exit(f"{manifest}: mountPropagation {prop}")
        out.append(f"--volume={src}:{m['mountPath']}" + (":" + ",".join(opts) if opts else ""))
    out.append("--")
    out.extend(c.get("args", []))
    print("\n".join(out))


if __name__ == "__main__":
    main()
