package cloudmaptest

import (
	"strings"
	"testing"
)

// TestCheckRequest: each documented constraint accepts its limit and
// refuses one character more.
func TestCheckRequest(t *testing.T) {
	label := strings.Repeat("a", 63)
	for _, tc := range []struct {
		op, body string
		ok       bool
	}{
		{"CreateService", `{"Name":"` + label + `"}`, true},
		{"CreateService", `{"Name":"` + label + "a" + `"}`, false},
		{"CreateService", `{"Name":"` + label + "." + label + `"}`, true}, // 127
		{"CreateService", `{"Name":"` + label + "." + label + "a" + `"}`, false},
		{"CreateService", `{"Name":"-web"}`, false},
		{"CreateHttpNamespace", `{"Name":"` + strings.Repeat("n", 1024) + `"}`, true},
		{"CreateHttpNamespace", `{"Name":"` + strings.Repeat("n", 1025) + `"}`, false},
		{"CreateHttpNamespace", `{"Name":"demo","CreatorRequestId":"` + strings.Repeat("r", 65) + `"}`, false},
		{"RegisterInstance", `{"InstanceId":"` + strings.Repeat("i", 64) + `","Attributes":{"K":"` + strings.Repeat("v", 1024) + `"}}`, true},
		{"RegisterInstance", `{"InstanceId":"` + strings.Repeat("i", 65) + `"}`, false},
		{"RegisterInstance", `{"InstanceId":"a b"}`, false},
		{"RegisterInstance", `{"InstanceId":"i","Attributes":{"K":"` + strings.Repeat("v", 1025) + `"}}`, false},
		{"RegisterInstance", `{"InstanceId":"i","Attributes":{"K":"line\nbreak"}}`, false},
		{"RegisterInstance", `{"InstanceId":"i","Attributes":{"K":"caf\u00e9"}}`, false},
		{"RegisterInstance", `{"InstanceId":"i","Attributes":{"` + strings.Repeat("k", 256) + `":"v"}}`, false},
		{"DiscoverInstances", `{"NamespaceName":"` + strings.Repeat("n", 2000) + `"}`, true}, // not checked
	} {
		if err := CheckRequest(tc.op, []byte(tc.body)); (err == nil) != tc.ok {
			t.Errorf("%s %.80s: got %v, want ok=%v", tc.op, tc.body, err, tc.ok)
		}
	}
	many := map[string]string{}
	for i := range MaxAttributes + 1 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	if CheckInstance("i", many) == nil {
		t.Error("31 attributes accepted")
	}
}
