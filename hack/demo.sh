#!/usr/bin/env bash
# The clusterset walkthrough on a local 2-cluster sandbox (`make demo`):
#   1. starts the sandbox in .cache/demo (replacing one that runs there),
#   2. in cls1: namespace demo, Deployment nginx-hello (3 echo-server pods: real on real
#      nodes, simulated on kwok nodes), Service nginx-hello (80/TCP) and a ServiceExport;
#      namespace demo in cls2,
#   3. waits for cls2 to import it and prints the ServiceExport's conditions, cls2's
#      ServiceImport and EndpointSlices, and cls2's CoreDNS answer for
#      nginx-hello.demo.svc.clusterset.local, which must equal cls2's ServiceImport IP,
#   4. on real nodes: starts pod client-hello in cls2, shows nslookup of that name inside it
#      and sends HTTP requests to it, each answered by one of the 3 cls1 pods (all must answer),
#   5. leaves the sandbox running and prints how to look again and how to stop it.
# `make demo` builds the component binaries (once) and bin/ first.
#
# Environment:
#   CLUSTERSET_DEMO_DIR       sandbox directory (default: .cache/demo in the repository)
#   CLUSTERSET_DEMO_REGISTRY  hub (default) or cloudmap (needs moto_server: hack/install-moto.sh)
#   CLUSTERSET_DEMO_REUSE=1   keep a sandbox that already runs there instead of recreating it
#   CLUSTERSET_DEMO_TIMEOUT   how long to wait for the import (default 2m)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

dir=${CLUSTERSET_DEMO_DIR:-$root/.cache/demo}
registry=${CLUSTERSET_DEMO_REGISTRY:-hub}
timeout=${CLUSTERSET_DEMO_TIMEOUT:-2m}
plugin=$root/bin/kubectl-clusterset
controller=$root/bin/clusterset-controller
t0=$SECONDS

if [[ -t 1 ]]; then
  say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
else
  say() { printf '\n%s\n' "$*"; }
fi

for b in "$plugin" "$controller"; do
  [[ -x $b ]] || { echo "$b is missing: run \`make build\` (or \`make demo\`, which builds it)" >&2; exit 1; }
done

# Compile the walkthrough (a small Go program, no kubectl needed) before
# starting anything, so that a build error costs nothing.
walkthrough=$(mktemp -d)/clusterset-demo
trap 'rm -rf "$(dirname "$walkthrough")"' EXIT
go build -o "$walkthrough" ./test/e2e/cmd/demo

if [[ ${CLUSTERSET_DEMO_REUSE:-} == 1 ]] && "$plugin" sandbox status --dir "$dir" >/dev/null 2>&1; then
  say "Reusing the sandbox that runs in $dir (CLUSTERSET_DEMO_REUSE=1)"
  "$plugin" sandbox status --dir "$dir" | sed -n '1,/^clusterset /p'
else
  if "$plugin" sandbox status --dir "$dir" >/dev/null 2>&1; then
    say "A sandbox runs in $dir already: replacing it with a fresh one (CLUSTERSET_DEMO_REUSE=1 keeps it)"
  fi
  say "Starting a 2-cluster sandbox (registry $registry) in $dir"
  "$plugin" sandbox up --dir "$dir" --clusters 2 --registry "$registry" \
    --controller-binary "$controller" --recreate
fi

say "The walkthrough: export nginx-hello from cls1, import it in cls2"
"$walkthrough" --dir "$dir" --timeout "$timeout"
elapsed=$((SECONDS - t0))

rel=${dir#"$root"/}
kubeconfig=$dir/kubeconfig
say "Ready in ${elapsed}s. The sandbox keeps running; look again with:"
cat <<EOF
  bin/kubectl-clusterset sandbox dns cls2 nginx-hello.demo.svc.clusterset.local --dir $rel
  bin/kubectl-clusterset sandbox dns cls2 _http._tcp.nginx-hello.demo.svc.clusterset.local -t SRV --dir $rel
  bin/kubectl-clusterset sandbox dns cls1 nginx-hello.demo.svc.clusterset.local --dir $rel   # the exporter imports it too

  export KUBECONFIG=$kubeconfig
  kubectl --context cls1 -n demo get serviceexport nginx-hello -o yaml
  kubectl --context cls2 -n demo get serviceimport nginx-hello -o yaml
  kubectl --context cls2 -n demo get endpointslices -l multicluster.kubernetes.io/service-name=nginx-hello -o yaml
  kubectl --context cls1 -n demo scale deployment nginx-hello --replicas 5   # then look at cls2's EndpointSlices again
  kubectl --context cls2 -n demo exec client-hello -- nslookup nginx-hello.demo.svc.clusterset.local   # real nodes
  kubectl --context cls2 -n clusterset-system get pods   # real nodes: the controller, installed from config/
  eval "\$(bin/kubectl-clusterset sandbox env --dir $rel)"   # KUBECONFIG and every CoreDNS address
EOF
if ! command -v kubectl >/dev/null 2>&1; then
  echo "  (kubectl is not installed here: the kubectl lines need it, see https://kubernetes.io/docs/tasks/tools/;"
  echo "   the bin/kubectl-clusterset lines work without it)"
fi
cat <<EOF

Stop it (stops exactly the processes it started; logs stay in $rel/logs):
  bin/kubectl-clusterset sandbox down --dir $rel
EOF
