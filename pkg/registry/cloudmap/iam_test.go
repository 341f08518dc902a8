package cloudmap

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// policyPath is the least-privilege IAM policy users attach to the
// controller (docs/cloudmap.md#iam-least-privilege).
const policyPath = "../../../config/iam/cloudmap-policy.json"

// readOnlyPolicyPath is the policy of people who read the registry with
// `kubectl clusterset status` and `doctor` (NewReader).
const readOnlyPolicyPath = "../../../config/iam/cloudmap-readonly-policy.json"

// leftOutOfPolicy are Cloud Map calls in the code that the policy leaves out
// on purpose: DeleteNamespace only drops a duplicate namespace, which moto
// allows and real Cloud Map refuses.
var leftOutOfPolicy = []string{"DeleteNamespace"}

// policyActions returns the servicediscovery actions of the controller's
// policy, sorted.
func policyActions(t *testing.T) []string {
	return policyFileActions(t, policyPath)
}

// policyFileActions returns the servicediscovery actions of the policy at
// path, sorted.
func policyFileActions(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Statement []struct {
			Effect string
			Action json.RawMessage
		}
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, st := range doc.Statement {
		if st.Effect != "Allow" {
			t.Fatalf("statement with effect %q; this test reads Allow statements only", st.Effect)
		}
		var actions []string
		if err := json.Unmarshal(st.Action, &actions); err != nil {
			var one string
			if err := json.Unmarshal(st.Action, &one); err != nil {
				t.Fatal(err)
			}
			actions = []string{one}
		}
		for _, a := range actions {
			op, ok := strings.CutPrefix(a, "servicediscovery:")
			if !ok || strings.ContainsAny(op, "*?") {
				t.Fatalf("policy action %q: want servicediscovery:<Operation>, no wildcards", a)
			}
			set[op] = true
		}
	}
	return sortedKeys(set)
}

// codeOperations returns the Cloud Map operations that this package's
// non-test code can call: every method of *servicediscovery.Client (and
// every New<Operation>Paginator) named in its source.
func codeOperations(t *testing.T) []string {
	t.Helper()
	ops := map[string]bool{}
	ct := reflect.TypeOf(&sd.Client{})
	for i := 0; i < ct.NumMethod(); i++ {
		ops[ct.Method(i).Name] = true
	}
	delete(ops, "Options")
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			name := sel.Sel.Name
			if p, ok := strings.CutPrefix(name, "New"); ok && strings.HasSuffix(p, "Paginator") {
				name = strings.TrimSuffix(p, "Paginator")
			}
			if ops[name] {
				used[name] = true
			}
			return true
		})
	}
	// Creating a tagged namespace or service needs TagResource too.
	if used["CreateService"] || used["CreateHttpNamespace"] {
		used["TagResource"] = true
	}
	return sortedKeys(used)
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// TestIAMPolicyMatchesCode: the shipped IAM policy allows exactly the Cloud
// Map operations the code can call (less leftOutOfPolicy), so a new call
// fails here until the policy allows it, and the policy never keeps a
// permission the code no longer needs. moto does not enforce IAM, so a
// dynamic part runs a clusterset's life (publish, restart, poll and sweep,
// heartbeat, liveness, withdraw with service deletion) and checks that every
// call it made is in the policy.
func TestIAMPolicyMatchesCode(t *testing.T) {
	policy := policyActions(t)
	code := codeOperations(t)
	want := slices.DeleteFunc(slices.Clone(code), func(op string) bool { return slices.Contains(leftOutOfPolicy, op) })
	if !slices.Equal(policy, want) {
		t.Fatalf("%s allows %v;\nthe code calls %v (less %v, left out on purpose).\nMake them equal: a missing action fails in production, an extra one is more privilege than needed",
			policyPath, policy, want, leftOutOfPolicy)
	}

	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	var regs []*Registry
	newReg := func(cluster string) *Registry {
		r := newTestRegistry(t, url, "set1", cluster, func(o *Options) {
			o.PollInterval = 100 * time.Millisecond
			o.ForeignSweepPeriod = 300 * time.Millisecond
			o.WaitForOperations = true
		})
		regs = append(regs, r)
		return r
	}
	w := newReg("cls1")
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	rd := newReg("cls2")
	run(t, rd)
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})
	registerAWSInstance(t, url, "demo", "web", "10.9.9.9") // a foreign writer: mixed polling
	eventually(t, 10*time.Second, "the foreign record", func() bool {
		got, _ := rd.Records(rec.Key())
		return len(got) == 2
	})
	if _, err := rd.Liveness(ctx); err != nil {
		t.Fatal(err)
	}
	// A restarted writer reads what it wrote before changing it.
	w2 := newReg("cls1")
	rec.Endpoints[0].Ready = false
	if err := w2.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	gone := sampleRecord("set1", "cls1", "demo", "gone", "10.0.0.2")
	if err := w2.Publish(ctx, &gone); err != nil {
		t.Fatal(err)
	}
	goneID := w2.serviceID(gone.Key())
	if goneID == "" {
		t.Fatal("no service ID after Publish")
	}
	if err := w2.Withdraw(ctx, gone.Key()); err != nil { // deletes the service it created
		t.Fatal(err)
	}
	if _, err := rawClient(url).GetService(ctx, &sd.GetServiceInput{Id: &goneID}); err == nil {
		t.Fatal("Withdraw kept the empty service it created; DeleteService was not exercised")
	}

	called := map[string]bool{}
	for _, r := range regs {
		for op := range r.calls.snapshot() {
			called[op] = true
		}
	}
	allowed := append(slices.Clone(policy), leftOutOfPolicy...)
	for _, op := range sortedKeys(called) {
		if !slices.Contains(allowed, op) {
			t.Errorf("the code called %s, which %s does not allow", op, policyPath)
		}
	}
	for _, op := range policy {
		if op != "TagResource" && !called[op] { // TagResource rides on tagged creation
			t.Errorf("the policy allows %s, but this test's run never called it", op)
		}
	}
	t.Logf("policy %v; calls made %v", policy, sortedKeys(called))
}
