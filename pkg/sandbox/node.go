package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"time"

	"github.com/clusterset/clusterset/pkg/sandbox/netproxy"
)

// Node modes of Options.Nodes.
const (
	// NodesKwok gives every cluster a kwok node: pods are objects whose
	// status kwok fills in; nothing runs and no packet flows.
	NodesKwok = "kwok"
	// NodesReal gives every cluster one real node: containerd and runc,
	// kubelet and kube-proxy, CNI bridge networking, in a network namespace
	// of its own (see Network).
	NodesReal = "real"
)

// Programs a real node needs from the machine (Debian packages containerd,
// runc, util-linux, iproute2, nftables), and from the component cache.
var (
	realNodeTools    = []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "ip", "nft", "sysctl"}
	realNodeBinaries = []string{"kubelet", "kube-proxy", "cni-plugins/bridge", "cni-plugins/host-local", "cni-plugins/loopback", "cni-plugins/portmap"}
)

// The images every real node holds under these names (built by
// `make images`, imported at start): the pod sandbox and what the
// walkthrough and the e2e suite run.
const (
	ImagePause      = "clusterset.dev/pause:dev"
	ImageCoreDNS    = "clusterset.dev/coredns:dev"
	ImageEchoServer = "clusterset.dev/echo-server:dev"
	ImageClient     = "clusterset.dev/client:dev"
	ImageController = "clusterset.dev/clusterset-controller:dev"
)

// RealNodesProblem says why real nodes cannot run here with the node
// binaries of nodeBinDir, "" when they can.
func RealNodesProblem(nodeBinDir string) string {
	if goruntime.GOOS != "linux" {
		return "real nodes need Linux (network namespaces, cgroups)"
	}
	if os.Geteuid() != 0 {
		return "real nodes need root (network namespaces, containerd, kubelet)"
	}
	var missing []string
	for _, t := range realNodeTools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("%s not found: run `hack/install-node-tools.sh` (apt-get install containerd runc nftables iproute2 util-linux)", strings.Join(missing, ", "))
	}
	for _, b := range realNodeBinaries {
		if st, err := os.Stat(filepath.Join(nodeBinDir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("%s not in %s: run `hack/build-binaries.sh node`", strings.Join(missing, ", "), nodeBinDir)
	}
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		return "no cgroup hierarchy mounted at /sys/fs/cgroup"
	}
	return ""
}

// nodeDirs are where one real node keeps its files.
type nodeDirs struct {
	base       string // under the sandbox directory: configs, kubelet root
	run        string // short: sockets, containerd state
	socket     string // containerd's gRPC socket
	cniConf    string
	kubeletDir string
	podLogs    string // the kubelet's podLogsDir: NAMESPACE_POD_UID/CONTAINER/N.log, kept with the other logs
}

func (s *Sandbox) nodeDirs(c *Cluster) nodeDirs {
	base := filepath.Join(c.Dir, "node")
	run := filepath.Join(s.Network.RunDir, c.Name)
	return nodeDirs{
		base:       base,
		run:        run,
		socket:     filepath.Join(run, "containerd.sock"),
		cniConf:    filepath.Join(base, "cni"),
		kubeletDir: filepath.Join(base, "kubelet"),
		podLogs:    filepath.Join(s.Dir, "logs", "pods", c.Name),
	}
}

// dnsServiceIP is the ClusterIP of the in-cluster CoreDNS Service: the
// tenth address of the service range, as kubeadm does.
func dnsServiceIP(c *Cluster) string {
	return strings.TrimSuffix(c.ServiceCIDR, ".0.0/16") + ".0.10"
}

// cgroupRoot is the kubelet's cgroup root: one per sandbox node, so that two
// kubelets on one machine never manage each other's pods.
func (s *Sandbox) cgroupRoot(c *Cluster) string {
	return "/" + s.Network.Prefix + "-" + c.Name
}

