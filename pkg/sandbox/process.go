package sandbox

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is one program the sandbox started. Its pid and exact command line
// are recorded in state.json so that `down` (possibly from another process,
// after a crash) stops exactly what `up` started and nothing that merely
// reuses a recycled pid.
type Process struct {
	// Name identifies the process within the sandbox, e.g. "cls1/kube-apiserver".
	Name string `json:"name"`
	// PID is the operating system's process ID.
	PID int `json:"pid"`
	// Args is the full command line, Args[0] being the binary's path.
	Args []string `json:"args"`
	// Log is the file that receives the process's stdout and stderr.
	Log string `json:"log"`
	// Started is when the process was started.
	Started time.Time `json:"started"`
	// Env is what the process got on top of the sandbox's environment.
	Env []string `json:"env,omitempty"`

	// done is closed when the process exits, if this process started it.
	done chan struct{}
}

// start runs a program in the background, detached into its own process group
// so that a Ctrl-C sent to the terminal that ran `sandbox up` later does not
// reach it, with its output appended to a log file.
func startProcess(name, logFile string, env []string, args ...string) (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Stdin = nil
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	// Reap the child when it exits while we are still alive; once we are gone
	// init does it. A reaped or zombie process has an empty cmdline, which
	// alive() treats as gone.
	p := &Process{Name: name, PID: cmd.Process.Pid, Args: args, Log: logFile, Started: time.Now(), Env: env, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// running reports whether the process still runs: exactly, when we started
// it (a wrapper may exec another program and change its command line before
// refreshArgs records it); else by its recorded command line.
func (p *Process) running() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return false
		default:
			return true
		}
	}
	return p.alive()
}

// alive reports whether the pid still runs the recorded command line.
func (p *Process) alive() bool {
	if p.PID <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
	if err != nil || len(data) == 0 {
		return false
	}
	got := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
	if len(got) != len(p.Args) {
		return false
	}
	for i := range got {
		if got[i] != p.Args[i] {
			return false
		}
	}
	return true
}

// stop sends SIGTERM to the process (and its process group, which holds only
// what the program itself forked), waits up to grace, then SIGKILLs. It does
// nothing when the pid no longer runs the recorded command line.
func (p *Process) stop(grace time.Duration) error {
	if !p.running() {
		return nil
	}
	signal := func(sig syscall.Signal) {
		// The process is its own group leader (Setpgid), so -pid is exactly
		// the group that it leads.
		if err := syscall.Kill(-p.PID, sig); err != nil {
			_ = syscall.Kill(p.PID, sig)
		}
	}
	signal(syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !p.running() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	signal(syscall.SIGKILL)
	for range 100 {
		if !p.running() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
}

// refreshArgs records the command line the process shows now. Programs
// started through wrappers (pyenv shims exec a Python interpreter) change it
// once after start; call this when the process is known to be ready.
func (p *Process) refreshArgs() {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
	if err != nil || len(data) == 0 {
		return
	}
	p.Args = strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

// logTail returns the last lines of the process's log, for error messages.
func logTail(file string, lines int) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxBytes = 16 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		_, _ = f.Seek(st.Size()-maxBytes, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// portAllocator hands out free TCP (and UDP) ports on 127.0.0.1. A port is
// free when both a TCP and a UDP listener can bind it, since CoreDNS needs
// both; ports handed out once are never handed out again by the same
// allocator.
type portAllocator struct {
	used map[int]bool
}

func newPortAllocator() *portAllocator { return &portAllocator{used: map[int]bool{}} }

func (a *portAllocator) next() (int, error) {
	for range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, uerr := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = l.Close()
		if uerr != nil {
			continue
		}
		_ = u.Close()
		if a.used[port] {
			continue
		}
		a.used[port] = true
		return port, nil
	}
	return 0, errors.New("no free port found on 127.0.0.1")
}
