#!/usr/bin/env bash
# Prepares Kubernetes' OpenAPI definitions for the schema validation of kube-fake-client in
# tests, and prints the file's path.
#
# The definitions come from the PyPI package kubernetes-validate, which ships Kubernetes'
# published schemas for each release (the "strict" flavour refuses unknown fields). They
# are rewritten into the swagger layout kube-fake-client reads ({"definitions": …}), with
# aliases for the names it derives for dotted API groups (io.k8s.networking.v1.Ingress).
#
# Environment: HERD_K8S_VERSION (default 1.34, the version k8s-openapi targets here).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${HERD_K8S_VERSION:-1.34}
package=kubernetes-validate==1.37.0
out=var/k8s-openapi/v${version}-strict.json
if [ -s "$out" ]; then
  echo "$PWD/$out"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --quiet "$package" -d "$tmp" >&2
mkdir -p "$(dirname "$out")"
python3 - "$tmp" "$version" "$out" <<'PY'
import glob, json, sys, zipfile

tmp, version, out = sys.argv[1:4]
wheel = glob.glob(f"{tmp}/*.whl")[0]
name = f"kubernetes_validate/kubernetes-json-schema/v{version}.0-local-strict/_definitions.json"
with zipfile.ZipFile(wheel) as z:
    defs = json.loads(z.read(name))["$defs"]
defs = json.loads(json.dumps(defs).replace('"#/$defs/', '"#/definitions/'))
for key, d in list(defs.items()):
    for gvk in d.get("x-kubernetes-group-version-kind", []):
        group = gvk["group"]
        if "." in group:
            alias = ".".join(reversed(group.split("."))) + f".{gvk['version']}.{gvk['kind']}"
            defs.setdefault(alias, {"$ref": f"#/definitions/{key}"})
with open(out, "w") as f:
    json.dump({"swagger": "2.0", "info": {"title": "Kubernetes", "version": f"v{version}"}, "definitions": defs}, f)
PY
echo "$PWD/$out"
