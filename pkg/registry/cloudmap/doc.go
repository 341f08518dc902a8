// Package cloudmap is the AWS Cloud Map backend of registry.Registry.
//
// Records are stored in the schema of the AWS Cloud Map MCS controller for
// Kubernetes (namespace = Kubernetes namespace, service = Service, one
// instance per endpoint and port, InstanceId tcp-10_10_86_76-80), plus a
// marker instance per exporting cluster so that records with zero endpoints
// stay visible, and a heartbeat instance per cluster in a system namespace.
// There, a change beacon per cluster and namespace, re-registered after each
// write, lets an idle poll cost one DiscoverInstancesRevision; writes by
// others (the AWS controller) are found by a slower sweep of every service.
// docs/cloudmap.md describes the schema, the call-rate model, quotas and the
// IAM policy.
package cloudmap
