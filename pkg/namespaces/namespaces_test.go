package namespaces

import "testing"

func TestExclusions(t *testing.T) {
	e, err := NewExclusions([]string{" kube-system", "kube-public", "", "kube-system", "kube-node-lease"})
	if err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true, "demo": false, "kube": false, "": false} {
		if got := e.Excluded(ns); got != want {
			t.Errorf("Excluded(%q) = %v, want %v", ns, got, want)
		}
	}
	if got, want := e.String(), "kube-node-lease,kube-public,kube-system"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	var zero Exclusions
	if zero.Excluded("kube-system") {
		t.Error("the zero value excludes kube-system; it must exclude nothing")
	}
	for _, bad := range []string{"Kube-System", "a_b", "x.y", string(make([]byte, 64))} {
		if _, err := NewExclusions([]string{bad}); err == nil {
			t.Errorf("NewExclusions(%q) accepted a name that is not a namespace name", bad)
		}
	}
}
