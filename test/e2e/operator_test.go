//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/clusterset/clusterset/pkg/cli"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// testOperatorCommands runs doctor, list and status SERVICE against a real
// installation (controller and CoreDNS as pods, installed from config/)
// after the walkthrough: every per-cluster check passes, and the
// walkthrough's service shows with all its endpoints in every cluster.
// test/integration's TestCLI holds the golden output and the broken cases.
func testOperatorCommands(t *testing.T, env *wt.Env) {
	run := func(args ...string) (string, error) {
		cmd := cli.NewRootCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append(args, "--kubeconfig", env.Sandbox.Kubeconfig, "--contexts", strings.Join(env.Clusters(), ",")))
		err := cmd.ExecuteContext(t.Context())
		return out.String(), err
	}

	out, err := run("doctor")
	if err != nil {
		t.Errorf("doctor failed on a healthy installation: %v\n%s", err, out)
	}
	for _, c := range env.Clusters() {
		// The hub's address in the members' Secret is cls1's node
		// address, which this machine has no route to; doctor reaches the
		// same API server through the kubeconfig's cls1 (same CA), with
		// each member's own credentials.
		for _, check := range []string{"apis", "identity", "controller", "coredns", "registry", "clock", "heartbeat"} {
			if !regexp.MustCompile(`(?m)^OK\s+` + c + `\s+` + check + `\s`).MatchString(out) {
				t.Errorf("doctor: %s %s is not OK:\n%s", c, check, out)
			}
		}
	}
	if strings.Contains(out, "WARN") {
		t.Errorf("doctor warns on a healthy installation:\n%s", out)
	}
	t.Logf("doctor:\n%s", out)

	out, err = run("list", "-n", wt.Namespace)
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	all := fmt.Sprintf("%d/%d", wt.Replicas, wt.Replicas)
	row := regexp.MustCompile(`(?m)^` + wt.Namespace + `\s+` + wt.Service + `\s+ClusterSetIP\s+cls1\s+cls1 ` + all + `, cls2 ` + all + `\s+<none>$`)
	if !row.MatchString(out) {
		t.Errorf("list: no row for %s exported by cls1 and imported with %s endpoints in cls1 and cls2:\n%s", wt.Service, all, out)
	}

	out, err = run("status", wt.Service, "-n", wt.Namespace)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if n := strings.Count(out, fmt.Sprintf("Endpoints from cls1: %d ready of %d", wt.Replicas, wt.Replicas)); n != len(env.Clusters()) {
		t.Errorf("status: %d clusters show all %d endpoints from cls1, want %d:\n%s", n, wt.Replicas, len(env.Clusters()), out)
	}
}
