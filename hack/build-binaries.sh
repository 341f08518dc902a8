#!/usr/bin/env bash
# Builds the real Kubernetes components that clusterset's tests and sandbox run,
# from Go modules (no prebuilt release can be downloaded here), into a versioned
# cache inside the repository:
#
#   .cache/bin/<name>@<version>     one file per binary and version
#   .cache/envtest/                 symlinks for KUBEBUILDER_ASSETS (kube-apiserver, etcd)
#   .cache/sandbox/                 symlinks for the sandbox (all of them)
#   .cache/node/                    symlinks for real nodes (kubelet, kube-proxy, CNI plugins)
#   .cache/tools/                   symlinks for test tools (promtool)
#
# Usage: hack/build-binaries.sh [envtest|sandbox|node|tools|NAME...]
#   NAME is one of kube-apiserver kube-controller-manager kube-scheduler etcd kwok coredns
#   kubelet kube-proxy cni-plugins promtool. cni-plugins is a directory (bridge, host-local,
#   loopback, portmap from github.com/containernetworking/plugins).
# A binary that is already in the cache is not rebuilt, so a warm run takes seconds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/versions.sh
source "$root/hack/versions.sh"
cache=${CLUSTERSET_CACHE:-$root/.cache}
bin="$cache/bin"
mkdir -p "$bin"

start=$(date +%s)
say() { printf '[build-binaries +%4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

version_of() {
  case "$1" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy) echo "$KUBE_VERSION" ;;
    cni-plugins) echo "$CNI_PLUGINS_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    promtool) echo "$PROMETHEUS_VERSION" ;;
    *) echo "unknown binary: $1" >&2; return 1 ;;
  esac
}

build_one() {
  local name=$1 version out tmp t0
  version=$(version_of "$name")
  out="$bin/$name@$version"
  if [[ -x "$out" && ! -d "$out" ]] || [[ -d "$out" && -x "$out/bridge" ]]; then
    return 0
  fi
  tmp="$out.tmp.$$"
  t0=$(date +%s)
  say "building $name $version (cold builds of Kubernetes components take several minutes on 2 cores)"
  case "$name" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy)
      local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
      local pkg=k8s.io/component-base/version
      (cd "$root/hack/tools" && CGO_ENABLED=0 go build -trimpath -o "$tmp" \
        -ldflags "-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
        "k8s.io/kubernetes/cmd/$name")
      ;;
    etcd)
      (cd "$root/hack/tools" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp" ./etcd)
      ;;
    kwok)
      local gobin; gobin=$(mktemp -d)
      GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
      mv "$gobin/kwok" "$tmp"; rmdir "$gobin"
      ;;
    cni-plugins)
      mkdir -p "$tmp"
      local plugin
      for plugin in main/bridge ipam/host-local main/loopback meta/portmap; do
        GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
          "github.com/containernetworking/plugins/plugins/$plugin@$CNI_PLUGINS_VERSION"
      done
      ;;
    promtool)
      local gobin; gobin=$(mktemp -d)
      GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
      mv "$gobin/promtool" "$tmp"; rmdir "$gobin"
      ;;
    coredns)
      local gobin; gobin=$(mktemp -d)
      GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
      mv "$gobin/coredns" "$tmp"; rmdir "$gobin"
      ;;
  esac
  mv "$tmp" "$out"
  say "built $name $version in $(( $(date +%s) - t0 ))s -> ${out#"$root"/}"
}

link_set() {
  local dir=$1; shift
  mkdir -p "$dir"
  local name
  for name in "$@"; do
    ln -sfn "../bin/$name@$(version_of "$name")" "$dir/$name"
  done
}

envtest=(kube-apiserver etcd)
sandbox=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok coredns)
node=(kubelet kube-proxy cni-plugins)
tools=(promtool)

targets=()
[[ $# -gt 0 ]] || set -- envtest
for arg in "$@"; do
  case "$arg" in
    envtest) targets+=("${envtest[@]}") ;;
    sandbox) targets+=("${sandbox[@]}") ;;
    node) targets+=("${node[@]}") ;;
    tools) targets+=("${tools[@]}") ;;
    *) version_of "$arg" >/dev/null; targets+=("$arg") ;;
  esac
done

for name in "${targets[@]}"; do
  build_one "$name"
done
# The link sets point only at binaries that exist, so a partial build never
# leaves a dangling KUBEBUILDER_ASSETS behind.
have_all() { local n; for n in "$@"; do [[ -x "$bin/$n@$(version_of "$n")" ]] || return 1; done; }
if have_all "${envtest[@]}"; then link_set "$cache/envtest" "${envtest[@]}"; fi
if have_all "${sandbox[@]}"; then link_set "$cache/sandbox" "${sandbox[@]}"; fi
if have_all "${node[@]}"; then link_set "$cache/node" "${node[@]}"; fi
if have_all "${tools[@]}"; then link_set "$cache/tools" "${tools[@]}"; fi
say "ready: ${targets[*]}"
