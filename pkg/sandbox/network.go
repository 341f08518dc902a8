package sandbox

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Network is what Up made for real nodes, recorded in state.json so that
// Down removes exactly that, also after a crash.
//
// The layout, for clusters clsI:
//
//	            netns <prefix>-vpc  (ip_forward; a route to every pod CIDR)
//	           /  172.16.1.1    172.16.2.1  \
//	  veth    /                               \   veth
//	netns <prefix>-cls1                      netns <prefix>-cls2
//	  eth0 172.16.1.10/24                      eth0 172.16.2.10/24
//	  cni0 10.11.0.1/16 (pods)                 cni0 10.12.0.1/16 (pods)
//	  containerd, kubelet, kube-proxy          containerd, kubelet, kube-proxy
//
// Node namespaces have routes to the other clusters' node and pod ranges
// through the vpc namespace, and no default route: a packet for any other
// address fails at once with "network unreachable". The machine's own
// namespace gets no address on any of these links; it reaches the nodes only
// through clusterset-sandbox-netproxy (pkg/sandbox/netproxy), and gets
// `unreachable` routes for the sandbox's ranges so that nothing on the
// machine can send a sandbox address out of its default route by mistake.
type Network struct {
	// Prefix starts every namespace name and link name the sandbox made.
	Prefix string `json:"prefix"`
	// Namespaces are the network namespaces, the vpc first.
	Namespaces []string `json:"namespaces"`
	// HostRoutes are the unreachable routes added to the machine's table.
	HostRoutes []string `json:"hostRoutes"`
	// RunDir holds sockets and containerd's state (short paths: Unix socket
	// names are limited to 107 bytes).
	RunDir string `json:"runDir"`
	// CgroupRoots are the kubelets' cgroup roots, relative to each v1
	// hierarchy (or the unified one).
	CgroupRoots []string `json:"cgroupRoots"`
	// MountRoots are directories under which every mount was made by the
	// sandbox's nodes (kubelet volumes, containerd rootfs and pod netns).
	MountRoots []string `json:"mountRoots"`
}

// networkPrefix is a short name for the sandbox in dir: link names are
// limited to 15 bytes.
func networkPrefix(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "cs" + hex.EncodeToString(sum[:])[:5]
}

func netnsPath(name string) string { return filepath.Join("/var/run/netns", name) }

// nodeNetns names the network namespace of cluster c's real node.
func (s *Sandbox) nodeNetns(c *Cluster) string { return s.Network.Prefix + "-" + c.Name }

// realNodeAddress is node I's address on its link to the vpc namespace, and
// the address of the kube-apiserver it advertises to pods.
func realNodeAddress(i int) string { return fmt.Sprintf("172.16.%d.10", i) }

func vpcAddress(i int) string { return fmt.Sprintf("172.16.%d.1", i) }

func nodeSubnet(i int) string { return fmt.Sprintf("172.16.%d.0/24", i) }

// podGateway is the bridge's address, the pods' default gateway.
func podGateway(c *Cluster) string {
	ip := strings.TrimSuffix(c.PodCIDR, ".0.0/16")
	return ip + ".0.1"
}

