package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this package's main in a child process (the test
// binary itself), to check what only a real process has: signal handling.
func TestMain(m *testing.M) {
	if os.Getenv("ECHO_SERVER_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestHandlerAnswersPodName(t *testing.T) {
	logs := &lockedBuffer{}
	srv := httptest.NewServer(handler("web-7d4b9-x2x", slog.New(slog.NewJSONHandler(logs, nil))))
	defer srv.Close()

	for _, path := range []string{"/", "/some/path?q=1"} {
		if got := get(t, srv.URL+path); got != "web-7d4b9-x2x\n" {
			t.Errorf("GET %s = %q, want the pod name and a newline", path, got)
		}
	}
	if got := get(t, srv.URL+"/healthz"); got != "ok\n" {
		t.Errorf("GET /healthz = %q, want %q", got, "ok\n")
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one log line per non-probe request, got %d:\n%s", len(lines), logs.String())
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &entry); err != nil {
		t.Fatalf("log line is not JSON: %q: %v", lines[1], err)
	}
	if entry["msg"] != "request" || entry["path"] != "/some/path" || entry["method"] != "GET" {
		t.Errorf("log entry = %v, want msg=request method=GET path=/some/path", entry)
	}
}

func TestPodNameFallsBackToHostname(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	got, err := podName(func(string) string { return "" })
	if err != nil || got != host {
		t.Errorf("podName without POD_NAME = %q, %v; want the hostname %q", got, err, host)
	}
	got, _ = podName(func(k string) string { return map[string]string{"POD_NAME": "p1"}[k] })
	if got != "p1" {
		t.Errorf("podName with POD_NAME=p1 = %q", got)
	}
}

func TestRunListensAndStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logR, logW := io.Pipe()
	env := map[string]string{"POD_NAME": "echo-0", "LISTEN_ADDRESS": "127.0.0.1:0"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string { return env[k] }, logW)
		logW.Close()
	}()
	lines := bufio.NewScanner(logR)
	addr := listeningAddress(t, lines)
	// Keep reading so that the server's request log never blocks on the pipe.
	go func() {
		for lines.Scan() {
		}
	}()
	if got := get(t, "http://"+addr+"/"); got != "echo-0\n" {
		t.Errorf("GET / = %q", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	getenv := func(string) string { return "" }
	if err := run(context.Background(), []string{"extra"}, getenv, io.Discard); err == nil {
		t.Error("run accepted a positional argument")
	}
	if err := run(context.Background(), []string{"-listen", "not-an-address"}, getenv, io.Discard); err == nil {
		t.Error("run accepted an address it cannot listen on")
	}
}

func TestProcessExitsZeroOnSIGTERM(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "ECHO_SERVER_RUN_MAIN=1", "POD_NAME=echo-1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	addr := listeningAddress(t, lines)
	if got := get(t, "http://"+addr+"/"); got != "echo-1\n" {
		t.Errorf("GET / = %q", got)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var sawStopped bool
	for lines.Scan() {
		sawStopped = sawStopped || strings.Contains(lines.Text(), `"msg":"stopped"`)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("echo-server after SIGTERM: %v (want exit status 0)", err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("echo-server did not exit within 5s of SIGTERM")
	}
	if !sawStopped {
		t.Error(`no "stopped" log line after SIGTERM`)
	}
}

// listeningAddress reads log lines until the "listening" one and returns
// its address.
func listeningAddress(t *testing.T, lines *bufio.Scanner) string {
	t.Helper()
	for lines.Scan() {
		var entry struct{ Msg, Address string }
		if err := json.Unmarshal(lines.Bytes(), &entry); err != nil {
			t.Fatalf("log line is not JSON: %q", lines.Text())
		}
		if entry.Msg == "listening" {
			return entry.Address
		}
	}
	t.Fatal("echo-server never logged that it listens")
	return ""
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(body)
}

// lockedBuffer collects log output written from the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
