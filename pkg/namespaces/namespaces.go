// Package namespaces decides which Kubernetes namespaces take part in the
// clusterset. KEP-1645 lets an implementation limit where ServiceExports are
// honoured and where ServiceImports are created ("namespace sameness" is a
// property of the namespaces that take part); clusterset excludes
// Kubernetes' own namespaces by default.
package namespaces

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultExcluded are the namespaces excluded unless configured otherwise:
// those Kubernetes itself owns. Exporting from them would publish a
// cluster's internals (kube-dns, its API server's Service) to every member;
// importing into them would let any member place Services and EndpointSlices
// beside the control plane's.
var DefaultExcluded = []string{"kube-system", "kube-public", "kube-node-lease"}

// Exclusions is a set of namespace names that clusterset neither exports
// from nor imports into. The zero value excludes nothing.
type Exclusions struct {
	names []string // sorted, unique
}

// NewExclusions returns the set of the given namespace names. Each must be
// a valid namespace name (a DNS-1123 label); the error names the first that
// is not. Duplicates and surrounding spaces are ignored.
func NewExclusions(names []string) (Exclusions, error) {
	var out []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			return Exclusions{}, fmt.Errorf("excluded namespace %q is not a namespace name: %s", n, strings.Join(errs, "; "))
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return Exclusions{names: slices.Compact(out)}, nil
}

// Excluded reports whether namespace ns is excluded.
func (e Exclusions) Excluded(ns string) bool {
	_, found := slices.BinarySearch(e.names, ns)
	return found
}

// String is the comma-separated list, as the flag takes it.
func (e Exclusions) String() string { return strings.Join(e.names, ",") }
