package sandbox

// Faults a test does to a running sandbox, to prove what docs/reliability.md
// claims: a process paused (a hung server: connections are accepted and
// never answered), stopped (a server that is down) or
// restarted, a port refused to a real node's pods, every pod of a real node
// frozen, a container's process killed.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcessesOf returns the names of the recorded processes of cluster (those
// named "CLUSTER/..."), in start order.
func (s *Sandbox) ProcessesOf(cluster string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.Processes {
		if strings.HasPrefix(p.Name, cluster+"/") {
			out = append(out, p.Name)
		}
	}
	return out
}

// process returns the running recorded process of that name.
func (s *Sandbox) process(name string) (*Process, error) {
	p, err := s.lastRecord(name)
	if err == nil && !p.running() {
		return nil, fmt.Errorf("sandbox process %s (pid %d) is not running", name, p.PID)
	}
	return p, err
}

// lastRecord returns the latest record of the process of that name, running
// or not.
func (s *Sandbox) lastRecord(name string) (*Process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.Processes) - 1; i >= 0; i-- {
		if p := s.Processes[i]; p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("the sandbox has no process %s", name)
}

// Pause stops the named processes (SIGSTOP to each one's process group):
// they keep their sockets, so clients connect and then wait, as with a hung
// server or a network that drops every reply. Resume continues them.
func (s *Sandbox) Pause(names ...string) error { return s.signal(syscall.SIGSTOP, names) }

// Resume continues processes stopped by Pause.
func (s *Sandbox) Resume(names ...string) error { return s.signal(syscall.SIGCONT, names) }

