package hub

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/validate/content"

	"github.com/clusterset/clusterset/pkg/names"
	"github.com/clusterset/clusterset/pkg/registry"
)

// Labels on every ClusterSetRecord that the hub backend writes, and
// annotations on the member objects of EnsureMember. Labels select (a
// clusterset's objects, one record's chunks, heartbeats); the exact IDs, which
// may be longer than a label value allows, are in the records' spec and in
// the member objects' annotations.
const (
	prefix = "registry.clusterset.io/"

	// LabelClusterSet holds the clusterset ID when it is a valid label value,
	// else "h-" and a hash of it. Readers watch with a selector on it.
	LabelClusterSet = prefix + "clusterset"
	// LabelKind is one of KindRecord, KindChunk, KindHeartbeat or KindMember.
	LabelKind = prefix + "kind"
	// LabelRecord is a hash of the service's namespace and name, shared by a
	// record's head and chunks.
	LabelRecord = prefix + "record"
	// LabelManagedBy marks everything the backend writes.
	LabelManagedBy = "app.kubernetes.io/managed-by"

	AnnotationClusterSetID = prefix + "clusterset-id"
	AnnotationClusterID    = prefix + "cluster-id"

	KindRecord    = "record"
	KindChunk     = "chunk"
	KindHeartbeat = "heartbeat"
	KindMember    = "member"

	managedBy = "clusterset"

	// HeartbeatName is the name of each member's heartbeat ClusterSetRecord
	// in its namespace. Record names always hold a dot, so never this one.
	HeartbeatName = "clusterset-heartbeat"
)

// clusterSetLabel is the value of LabelClusterSet for a clusterset ID.
func clusterSetLabel(setID string) string {
	if setID != "" && len(content.IsLabelValue(setID)) == 0 {
		return setID
	}
	return "h-" + names.ShortHash(setID, 32)
}

// NamespaceName is the hub namespace that holds the records and the heartbeat of
// clusterID in clusterSetID. It is a DNS-1123 label: "clusterset-", a readable
// part of both IDs, and a hash of the pair, so that IDs which read alike
// ("a-b"/"c" and "a"/"b-c", "x.y" and "x-y") or long ones never share a
// namespace. Readers recompute it to check that a record's claimed cluster ID
// is the one of the namespace it is in, since that namespace is the only one
// whose writes RBAC restricts to that cluster.
func NamespaceName(clusterSetID, clusterID string) string {
	h := names.ShortHash(clusterSetID+"\x00"+clusterID, 10)
	readable := sanitize(clusterSetID) + "-" + sanitize(clusterID)
	const fixed = len("clusterset-") + 1 + 10
	if max := content.DNS1123LabelMaxLength - fixed; len(readable) > max {
		readable = strings.TrimRight(readable[:max], "-")
	}
	return "clusterset-" + readable + "-" + h
}

// sanitize keeps lowercase letters and digits of s and turns anything else
// into single dashes.
func sanitize(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimRight(b.String(), "-")
}

// headName is the name of a record's head ClusterSetRecord: "<namespace>.<name>", a
// DNS-1123 subdomain since both parts are DNS labels.
func headName(key registry.ServiceKey) string { return key.Namespace + "." + key.Name }

// chunkName is the name of chunk index (≥1) of the record version digest.
func chunkName(key registry.ServiceKey, digest string, index int) string {
	return fmt.Sprintf("%s.%s.%d", headName(key), digest, index)
}

func recordLabel(key registry.ServiceKey) string {
	return names.ShortHash(key.Namespace+"/"+key.Name, 32)
}

// validateIDs checks what the hub needs of the IDs: non-empty, and a service
// key whose parts are DNS labels (as every Kubernetes namespace and Service
// name is).
func validateKey(key registry.ServiceKey) error {
	for _, s := range []string{key.Namespace, key.Name} {
		if errs := content.IsDNS1123Label(s); len(errs) > 0 {
			return fmt.Errorf("invalid service %s: %q: %s", key, s, strings.Join(errs, "; "))
		}
	}
	return nil
}