// run runs a command and returns an error with its output when it fails.
func run(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns prefixes a command so that it runs in the network namespace ns and
// nothing else changes (unlike `ip netns exec`, which also remounts /sys and
// would hide the cgroup hierarchies from kubelet and runc).
func inNetns(ns string, args ...string) []string {
	return append([]string{"nsenter", "--net=" + netnsPath(ns), "--"}, args...)
}

// setupNetwork makes the namespaces, links, addresses and routes of the
// layout above. It records each piece in s.Network before making it, so that
// a failure half-way is undone by Down.
func (s *Sandbox) setupNetwork(ctx context.Context, env *upEnv) error {
	n := s.Network
	vpc := n.Prefix + "-vpc"
	addNS := func(name string) error {
		n.Namespaces = append(n.Namespaces, name)
		if err := s.save(); err != nil {
			return err
		}
		if err := run(ctx, "ip", "netns", "add", name); err != nil {
			return err
		}
		return run(ctx, "ip", "-n", name, "link", "set", "lo", "up")
	}
	if err := addNS(vpc); err != nil {
		return err
	}
	if err := run(ctx, inNetns(vpc, "sysctl", "-qw", "net.ipv4.ip_forward=1")...); err != nil {
		return err
	}
	for _, c := range s.Clusters {
		for _, cidr := range []string{nodeSubnet(c.Index), c.PodCIDR, c.ServiceCIDR} {
			n.HostRoutes = append(n.HostRoutes, cidr)
			if err := s.save(); err != nil {
				return err
			}
			if err := run(ctx, "ip", "route", "replace", "unreachable", cidr); err != nil {
				return err
			}
		}
	}
	for _, c := range s.Clusters {
		node := s.nodeNetns(c)
		if err := addNS(node); err != nil {
			return err
		}
		outer := fmt.Sprintf("%sv%d", n.Prefix, c.Index)
		inner := fmt.Sprintf("%sn%d", n.Prefix, c.Index)
		steps := [][]string{
			{"ip", "link", "add", outer, "netns", vpc, "type", "veth", "peer", "name", inner, "netns", node},
			{"ip", "-n", node, "link", "set", inner, "name", "eth0"},
			{"ip", "-n", node, "addr", "add", realNodeAddress(c.Index) + "/24", "dev", "eth0"},
			{"ip", "-n", node, "link", "set", "eth0", "up"},
			{"ip", "-n", vpc, "addr", "add", vpcAddress(c.Index) + "/24", "dev", outer},
			{"ip", "-n", vpc, "link", "set", outer, "up"},
			// The vpc knows where each cluster's pods are.
			{"ip", "-n", vpc, "route", "add", c.PodCIDR, "via", realNodeAddress(c.Index)},
			inNetns(node, "sysctl", "-qw", "net.ipv4.ip_forward=1"),
			// Every packet without a route gets its ICMP "network
			// unreachable" back, not only one a second: a pod's connection
			// out of the sandbox fails within a second, every time, instead
			// of waiting for its own time-out.
			inNetns(node, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"),
			// Bridged pod-to-pod replies of a Service connection must pass
			// conntrack to be un-NATed (one node per cluster: client and
			// backend often share the bridge).
			inNetns(node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"),
		}
		for _, other := range s.Clusters {
			if other == c {
				continue
			}
			// VPC peering: the other clusters' nodes and pods, nothing else.
			steps = append(steps,
				[]string{"ip", "-n", node, "route", "add", nodeSubnet(other.Index), "via", vpcAddress(c.Index)},
				[]string{"ip", "-n", node, "route", "add", other.PodCIDR, "via", vpcAddress(c.Index)},
			)
		}
		for _, step := range steps {
			if err := run(ctx, step...); err != nil {
				return fmt.Errorf("%s network: %w", c.Name, err)
			}
		}
	}
	env.p.say("network: namespaces %s, no default route anywhere", strings.Join(n.Namespaces, ", "))
	return nil
}

// teardownNetwork undoes what the sandbox's real nodes left on the machine:
// container processes and shims, mounts, cgroups, namespaces and routes. It
// runs after every recorded process was stopped, and goes on past errors so
// that one stuck piece does not keep the others.
func (n *Network) teardown(ctx context.Context) []error {
	var errs []error
	// Containers and their shims are not our children: find them by cgroup
	// and by the containerd socket they serve.
	for _, root := range n.CgroupRoots {
		for _, pid := range cgroupPIDs(root) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if n.RunDir != "" {
		for _, pid := range pidsWithArg(n.RunDir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, root := range n.MountRoots {
		errs = append(errs, unmountUnder(root)...)
	}
	for _, root := range n.CgroupRoots {
		errs = append(errs, removeCgroup(root)...)
	}
	for i := len(n.Namespaces) - 1; i >= 0; i-- {
		name := n.Namespaces[i]
		if _, err := os.Stat(netnsPath(name)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := run(ctx, "ip", "netns", "delete", name); err != nil {
			errs = append(errs, err)
		}
	}
	for _, cidr := range n.HostRoutes {
		out, _ := exec.CommandContext(ctx, "ip", "route", "show", "type", "unreachable", cidr).Output()
		if len(strings.TrimSpace(string(out))) == 0 {
			continue
		}
		if err := run(ctx, "ip", "route", "del", "unreachable", cidr); err != nil {
			errs = append(errs, err)
		}
	}
	if n.RunDir != "" {
		if err := os.RemoveAll(n.RunDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// cgroupHierarchies are the mounted cgroup hierarchies: every v1 controller
// directory, or the unified v2 root.
func cgroupHierarchies() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				out = append(out, unescapeMount(fields[4]))
			}
		}
	}
	return out
}

// cgroupPIDs lists every process in the cgroup root (relative path) and
// below, in any hierarchy.
func cgroupPIDs(root string) []int {
	seen := map[int]bool{}
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			for _, f := range strings.Fields(string(data)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 0 {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	pids := make([]int, 0, len(seen))
	for pid := range seen {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// makeCgroup creates the cgroup root in every hierarchy, with the cpuset of
// its parent (a v1 cpuset cgroup takes no task while its cpus are empty).
func makeCgroup(root string) error {
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
			if err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
			}
		}
	}
	return nil
}

// removeCgroup removes the cgroup root and its children in every hierarchy,
// deepest first. A cgroup that still holds a process cannot go; that is
// reported.
func removeCgroup(root string) []error {
	var errs []error
	for _, h := range cgroupHierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			// A process killed a moment ago may still be leaving its
			// cgroup (EBUSY): give it a few seconds.
			var err error
			for try := 0; try < 50; try++ {
				if err = syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, syscall.ENOENT) || !errors.Is(err, syscall.EBUSY) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errs
}

// pidsWithArg lists processes one of whose arguments contains s.
func pidsWithArg(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(data), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder detaches every mount at or below root, deepest first.
func unmountUnder(root string) []error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return []error{err}
	}
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		if p == root || strings.HasPrefix(p, root+"/") {
			points = append(points, p)
		}
	}
	_ = f.Close()
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
		}
	}
	return errs
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
