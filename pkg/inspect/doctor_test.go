package inspect

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/clusterset/clusterset/pkg/registry"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// healthy is a member that passes every per-member check.
func healthy(ctx, id string) *Cluster {
	return &Cluster{
		Context: ctx, ClusterID: id, ClusterSetID: "set", ControllerNamespace: ControllerNamespace,
		Controller: &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(2))}, Status: appsv1.DeploymentStatus{AvailableReplicas: 2}},
		Lease: &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("pod-a"), LeaseDurationSeconds: ptr.To(int32(15)),
			RenewTime: ptr.To(metav1.NewMicroTime(now.Add(-time.Second)))}},
		Registry:  "hub",
		Corefile:  ".:53 {\n    kubernetes cluster.local clusterset.local {\n        multicluster clusterset.local\n    }\n}\n",
		HubConfig: nil,
	}
}

func healthyHub(clusters ...*Cluster) RegistryHealth {
	h := RegistryHealth{Access: map[string]HubAccess{}}
	for _, cl := range clusters {
		h.Access[cl.Context] = HubAccess{WriteOwn: true}
		h.Heartbeats = append(h.Heartbeats, registry.Heartbeat{ClusterID: cl.ClusterID, RenewTime: now.Add(-5 * time.Second), LeaseDuration: time.Minute})
	}
	return h
}

// onCloudMap turns a healthy hub clusterset into a healthy Cloud Map one.
func onCloudMap(a, b *Cluster, h *RegistryHealth) {
	a.Registry, b.Registry = "cloudmap", "cloudmap"
	h.Backend, h.Access, h.Read = "cloudmap", map[string]HubAccess{}, "this machine's AWS credentials (region eu-west-1)"
}

// verdict finds the verdict and message of one check.
func verdict(checks []Check, name, cluster string) (Verdict, string) {
	for _, c := range checks {
		if c.Name == name && c.Cluster == cluster {
			return c.Verdict, c.Message
		}
	}
	return "", "no such check"
}

