package hub

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/validate/content"

	"github.com/clusterset/clusterset/pkg/registry"
)

func TestNamespaceName(t *testing.T) {
	long := strings.Repeat("very-long-cluster-id.", 12)
	cases := [][2]string{
		{"demo", "cls1"},
		{"a-b", "c"},
		{"a", "b-c"},
		{"x.y", "cls"},
		{"x-y", "cls"},
		{"Set_With.Odd-Chars", "cls1.eu-west-1.example.com"},
		{long, long},
		{"-", "."},
	}
	seen := map[string][2]string{}
	for _, c := range cases {
		ns := NamespaceName(c[0], c[1])
		if errs := content.IsDNS1123Label(ns); len(errs) > 0 {
			t.Errorf("NamespaceName(%q, %q) = %q: %v", c[0], c[1], ns, errs)
		}
		if NamespaceName(c[0], c[1]) != ns {
			t.Errorf("NamespaceName(%q, %q) is not deterministic", c[0], c[1])
		}
		if prev, ok := seen[ns]; ok {
			t.Errorf("%v and %v share namespace %q", prev, c, ns)
		}
		seen[ns] = c
	}
	if got := NamespaceName("demo", "cls1"); !strings.HasPrefix(got, "clusterset-demo-cls1-") {
		t.Errorf("NamespaceName(demo, cls1) = %q, want a readable prefix", got)
	}
	for _, id := range []string{"demo", long, "Set_With.Odd-Chars", "ends-"} {
		if l := clusterSetLabel(id); len(content.IsLabelValue(l)) > 0 {
			t.Errorf("clusterSetLabel(%q) = %q is not a label value", id, l)
		}
	}
}

// TestEncodeWorstCaseSize bounds a chunk of endpoints whose optional fields
// are all at their longest: still far below the 1.5 MiB object limit.
func TestEncodeWorstCaseSize(t *testing.T) {
	rec := &registry.Record{Spec: registry.ServiceSpec{ExportCreated: time.Now()}}
	for i := range DefaultChunkSize {
		rec.Endpoints = append(rec.Endpoints, registry.Endpoint{
			Address:     fmt.Sprintf("fd00:ffff:ffff:ffff:ffff:ffff:%04x:%04x", i, i),
			AddressType: "IPv6",
			Ports:       []registry.EndpointPort{{Name: strings.Repeat("p", 15), Protocol: "SCTP", Port: int32(i)}},
			Ready:       true, Serving: true, Terminating: true,
			Hostname: strings.Repeat("h", 63),
			NodeName: strings.Repeat("n", 253),
			Zone:     strings.Repeat("z", 63),
		})
	}
	enc, err := encode(rec, DefaultChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	// Stored as a JSON string inside the ConfigMap's JSON: quotes escaped.
	quoted, _ := json.Marshal(string(enc.chunks[0]))
	if len(quoted) > 1<<20 {
		t.Errorf("a worst-case chunk is %d bytes stored, more than 1 MiB", len(quoted))
	}
	t.Logf("worst-case chunk of %d endpoints: %d bytes stored", DefaultChunkSize, len(quoted))
}
