// Package v1alpha1 is the API of the Kubernetes hub registry: the
// ClusterSetRecord kind, which holds every member's records and heartbeats in
// the hub, so that members need permissions on it alone.
//
// +kubebuilder:object:generate=true
// +groupName=hub.clusterset.dev
package v1alpha1