// Each case breaks one thing of a healthy clusterset of two; that check,
// and only that one, must turn to the verdict, with a message that names the
// problem and a fix.
func TestDoctorJudgesEachProblem(t *testing.T) {
	for _, tc := range []struct {
		name           string
		breakIt        func(a, b *Cluster, h *RegistryHealth)
		check, cluster string
		want           Verdict
		msg            string
	}{
		{"no controller replica available", func(a, _ *Cluster, _ *RegistryHealth) { a.Controller.Status.AvailableReplicas = 0 }, "controller", "a", Fail, "0/2 replicas available"},
		{"no controller installed", func(a, _ *Cluster, _ *RegistryHealth) { a.Controller = nil }, "controller", "a", Fail, "no clusterset-controller Deployment; looked for clusterset-system/clusterset-controller"},
		{"a second controller", func(a, _ *Cluster, _ *RegistryHealth) {
			a.Controller.Namespace, a.Controller.Name, a.OtherControllers = "clusterset-system", "clusterset-controller", []string{"platform/clusterset-controller"}
		}, "controller", "a", Fail, "2 clusterset-controller Deployments: clusterset-system/clusterset-controller and platform/clusterset-controller"},
		{"no leader", func(a, _ *Cluster, _ *RegistryHealth) { a.Lease.Spec.HolderIdentity = nil }, "controller", "a", Fail, "no leader"},
		{"leader stopped renewing", func(a, _ *Cluster, _ *RegistryHealth) {
			a.Lease.Spec.RenewTime = ptr.To(metav1.NewMicroTime(now.Add(-time.Minute)))
		}, "controller", "a", Fail, "last renewed its Lease 60s ago"},
		{"clock ahead", func(a, _ *Cluster, _ *RegistryHealth) { a.ClockOffset = 5 * time.Minute }, "clock", "a", Fail, "5m0s off"},
		{"clock behind", func(a, _ *Cluster, _ *RegistryHealth) { a.ClockOffset = -11 * time.Second }, "clock", "a", Fail, "-11s off"},
		{"cluster ID not a DNS label", func(a, _ *Cluster, _ *RegistryHealth) { a.ClusterID = "Not_A_Label" }, "identity", "Not_A_Label", Fail, "not a DNS label"},
		{"no identity", func(a, _ *Cluster, _ *RegistryHealth) {
			a.ClusterID, a.IdentityProblem = "", "ClusterProperty cluster.clusterset.k8s.io does not exist"
		}, "identity", "[a]", Fail, "does not exist"},
		{"different clustersets", func(_, b *Cluster, _ *RegistryHealth) { b.ClusterSetID = "other" }, "identity", "", Fail, "different clustersets: other (b); set (a)"},
		{"CoreDNS plugin commented out", func(a, _ *Cluster, _ *RegistryHealth) {
			a.Corefile = strings.Replace(a.Corefile, "multicluster", "# multicluster", 1)
		}, "coredns", "a", Fail, "no multicluster plugin"},
		{"CoreDNS may not watch ServiceImports", func(a, _ *Cluster, _ *RegistryHealth) {
			a.CoreDNSDenied = []string{"watch serviceimports.multicluster.x-k8s.io"}
		}, "coredns", "a", Fail, "may not watch serviceimports"},
		{"member may write another member's records", func(_, _ *Cluster, h *RegistryHealth) {
			h.Access["a"] = HubAccess{WriteOwn: true, WriteOther: true}
		}, "registry", "a", Fail, "more than write its own records"},
		{"member may read Secrets in the hub", func(_, _ *Cluster, h *RegistryHealth) {
			h.Access["a"] = HubAccess{WriteOwn: true, ReadSecrets: true}
		}, "registry", "a", Fail, "more than write its own records"},
		{"member may not write its records", func(_, _ *Cluster, h *RegistryHealth) { h.Access["a"] = HubAccess{} }, "registry", "a", Fail, "may not write its own records"},
		{"hub refuses the credentials", func(_, _ *Cluster, h *RegistryHealth) {
			h.Access["a"] = HubAccess{Problem: "Unauthorized"}
		}, "registry", "a", Fail, "Unauthorized"},
		{"hub unreachable from here", func(_, _ *Cluster, h *RegistryHealth) {
			h.Access["a"] = HubAccess{Problem: "dial tcp: network is unreachable", Unreachable: true}
		}, "registry", "a", Warn, "cannot be reached from this machine"},
		{"Cloud Map readable", func(a, b *Cluster, h *RegistryHealth) { onCloudMap(a, b, h) }, "registry", "a", OK, "Cloud Map read with this machine's AWS credentials (region eu-west-1)"},
		{"Cloud Map unreachable from here", func(a, b *Cluster, h *RegistryHealth) {
			onCloudMap(a, b, h)
			h.Heartbeats, h.HeartbeatProblem, h.HeartbeatUnreachable = nil, "dial tcp: i/o timeout", true
		}, "registry", "a", Warn, "Cloud Map cannot be reached from this machine"},
		{"Cloud Map refuses this machine's credentials", func(a, b *Cluster, h *RegistryHealth) {
			onCloudMap(a, b, h)
			h.Heartbeats, h.HeartbeatProblem = nil, "AccessDeniedException"
		}, "heartbeat", "", Warn, "not read: AccessDeniedException"},
		{"Cloud Map member silent", func(a, b *Cluster, h *RegistryHealth) {
			onCloudMap(a, b, h)
			h.Heartbeats[0].RenewTime = now.Add(-2 * time.Minute)
		}, "heartbeat", "a", Fail, "silent: last heartbeat 2m ago"},
		{"heartbeat missing", func(_, _ *Cluster, h *RegistryHealth) { h.Heartbeats = h.Heartbeats[1:] }, "heartbeat", "a", Fail, "no heartbeat"},
		{"heartbeat older than its lease", func(_, _ *Cluster, h *RegistryHealth) {
			h.Heartbeats[0].RenewTime = now.Add(-61 * time.Second)
		}, "heartbeat", "a", Fail, "silent: last heartbeat 61s ago (lease 1m0s)"},
		{"heartbeat without lease uses the default", func(_, _ *Cluster, h *RegistryHealth) {
			h.Heartbeats[0].LeaseDuration, h.Heartbeats[0].RenewTime = 0, now.Add(-30*time.Second)
		}, "heartbeat", "a", OK, "fresh (lease 1m0s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := healthy("a", "a"), healthy("b", "b")
			h := healthyHub(a, b)
			before := Doctor([]*Cluster{a, b}, h, now)
			if Failed(before) {
				t.Fatalf("the healthy clusterset fails: %+v", before)
			}
			tc.breakIt(a, b, &h)
			after := Doctor([]*Cluster{a, b}, h, now)
			v, msg := verdict(after, tc.check, tc.cluster)
			if v != tc.want || !strings.Contains(msg, tc.msg) {
				t.Errorf("%s %s = %s %q, want %s containing %q", tc.cluster, tc.check, v, msg, tc.want, tc.msg)
			}
			for _, c := range after {
				if c.Verdict != OK && c.Fix == "" {
					t.Errorf("%s %s is %s without a fix", c.Cluster, c.Name, c.Verdict)
				}
			}
			if Failed(after) != (tc.want == Fail) {
				t.Errorf("Failed = %v, want %v", Failed(after), tc.want == Fail)
			}
		})
	}
}

