package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion of the hub registry's API.
var GroupVersion = schema.GroupVersion{Group: "hub.clusterset.dev", Version: "v1alpha1"}

// Resource is the plural resource name of ClusterSetRecord.
const Resource = "clustersetrecords"

var (
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &ClusterSetRecord{}, &ClusterSetRecordList{})
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})
	AddToScheme = SchemeBuilder.AddToScheme
)

// RecordType says what a ClusterSetRecord holds.
// +kubebuilder:validation:Enum=Head;Chunk;Heartbeat
type RecordType string

const (
	// Head is the head of a service's record: its spec and first endpoints,
	// and how many chunks the record has.
	Head RecordType = "Head"
	// Chunk holds more endpoints of a record whose head names it.
	Chunk RecordType = "Chunk"
	// Heartbeat is a member's liveness, renewed periodically.
	Heartbeat RecordType = "Heartbeat"
)

// ClusterSetRecord is one object that a member cluster of a clusterset writes
// in its own namespace of the hub: a record's head or chunk, or the member's
// heartbeat. Readers trust the cluster ID only when the object is in the
// namespace of that cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=clusterset
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterID`
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Renewed",type=date,JSONPath=`.spec.renewTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterSetRecord struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ClusterSetRecordSpec `json:"spec"`
}

// ClusterSetRecordSpec is the content of a ClusterSetRecord. Record and
// Endpoints hold the registry's own compact, versioned JSON encoding, opaque
// to the API server, so that controllers of different versions read each
// other's records whatever version of this API they use.
//
// +kubebuilder:validation:XValidation:rule="self.type == 'Heartbeat' ? has(self.renewTime) : has(self.service)",message="a Heartbeat needs renewTime, a Head or Chunk needs service"
type ClusterSetRecordSpec struct {
	// Type is Head, Chunk or Heartbeat.
	Type RecordType `json:"type"`
	// ClusterSetID is the clusterset of the writing cluster.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ClusterSetID string `json:"clusterSetID"`
	// ClusterID is the writing cluster, unique within its clusterset.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ClusterID string `json:"clusterID"`
	// Service is "<namespace>/<name>" of the exported Service (Head, Chunk).
	// +kubebuilder:validation:MaxLength=127
	// +optional
	Service string `json:"service,omitempty"`
	// Record is the encoded head: wire version, digest of the record
	// version, number of chunks and the service's spec (Head).
	// +optional
	Record string `json:"record,omitempty"`
	// Endpoints is one encoded chunk of endpoints (Head: chunk 0; Chunk).
	// +optional
	Endpoints string `json:"endpoints,omitempty"`
	// RenewTime is when the member last renewed its heartbeat (Heartbeat).
	// +optional
	RenewTime *metav1.MicroTime `json:"renewTime,omitempty"`
	// LeaseDurationSeconds is how long the member means a renewal to last,
	// for humans and tools; readers apply their own grace period (Heartbeat).
	// +optional
	LeaseDurationSeconds *int32 `json:"leaseDurationSeconds,omitempty"`
	// HolderIdentity is the member that renews the heartbeat: the UID of
	// its kube-system namespace. Two members given the same cluster ID
	// tell each other apart by it (Heartbeat).
	// +optional
	HolderIdentity string `json:"holderIdentity,omitempty"`
	// Credential identifies the hub token the member last used with
	// success: the first 16 hex digits of its SHA-256, never the token.
	// `kubectl clusterset join` revokes a member's previous tokens once its
	// heartbeat names the new one (Heartbeat).
	// +optional
	Credential string `json:"credential,omitempty"`
}

// ClusterSetRecordList is a list of ClusterSetRecords.
//
// +kubebuilder:object:root=true
type ClusterSetRecordList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterSetRecord `json:"items"`
}
