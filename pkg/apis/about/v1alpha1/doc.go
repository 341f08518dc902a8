// Package v1alpha1 holds the ClusterProperty type of the Kubernetes About API
// (KEP-2149, group about.k8s.io). The upstream module sigs.k8s.io/about-api is
// not served by the Go module proxy that clusterset builds from, so the type is
// declared here with the upstream group, version, kind and schema; the CRD in
// config/crd is generated from it by `make crds`. Replace this package with the
// upstream module as soon as it can be required.
//
// +kubebuilder:object:generate=true
// +groupName=about.k8s.io
package v1alpha1
