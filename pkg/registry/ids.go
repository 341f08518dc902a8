package registry

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/validate/content"
)

// The longest IDs clusterset accepts. Every name derived from them fits its
// own limit, hashed where needed (docs/semantics.md, "Name limits").
const (
	// MaxClusterIDLength is the longest cluster ID: a DNS-1123 label.
	MaxClusterIDLength = content.DNS1123LabelMaxLength
	// MaxClusterSetIDLength is the longest clusterset ID: a DNS-1123
	// subdomain.
	MaxClusterSetIDLength = content.DNS1123SubdomainMaxLength
)

// ErrUnimportableCluster is wrapped by the error of ImportableClusterID.
var ErrUnimportableCluster = errors.New("cluster ID cannot be imported")

// ValidateClusterID reports why id cannot be this cluster's ID, or nil. The
// ID must be a DNS-1123 label (at most 63 lowercase letters, digits and '-',
// starting and ending with a letter or digit): KEP-2149 requires it of
// ClusterProperty cluster.clusterset.k8s.io, since it is a label of per-
// endpoint DNS names (<hostname>.<clusterid>.<svc>.<ns>.svc.clusterset.local)
// and the value of the EndpointSlice label multicluster.kubernetes.io/source-
// cluster in every importing cluster.
func ValidateClusterID(id string) error {
	if id == "" {
		return errors.New("cluster ID is empty")
	}
	if errs := content.IsDNS1123Label(id); len(errs) > 0 {
		return fmt.Errorf("cluster ID %q is not a DNS-1123 label (KEP-2149): %s", id, strings.Join(errs, "; "))
	}
	return nil
}

// ValidateClusterSetID reports why id cannot be a clusterset ID, or nil.
// KEP-2149 sets no format for ClusterProperty clusterset.k8s.io; clusterset
// requires a DNS-1123 subdomain (at most 253 characters), which both
// registries store as it is (the hub's ClusterSetRecord allows 253
// characters, a Cloud Map attribute value 1,024) and hash wherever a shorter
// name is needed (hub namespace and label, Cloud Map instance IDs).
func ValidateClusterSetID(id string) error {
	if id == "" {
		return errors.New("clusterset ID is empty")
	}
	if errs := content.IsDNS1123Subdomain(id); len(errs) > 0 {
		return fmt.Errorf("clusterset ID %q is not a DNS-1123 subdomain: %s", id, strings.Join(errs, "; "))
	}
	return nil
}

// ImportableClusterID reports why the endpoints of a record that names
// cluster id cannot be imported, or nil; the error wraps
// ErrUnimportableCluster. The importer writes id as the value of the
// EndpointSlice label multicluster.kubernetes.io/source-cluster (KEP-1645),
// so id must be a label value: at most 63 characters, letters, digits, '-',
// '_' and '.', starting and ending with a letter or digit (Kubernetes API,
// "Labels and Selectors"). Every ID ValidateClusterID accepts is one; the
// looser rule keeps importing records of other writers (the AWS Cloud Map
// MCS controller) whose IDs are label values but not DNS labels. Readers
// leave out the records of other clusters, so that one such record never
// fails the import of a whole service.
func ImportableClusterID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: it is empty", ErrUnimportableCluster)
	}
	if errs := content.IsLabelValue(id); len(errs) > 0 {
		return fmt.Errorf("%w: %q is not a label value (multicluster.kubernetes.io/source-cluster): %s", ErrUnimportableCluster, id, strings.Join(errs, "; "))
	}
	return nil
}
