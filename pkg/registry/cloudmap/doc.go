// Package cloudmap is the AWS Cloud Map backend of registry.Registry.
//
// Records are stored in the schema of the AWS Cloud Map MCS controller for
// Kubernetes (namespace = Kubernetes namespace, service = Service, one
// instance per endpoint and port, InstanceId tcp-10_10_86_76-80), plus a
// marker instance per exporting cluster so that records with zero endpoints
// stay visible, and a heartbeat instance per cluster in a system namespace.
// docs/cloudmap.md describes the schema, the call-rate model, quotas and the
// IAM policy.
package cloudmap
