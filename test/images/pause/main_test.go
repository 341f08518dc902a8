package main

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this package's main in a child process (the test
// binary itself).
func TestMain(m *testing.M) {
	if os.Getenv("PAUSE_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestReapCollectsExitedChildren(t *testing.T) {
	// syscall.ForkExec rather than os/exec: nothing in the Go runtime waits
	// for such a child, so it stays a zombie until reap collects it.
	var pids []int
	for i := 0; i < 3; i++ {
		pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 3"}, &syscall.ProcAttr{})
		if err != nil {
			t.Fatalf("cannot start /bin/sh: %v", err)
		}
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		waitForState(t, pid, "Z")
	}
	reaped := map[int]bool{}
	for _, pid := range reap() {
		reaped[pid] = true
	}
	for _, pid := range pids {
		if !reaped[pid] {
			t.Errorf("zombie %d was not reaped (reaped %v)", pid, reaped)
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			t.Errorf("process %d still exists after reap", pid)
		}
	}
	if more := reap(); len(more) != 0 {
		t.Errorf("second reap found %v, want nothing", more)
	}
}

func TestReapLeavesRunningChildren(t *testing.T) {
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "sleep 30"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatalf("cannot start /bin/sh: %v", err)
	}
	defer func() {
		syscall.Kill(pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	}()
	if got := reap(); len(got) != 0 {
		t.Errorf("reap collected %v while the only child still runs", got)
	}
}

func TestExitsZeroOnSIGTERMAndSIGINT(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "PAUSE_RUN_MAIN=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Still running after a moment: pause waits, it does not exit on
		// its own.
		time.Sleep(200 * time.Millisecond)
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("pause exited on its own: %v, stderr: %s", err, stderr.String())
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("pause after %s: %v (want exit status 0), stderr: %s", sig, err, stderr.String())
			}
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("pause did not exit within 5s of %s", sig)
		}
		if !strings.Contains(stderr.String(), "exiting") {
			t.Errorf("stderr after %s = %q, want it to say it exits", sig, stderr.String())
		}
	}
}

// waitForState waits until /proc/PID/stat shows the process in state (R, S,
// Z, ...).
func waitForState(t *testing.T, pid int, state string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		// The state follows the command name, which is in parentheses.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 0 && fields[0] == state {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d never reached state %s", pid, state)
}
