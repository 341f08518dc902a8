package sandbox

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Timeouts of the readiness waits. They are generous because the machine may
// be busy compiling; a warm two-cluster sandbox needs a fraction of them.
const (
	etcdTimeout       = 60 * time.Second
	apiServerTimeout  = 120 * time.Second
	componentsTimeout = 120 * time.Second
	dnsTimeout        = 60 * time.Second
	controllerTimeout = 120 * time.Second
)

// bin is the path of a component binary.
func (env *upEnv) bin(name string) string { return filepath.Join(env.opts.BinDir, name) }

// launch starts a process, records it in state.json and logs it.
func (s *Sandbox) launch(env *upEnv, name string, extraEnv []string, args ...string) (*Process, error) {
	logFile := filepath.Join(s.Dir, "logs", fmt.Sprintf("%s.log", flatName(name)))
	proc, err := startProcess(name, logFile, extraEnv, args...)
	if err != nil {
		return nil, err
	}
	if err := s.record(proc); err != nil {
		return nil, err
	}
	return proc, nil
}

func flatName(name string) string {
	b := []byte(name)
	for i := range b {
		if b[i] == '/' {
			b[i] = '-'
		}
	}
	return string(b)
}

// waitFor polls check until it succeeds, the process dies or the timeout
// passes; errors carry the end of the process's log.
func waitFor(ctx context.Context, proc *Process, what string, timeout time.Duration, check func(context.Context) bool) error {
	var died bool
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if check(ctx) {
			return true, nil
		}
		if proc != nil && !proc.running() {
			died = true
			return false, fmt.Errorf("exited")
		}
		return false, nil
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := fmt.Sprintf("%s: not ready after %s", what, timeout)
	if died {
		msg = fmt.Sprintf("%s: process exited", what)
	}
	if proc != nil {
		msg += fmt.Sprintf("; last lines of %s:\n%s", proc.Log, logTail(proc.Log, 25))
	}
	return fmt.Errorf("%s", msg)
}

var insecureHTTP = &http.Client{
	Timeout: 2 * time.Second,
	Transport: &http.Transport{
		// Only ever used against 127.0.0.1 health endpoints of components
		// with self-signed serving certificates.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		Proxy:           nil,
	},
}

func httpOK(ctx context.Context, url string) bool {
	return httpStatus(ctx, url) == http.StatusOK
}

// httpStatus is the status code of a GET, 0 when there is no answer.
func httpStatus(ctx context.Context, url string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := insecureHTTP.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// corednsIdentity creates CoreDNS's ServiceAccount with exactly the RBAC that
// config/coredns ships, and a kubeconfig with a token for it.
func (s *Sandbox) corednsIdentity(ctx context.Context, env *upEnv, cl *clients, c *Cluster) (string, error) {
	dir := filepath.Join(env.opts.RepoDir, "config", "coredns")
	files, err := manifestFiles(dir)
	if err != nil {
		return "", err
	}
	objs, err := readObjects(files...)
	if err != nil {
		return "", err
	}
	if err := cl.apply(ctx, "kube-system", objs...); err != nil {
		return "", fmt.Errorf("CoreDNS RBAC from %s: %w", dir, err)
	}
	if err := cl.ensureServiceAccount(ctx, "kube-system", "coredns"); err != nil {
		return "", err
	}
	token, err := cl.token(ctx, "kube-system", "coredns")
	if err != nil {
		return "", err
	}
	file := filepath.Join(c.Dir, "coredns.kubeconfig")
	return file, writeKubeconfig(file, kubeconfigEntry{name: c.Name, server: c.Server, caPEM: env.ca.certPEM,
		creds: credentials{token: token}, user: "system:serviceaccount:kube-system:coredns"})
}

// firstIP is the first usable address of a CIDR: the ClusterIP of the
// kubernetes Service.
func firstIP(cidr string) string {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return "127.0.0.1"
	}
	ip = ip.To4()
	ip[3]++
	return ip.String()
}

// nodeIP is the kwok node's address: data only, like pod IPs.
func nodeIP(i int) string { return fmt.Sprintf("172.16.%d.10", i) }