// The plugin must serve clusterset.local on a line of its own that is not
// a comment; a mention elsewhere does not count.
func TestCorefileCheck(t *testing.T) {
	for _, tc := range []struct {
		name, corefile string
		want           Verdict
	}{
		{"shipped", healthy("a", "a").Corefile, OK},
		{"with more zones", "kubernetes cluster.local clusterset.local {\n  multicluster example.org clusterset.local\n}\n", OK},
		{"with a block", "  multicluster clusterset.local {\n  }\n", OK},
		{"trailing dot", "  multicluster clusterset.local.\n", OK},
		{"zone only in a comment", "  multicluster cluster.local # TODO clusterset.local\n", Fail},
		{"commented out", "  # multicluster clusterset.local\n", Fail},
		{"zone on a later line", "  multicluster example.org\n}\nclusterset.local {\n  forward . 1.1.1.1\n}\n", Fail},
		{"another zone that starts alike", "  multicluster clusterset.localdomain\n", Fail},
		{"no plugin", ".:53 {\n  kubernetes cluster.local\n}\n", Fail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := healthy("a", "a")
			a.Corefile = tc.corefile
			if v, msg := verdict(Doctor([]*Cluster{a}, healthyHub(a), now), "coredns", "a"); v != tc.want {
				t.Errorf("coredns = %s (%s), want %s for\n%s", v, msg, tc.want, tc.corefile)
			}
		})
	}
}

// A read that was refused leaves its check unjudged (WARN, not an install
// or patch advice).
func TestDoctorUncheckedIsAWarning(t *testing.T) {
	a := healthy("a", "a")
	a.Controller, a.Lease, a.Corefile = nil, nil, ""
	a.unchecked("controller", `deployments.apps "clusterset-controller" is forbidden`)
	a.unchecked("coredns", `configmaps "coredns" is forbidden`)
	checks := Doctor([]*Cluster{a}, healthyHub(a), now)
	for _, name := range []string{"controller", "coredns"} {
		if v, msg := verdict(checks, name, "a"); v != Warn || !strings.Contains(msg, "forbidden") {
			t.Errorf("%s = %s %q, want WARN saying forbidden", name, v, msg)
		}
	}
	if Failed(checks) {
		t.Errorf("doctor fails on what it could not read: %+v", checks)
	}
}

// Only not reaching the hub at all is "unreachable"; a TLS failure or an
// answer says something about the hub or the credentials.
func TestUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no route", &url.Error{Op: "Get", URL: "https://172.16.1.10", Err: &net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}}, true},
		{"refused", &url.Error{Op: "Get", URL: "https://127.0.0.1:1", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, true},
		{"no such host", &url.Error{Op: "Get", URL: "https://hub", Err: &net.DNSError{Err: "no such host", Name: "hub"}}, true},
		{"timeout", fmt.Errorf("wrapped: %w", context.DeadlineExceeded), true},
		{"unknown CA", &url.Error{Op: "Get", URL: "https://hub", Err: x509.UnknownAuthorityError{}}, false},
		{"wrong host in certificate", &url.Error{Op: "Get", URL: "https://hub", Err: x509.HostnameError{Host: "hub", Certificate: &x509.Certificate{}}}, false},
		{"unauthorized", apierrors.NewUnauthorized("token expired"), false},
		{"connection reset while reading", &url.Error{Op: "Get", URL: "https://hub", Err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}, false},
	} {
		if got := unreachable(tc.err); got != tc.want {
			t.Errorf("%s: unreachable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
