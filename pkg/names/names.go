// Package names holds the names that several parts of clusterset share, so
// that no controller imports another for a string: the labels and finalizer
// on the objects the controllers write, and how generated names are kept
// short.
package names

import (
	"crypto/sha256"
	"encoding/hex"
)

const (
	// ExportFinalizer keeps a ServiceExport until its record is withdrawn
	// from the registry.
	ExportFinalizer = "multicluster.clusterset.dev/export"
	// LabelManagedBy marks the ServiceImports and derived Services the
	// importer maintains, with the value ManagedBy; EndpointSlices carry
	// ManagedBy in discoveryv1.LabelManagedBy instead.
	LabelManagedBy = "multicluster.clusterset.dev/managed-by"
	// ManagedBy is the value of those labels: the exporter never exports
	// an EndpointSlice that carries it.
	ManagedBy = "clusterset-controller.clusterset.dev"
)

// ShortHash returns the first n hex digits (n <= 64) of the SHA-256 of s:
// a stable suffix that keeps a generated name within a DNS length limit.
func ShortHash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}