func (s *Sandbox) signal(sig syscall.Signal, names []string) error {
	var errs []error
	for _, name := range names {
		p, err := s.process(name)
		if err == nil {
			err = syscall.Kill(-p.PID, sig)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Restart stops the named process (SIGTERM, then SIGKILL after grace) and
// starts it again with the same command line, environment and log file, as
// a supervisor would after a crash or an upgrade.
func (s *Sandbox) Restart(ctx context.Context, name string, grace time.Duration) error {
	if err := s.Stop(name, grace); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Start(name)
}

// Stop stops the named process (SIGTERM, then SIGKILL after grace) and keeps
// its record for Start: a server that is down. Its clients on the host have
// their connections refused (unlike Pause, where they hang); pods on real
// nodes reach the API servers and moto through netproxy, which accepts and
// then closes their connections, so they see them reset instead.
func (s *Sandbox) Stop(name string, grace time.Duration) error {
	p, err := s.process(name)
	if err != nil {
		return err
	}
	return p.stop(grace)
}

// Start runs the named process, stopped by Stop, again with the same command
// line, environment and log file. It fails when the process still runs.
func (s *Sandbox) Start(name string) error {
	p, err := s.lastRecord(name)
	if err != nil {
		return err
	}
	if p.running() {
		return fmt.Errorf("sandbox process %s (pid %d) is running: Stop it first", name, p.PID)
	}
	np, err := startProcess(p.Name, p.Log, p.Env, p.Args...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	for i := range s.Processes {
		if s.Processes[i] == p {
			s.Processes[i] = np
		}
	}
	s.mu.Unlock()
	return s.save()
}

// faultTable is the nftables table RefusePort adds to a node's network
// namespace; deleting it undoes every refusal there.
const faultTable = "clusterset-fault"

// RefusePort makes the real node of cluster answer every TCP packet sent to
// port on its own addresses with a reset (refuse true), or stops doing so:
// for the pods of that node the server behind the port is down, new
// connections are refused and open ones are cut, while the server itself
// keeps running and keeps its data (moto, which holds its records in
// memory, stands for a Cloud Map that cannot be reached). Only the node's
// namespace, made by the sandbox, is changed.
func (s *Sandbox) RefusePort(ctx context.Context, cluster string, port int, refuse bool) error {
	c := s.Cluster(cluster)
	if c == nil || s.Nodes != NodesReal {
		return fmt.Errorf("cluster %s has no real node", cluster)
	}
	node := s.nodeNetns(c)
	if !refuse {
		err := run(ctx, inNetns(node, "nft", "delete", "table", "inet", faultTable)...)
		if err != nil && !strings.Contains(err.Error(), "No such file") {
			return fmt.Errorf("letting %s's pods reach port %d again: %w", cluster, port, err)
		}
		return nil
	}
	for _, cmd := range [][]string{
		{"nft", "add", "table", "inet", faultTable},
		// Before kube-proxy's filter chains (priority 0), on input: the
		// packets the node's pods send to the node's own addresses.
		{"nft", "add", "chain", "inet", faultTable, "input", "{ type filter hook input priority -10 ; }"},
		{"nft", "add", "rule", "inet", faultTable, "input", "tcp", "dport", strconv.Itoa(port), "reject", "with", "tcp", "reset"},
	} {
		if err := run(ctx, inNetns(node, cmd...)...); err != nil {
			return fmt.Errorf("refusing port %d to %s's pods: %w", port, cluster, err)
		}
	}
	return nil
}

// FreezePods freezes (true) or thaws every pod of cluster's real node with
// the cgroup freezer on the kubelet's cgroup root (v1's freezer.state, or
// v2's cgroup.freeze): their processes stop where they are, as on a machine
// that hangs. The node's own processes (kubelet, containerd, kube-proxy)
// are sandbox processes: Pause them.
func (s *Sandbox) FreezePods(cluster string, frozen bool) error {
	c := s.Cluster(cluster)
	if c == nil || s.Nodes != NodesReal {
		return fmt.Errorf("cluster %s has no real node", cluster)
	}
	// What to write where, and the line that says the kernel is done.
	write, state, done := "freezer.state", "THAWED", "THAWED"
	dir := filepath.Join("/sys/fs/cgroup/freezer", s.cgroupRoot(c))
	if frozen {
		state, done = "FROZEN", "FROZEN"
	}
	read := write
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil { // cgroup v2
		dir = filepath.Join("/sys/fs/cgroup", s.cgroupRoot(c))
		write, read, state, done = "cgroup.freeze", "cgroup.events", "0", "frozen 0"
		if frozen {
			state, done = "1", "frozen 1"
		}
	}
	if err := os.WriteFile(filepath.Join(dir, write), []byte(state), 0o644); err != nil {
		return fmt.Errorf("freezing the pods of %s: %w", cluster, err)
	}
	// The kernel freezes asynchronously: wait until it says so.
	for range 100 {
		got, err := os.ReadFile(filepath.Join(dir, read))
		if err != nil {
			return err
		}
		if slices.Contains(strings.Split(string(got), "\n"), done) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("the pods of %s did not become %s", cluster, done)
}

// KillContainerProcesses sends sig to every process of cluster's real node
// whose command name (/proc/PID/comm, at most 15 characters) is comm and
// that runs in one of its pods, and returns how many it signalled. The
// kubelet sees the container die and restarts it, as after a crash.
func (s *Sandbox) KillContainerProcesses(cluster, comm string, sig syscall.Signal) (int, error) {
	c := s.Cluster(cluster)
	if c == nil || s.Nodes != NodesReal {
		return 0, fmt.Errorf("cluster %s has no real node", cluster)
	}
	root := s.cgroupRoot(c) + "/"
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		name, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(name)) != comm || !inCgroup(pid, root) {
			continue
		}
		if err := syscall.Kill(pid, sig); err == nil {
			n++
		}
	}
	return n, nil
}

// inCgroup reports whether pid is in a cgroup below root in any hierarchy.
func inCgroup(pid int, root string) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		if parts := strings.SplitN(sc.Text(), ":", 3); len(parts) == 3 && strings.HasPrefix(parts[2], root) {
			return true
		}
	}
	return false
}

// QuitControllers sends SIGQUIT to every cluster's clusterset-controller,
// host process or container, and gives them a moment to exit: the Go runtime
// writes the stack of every goroutine to the process's log (ControllerLogs)
// before it exits. For the post-mortem of a failed test: a reconcile that
// waits forever shows where. The kubelet restarts a controller that runs as
// a pod; a host process stays down.
func (s *Sandbox) QuitControllers() error {
	var errs []error
	for _, c := range s.Clusters {
		if s.Nodes == NodesReal {
			if _, err := s.KillContainerProcesses(c.Name, "clusterset-cont", syscall.SIGQUIT); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if p, err := s.process(c.Name + "/clusterset-controller"); err == nil {
			errs = append(errs, syscall.Kill(p.PID, syscall.SIGQUIT))
		}
	}
	time.Sleep(2 * time.Second) // the runtime writes the stacks, then exits
	return errors.Join(errs...)
}