// startNetproxy starts clusterset-sandbox-netproxy: per node, the cluster's
// API server (and moto) at the node's address, and the API server's egress
// to the node through a Unix socket.
func (s *Sandbox) startNetproxy(ctx context.Context, env *upEnv, binary string) error {
	var cfg netproxy.Config
	for _, c := range s.Clusters {
		ns := netnsPath(s.nodeNetns(c))
		cfg.Forwards = append(cfg.Forwards, netproxy.Forward{
			NetNS:  ns,
			Listen: fmt.Sprintf("%s:%d", realNodeAddress(c.Index), c.Ports.APIServer),
			Target: fmt.Sprintf("127.0.0.1:%d", c.Ports.APIServer),
		})
		if env.motoPort != 0 {
			cfg.Forwards = append(cfg.Forwards, netproxy.Forward{
				NetNS:  ns,
				Listen: fmt.Sprintf("%s:%d", realNodeAddress(c.Index), env.motoPort),
				Target: fmt.Sprintf("127.0.0.1:%d", env.motoPort),
			})
		}
		cfg.Connects = append(cfg.Connects, netproxy.Connect{NetNS: ns, Socket: s.egressSocket(c)})
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	file := filepath.Join(s.Dir, "netproxy.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return err
	}
	proc, err := s.launch(env, "netproxy", nil, binary, "-config", file)
	if err != nil {
		return err
	}
	return waitFor(ctx, proc, "netproxy", 30*time.Second, func(context.Context) bool {
		for _, c := range cfg.Connects {
			if _, err := os.Stat(c.Socket); err != nil {
				return false
			}
		}
		return true
	})
}

func (s *Sandbox) egressSocket(c *Cluster) string {
	return filepath.Join(s.Network.RunDir, c.Name+"-egress.sock")
}

// writeEgressSelector writes the kube-apiserver's egress selector
// configuration: traffic to nodes and pods goes through netproxy.
func (s *Sandbox) writeEgressSelector(c *Cluster) (string, error) {
	file := filepath.Join(c.Dir, "egress-selector.yaml")
	text := fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
- name: controlplane
  connection:
    proxyProtocol: Direct
- name: etcd
  connection:
    proxyProtocol: Direct
`, s.egressSocket(c))
	return file, os.WriteFile(file, []byte(text), 0o644)
}

// kubeletStartLock is the file whose flock serializes the start of
// kubelets on this machine, across clusters, sandboxes and processes (see
// startNode). A variable for the tests.
var kubeletStartLock = "/run/clusterset-kubelet-start.lock"

// lockKubeletStart blocks until this process holds kubeletStartLock, or ctx
// ends. The returned func releases it. The lock is per open file, so two
// callers in one process exclude each other as two processes do.
func lockKubeletStart(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(kubeletStartLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", kubeletStartLock, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for another kubelet to start (%s): %w", kubeletStartLock, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startNode starts cluster c's real node: containerd (with the images
// imported), kubelet and kube-proxy, all in the node's network namespace,
// and waits until the node is Ready.
func (s *Sandbox) startNode(ctx context.Context, env *upEnv, cl *clients, c *Cluster, step func(string, ...any)) error {
	d := s.nodeDirs(c)
	ns := s.nodeNetns(c)
	for _, dir := range []string{d.base, d.run, d.cniConf, d.kubeletDir, d.podLogs} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	cniBin := filepath.Join(env.opts.NodeBinDir, "cni-plugins")

	// CNI: one bridge per node, the cluster's whole pod CIDR, no masquerade
	// (pods of peered clusters see each other's addresses, as in a VPC).
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "sandbox",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, c.PodCIDR, podGateway(c), filepath.Join(d.run, "cni-ipam"))
	if err := os.WriteFile(filepath.Join(d.cniConf, "10-sandbox.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}

	// containerd: a private instance (own root, state and socket) with the
	// CRI settings this machine kind needs (DESIGN.md, "Real nodes").
	containerdConfig := filepath.Join(d.base, "containerd.toml")
	ctrRoot := filepath.Join(d.base, "containerd")
	ctrState := filepath.Join(d.run, "state")
	toml := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # Root here may not lower oom_score_adj (no CAP_SYS_RESOURCE): without
  # this every pod sandbox fails in runc.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, ctrRoot, ctrState, d.socket, d.socket+".ttrpc", filepath.Join(d.base, "opt"), ImagePause, cniBin, d.cniConf)
	if err := os.WriteFile(containerdConfig, []byte(toml), 0o644); err != nil {
		return err
	}
	containerd, err := s.launch(env, c.Name+"/containerd", nil, inNetns(ns, "containerd", "--config", containerdConfig, "--log-level", "warn")...)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, containerd, "containerd", componentsTimeout, func(ctx context.Context) bool {
		return exec.CommandContext(ctx, "ctr", "--address", d.socket, "version").Run() == nil
	}); err != nil {
		return err
	}
	containerd.refreshArgs()
	n, err := s.importImages(ctx, env, d.socket)
	if err != nil {
		return err
	}
	step("containerd ready, %d images imported", n)

	// kubelet.
	if err := makeCgroup(s.cgroupRoot(c)); err != nil {
		return fmt.Errorf("cgroup %s: %w", s.cgroupRoot(c), err)
	}
	pki := filepath.Join(c.Dir, "pki")
	nodeKubeconfig := func(file, cn string, orgs []string) error {
		kp, err := env.ca.issue(cn, orgs, nil, false)
		if err != nil {
			return err
		}
		return writeKubeconfig(file, kubeconfigEntry{name: c.Name, server: c.NodeServer, caPEM: env.ca.certPEM,
			creds: credentials{certPEM: kp.certPEM, keyPEM: kp.keyPEM}})
	}
	kubeletKubeconfig := filepath.Join(d.base, "kubelet.kubeconfig")
	if err := nodeKubeconfig(kubeletKubeconfig, "system:node:"+c.NodeName, []string{"system:nodes"}); err != nil {
		return err
	}
	serving, err := env.ca.issue(c.NodeName, nil, []string{realNodeAddress(c.Index), c.NodeName}, true)
	if err != nil {
		return err
	}
	kubeletCert, kubeletKey, err := serving.write(pki, "kubelet")
	if err != nil {
		return err
	}
	resolvConf := filepath.Join(d.base, "resolv.conf")
	// The node's upstream resolver, which CoreDNS (dnsPolicy Default)
	// forwards other names to: the vpc namespace's address, where nothing
	// answers, so such names fail at once and no query leaves the sandbox.
	// Pods with dnsPolicy ClusterFirst get the cluster's CoreDNS instead.
	if err := os.WriteFile(resolvConf, []byte("nameserver "+vpcAddress(c.Index)+"\n"), 0o644); err != nil {
		return err
	}
	kubeletConfig := filepath.Join(d.base, "kubelet.yaml")
	kcfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine kind has cgroup v1 only.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
containerRuntimeEndpoint: unix://%s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
tlsCertFile: %q
tlsPrivateKeyFile: %q
clusterDomain: cluster.local
clusterDNS: [%q]
resolvConf: %q
# Pod logs stay in the sandbox, not in the machine's /var/log/pods.
podLogsDir: %q
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
failSwapOn: false
# The filesystem of a sandbox machine cannot be measured per pod, and the
# images cannot be pulled again: no local storage isolation, no image GC,
# evictions only when the disk is really full.
localStorageCapacityIsolation: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%%", "imagefs.available": "1%%"}
serializeImagePulls: false
`, s.cgroupRoot(c), d.socket, env.caFile, kubeletCert, kubeletKey, dnsServiceIP(c), resolvConf, d.podLogs)
	if err := os.WriteFile(kubeletConfig, []byte(kcfg), 0o644); err != nil {
		return err
	}
	// One kubelet starts at a time, until its node is Ready: every kubelet
	// serves its device plugin registry on the same host path,
	// /var/lib/kubelet/device-plugins/kubelet.sock (not under --root-dir),
	// and two that bind it at once make one fail with "address already in
	// use". Started one after the other, each replaces the socket of the one
	// before, which nothing here uses. A file lock, so that sandboxes of
	// other processes (make demo while make e2e runs) take turns too.
	unlock, err := lockKubeletStart(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	kubelet, err := s.launch(env, c.Name+"/kubelet", nil, inNetns(ns, filepath.Join(env.opts.NodeBinDir, "kubelet"),
		"--config="+kubeletConfig,
		"--kubeconfig="+kubeletKubeconfig,
		"--hostname-override="+c.NodeName,
		"--node-ip="+realNodeAddress(c.Index),
		"--root-dir="+d.kubeletDir,
		"--cert-dir="+filepath.Join(d.base, "kubelet-pki"),
		"--v=1",
	)...)
	if err != nil {
		return err
	}

	// kube-proxy, nftables mode, inside the node's namespace only.
	proxyKubeconfig := filepath.Join(d.base, "kube-proxy.kubeconfig")
	if err := nodeKubeconfig(proxyKubeconfig, "system:kube-proxy", nil); err != nil {
		return err
	}
	proxyConfig := filepath.Join(d.base, "kube-proxy.yaml")
	pcfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
mode: nftables
clusterCIDR: %q
hostnameOverride: %q
# Leave the (machine-wide) conntrack table size alone.
conntrack: {maxPerCore: 0, min: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, proxyKubeconfig, c.PodCIDR, c.NodeName)
	if err := os.WriteFile(proxyConfig, []byte(pcfg), 0o644); err != nil {
		return err
	}
	proxy, err := s.launch(env, c.Name+"/kube-proxy", nil, inNetns(ns, filepath.Join(env.opts.NodeBinDir, "kube-proxy"),
		"--config="+proxyConfig, "--v=1")...)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, kubelet, "node "+c.NodeName+" Ready", componentsTimeout, func(ctx context.Context) bool {
		return cl.waitNodeReady(ctx, c.NodeName, time.Second) == nil
	}); err != nil {
		return err
	}
	kubelet.refreshArgs()
	proxy.refreshArgs()
	if !proxy.running() {
		return fmt.Errorf("kube-proxy exited; last lines of %s:\n%s", proxy.Log, logTail(proxy.Log, 25))
	}
	step("node %s Ready (kubelet, containerd, kube-proxy in netns %s; node IP %s; pods %s)", c.NodeName, ns, realNodeAddress(c.Index), c.PodCIDR)
	return nil
}

