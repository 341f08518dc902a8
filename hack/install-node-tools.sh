#!/usr/bin/env bash
# Installs what the sandbox's real nodes and `make images` need from Debian's
# packages, unless it is already there:
#   containerd, runc      the container runtime (containerd 1.6 and runc 1.1 on
#                         Debian 12; why Debian's rather than a build of the Go
#                         module: docs/sandbox.md)
#   nftables              the nft program kube-proxy's nftables mode runs
#   iproute2, util-linux  ip (namespaces, veths, routes) and nsenter
#   procps                sysctl
#   busybox-static        the client image's shell, nslookup, nc and wget
#   ca-certificates       the CA bundle of the controller and CoreDNS images
# Real nodes need Linux and root; elsewhere this script does nothing.
set -euo pipefail
if [[ "$(uname -s)" != Linux || "$(id -u)" != 0 ]]; then
  echo "install-node-tools: not root on Linux: real nodes cannot run here, nothing to install"
  exit 0
fi
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have containerd || need+=(containerd)
have runc || need+=(runc)
have nft || need+=(nftables)
have ip || need+=(iproute2)
have nsenter || need+=(util-linux)
have sysctl || need+=(procps)
[[ -x /bin/busybox ]] && /bin/busybox --list | grep -qx nslookup || need+=(busybox-static)
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || need+=(ca-certificates)
if [[ ${#need[@]} -eq 0 ]]; then
  echo "install-node-tools: containerd $(containerd --version | awk '{print $3}'), runc, nftables, iproute2, busybox-static already installed"
  exit 0
fi
t0=$(date +%s)
echo "install-node-tools: apt-get install ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package starts a system containerd on /run/containerd; the sandbox runs
# its own instances and needs none.
if have systemctl && systemctl is-active --quiet containerd 2>/dev/null; then systemctl stop containerd || true; fi
echo "install-node-tools: installed in $(( $(date +%s) - t0 ))s"
