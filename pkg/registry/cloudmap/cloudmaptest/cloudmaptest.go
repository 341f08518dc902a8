// Package cloudmaptest runs moto's server as the Cloud Map of tests.
//
// moto is installed with `pip install 'moto[server]'` (5.2.1 verified). When
// moto_server is not on PATH, tests are skipped unless the CI environment
// variable is set, in which case they fail.
package cloudmaptest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/clusterset/clusterset/internal/prereq"
)

// Region is the region every test uses.
const Region = "us-east-1"

// StartMoto starts `moto_server` on a free port of 127.0.0.1 and returns the
// URL of a proxy in front of it that refuses what real Cloud Map refuses
// (CheckRequest) and fails the test for each such request; the server is
// killed when the test ends.
func StartMoto(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		prereq.Missing(t, "moto_server not found: install moto: pip install 'moto[server]'")
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		url, err := start(t, bin, port)
		if err == nil {
			if url, err = limitsProxy(t, url); err == nil {
				return url
			}
		}
		lastErr = err
	}
	t.Fatalf("starting moto_server: %v", lastErr)
	return ""
}

// cachedModulesMain runs moto's server as moto_server does, except that
// moto's list of its own modules is read once: moto 5.2.1 lists and stats
// its package directory at every request to find the backend, which is a
// quarter of the time moto takes for a RegisterInstance. Nothing else
// changes; the directory does not change while the server runs.
const cachedModulesMain = `
import sys
import moto.backends as backends
modules = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: iter(modules)
from moto.server import main
main(sys.argv[1:])
`

var (
	pythonOnce sync.Once
	python     string // python3 when it imports moto's server, else ""
)

// motoCommand returns the command that serves moto on port: moto's server
// run by cachedModulesMain when python3 imports it, else bin as it is.
func motoCommand(bin string, port int) *exec.Cmd {
	pythonOnce.Do(func() {
		if p, err := exec.LookPath("python3"); err == nil && exec.Command(p, "-c", "import moto.server").Run() == nil {
			python = p
		}
	})
	args := []string{"-p", strconv.Itoa(port), "-H", "127.0.0.1"}
	if python == "" {
		return exec.Command(bin, args...)
	}
	return exec.Command(python, append([]string{"-c", cachedModulesMain}, args...)...)
}

func start(t testing.TB, bin string, port int) (string, error) {
	cmd := motoCommand(bin, port)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// moto's output is noise unless something fails.
	logf, err := os.CreateTemp(t.TempDir(), "moto-*.log")
	if err != nil {
		return "", err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		// Kill the process group we created (moto may fork a reloader).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		_ = logf.Close()
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			stop()
			return "", fmt.Errorf("moto_server exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("moto_server did not answer on %s", url)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(stop)
	return url, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Config returns an AWS config with dummy credentials for moto; pass the
// endpoint as cloudmap.Options.Endpoint.
func Config() aws.Config {
	return aws.Config{
		Region:      Region,
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
	}
}

// Reset empties moto's state (POST /moto-api/reset).
func Reset(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/moto-api/reset", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