// prepareRealNodes records the Network, builds netproxy and the images when
// missing, makes the namespaces and starts netproxy: everything the real
// nodes need before the control planes start.
func (s *Sandbox) prepareRealNodes(ctx context.Context, env *upEnv) error {
	prefix := networkPrefix(s.Dir)
	s.Network = &Network{Prefix: prefix, RunDir: filepath.Join("/run/clusterset", prefix)}
	s.Network.MountRoots = append(s.Network.MountRoots, s.Network.RunDir)
	for _, c := range s.Clusters {
		s.Network.MountRoots = append(s.Network.MountRoots, filepath.Join(c.Dir, "node"))
		s.Network.CgroupRoots = append(s.Network.CgroupRoots, s.cgroupRoot(c))
	}
	if err := s.save(); err != nil {
		return err
	}
	if err := os.MkdirAll(s.Network.RunDir, 0o755); err != nil {
		return err
	}
	netproxyBin, err := goBuild(ctx, env.opts, env.p, "clusterset-sandbox-netproxy")
	if err != nil {
		return err
	}
	if err := ensureImages(ctx, env); err != nil {
		return err
	}
	if err := s.setupNetwork(ctx, env); err != nil {
		return err
	}
	return s.startNetproxy(ctx, env, netproxyBin)
}
