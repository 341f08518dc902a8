//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// propagation bounds every wait for a change to travel through the
// registry to the other clusters and their CoreDNS. Generous: the machine
// is shared, and Cloud Map is polled (every 10 s by default).
const (
	propagation = 90 * time.Second
	pollEvery   = 250 * time.Millisecond
)

// waitFor polls cond until it holds, or fails the test with what was awaited
// and the last state seen. State changes go to the test log.
func waitFor(t *testing.T, what string, timeout time.Duration, cond wt.Condition) {
	t.Helper()
	start := time.Now()
	err := wt.Wait(t.Context(), what, timeout, pollEvery, func(elapsed time.Duration, state string) {
		t.Logf("  [%5.1fs] %s", elapsed.Seconds(), state)
	}, cond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: after %.1fs", what, time.Since(start).Seconds())
}

// allOf is a condition that holds when every one of conds does; its state
// is that of the first that does not.
func allOf(conds ...wt.Condition) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		var states []string
		for _, c := range conds {
			ok, state, err := c(ctx)
			if err != nil || !ok {
				return false, state, err
			}
			states = append(states, state)
		}
		return true, strings.Join(states, "; "), nil
	}
}

// podsReady holds when exactly n pods labelled app=name are Running and
// Ready in the cluster, each with its own IP. The tests count endpoints by
// pods, and an export counts an address once: two pods sharing an IP (a
// kwok fault the sandbox works around, see warmKwokIPPool) would otherwise
// show as an import that never completes.
func podsReady(env *wt.Env, cluster, name string, n int) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		pods, err := env.ReadyPods(ctx, cluster, wt.Namespace, name)
		if err != nil {
			return false, "", err
		}
		state := fmt.Sprintf("%s: %d/%d pods of %s Ready", cluster, len(pods), n, name)
		if shared := sharedPodIPs(pods); len(shared) > 0 {
			return false, state + "; pods sharing an IP: " + strings.Join(shared, ", "), nil
		}
		return len(pods) == n, state, nil
	}
}

// sharedPodIPs lists "IP: pod, pod" for every IP that more than one of the
// pods has, sorted.
func sharedPodIPs(pods map[string]corev1.Pod) []string {
	byIP := map[string][]string{}
	for name, p := range pods {
		byIP[p.Status.PodIP] = append(byIP[p.Status.PodIP], name)
	}
	var out []string
	for ip, names := range byIP {
		if len(names) > 1 {
			slices.Sort(names)
			out = append(out, ip+": "+strings.Join(names, ", "))
		}
	}
	slices.Sort(out)
	return out
}

// exportReady holds when the ServiceExport needs no attention by the CLI's
// rule (walkthrough.ExportReady, conditions.Judge): Ready, not invalid, no
// known conflict.
func exportReady(env *wt.Env, cluster, name string) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		se, err := env.GetExport(ctx, cluster, wt.Namespace, name)
		if err != nil {
			return false, "", err
		}
		ok, state := wt.ExportReady(se)
		return ok, cluster + ": " + state, nil
	}
}

// importedEverywhere holds when every cluster imports the service from
// `from` with exactly wantReady ready endpoints, whose addresses are those
// of the exporter's ready pods.
func importedEverywhere(env *wt.Env, name string, from []string, wantReady int) wt.Condition {
	return importedIn(env, env.Clusters(), name, from, wantReady)
}

// importedIn is importedEverywhere for the given clusters only.
func importedIn(env *wt.Env, clusters []string, name string, from []string, wantReady int) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		var want []string
		for _, c := range from {
			pods, err := env.ReadyPods(ctx, c, wt.Namespace, name)
			if err != nil {
				return false, "", err
			}
			want = append(want, wt.PodIPs(pods)...)
		}
		sort.Strings(want)
		for _, c := range clusters {
			imp, err := env.GetImport(ctx, c, wt.Namespace, name)
			if err != nil {
				return false, "", err
			}
			if ok, state := wt.ImportReady(imp, from, wantReady); !ok {
				return false, state, nil
			}
			if got := imp.ReadyAddresses(); !slices.Equal(got, want) {
				return false, fmt.Sprintf("%s: imported endpoints %v, exporters' ready pod IPs %v", c, got, want), nil
			}
		}
		return true, fmt.Sprintf("%v import %s with %d ready endpoint(s)", clusters, name, wantReady), nil
	}
}

// goneEverywhere holds when no cluster has the ServiceImport, the derived
// Service or an EndpointSlice of the service any more, and every CoreDNS
// answers its clusterset name with NXDOMAIN.
func goneEverywhere(env *wt.Env, name string) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		for _, c := range env.Clusters() {
			imp, err := env.GetImport(ctx, c, wt.Namespace, name)
			if err != nil {
				return false, "", err
			}
			switch {
			case imp.ServiceImport != nil:
				return false, c + ": ServiceImport still there", nil
			case imp.Derived != nil:
				return false, c + ": derived Service " + imp.Derived.Name + " still there", nil
			case len(imp.Slices) > 0:
				return false, fmt.Sprintf("%s: %d EndpointSlice(s) still there", c, len(imp.Slices)), nil
			}
			ans, err := env.QueryA(ctx, c, wt.FQDN(name, wt.Namespace))
			if err != nil {
				return false, "", err
			}
			if ans.Rcode != dns.RcodeNameError {
				return false, fmt.Sprintf("%s's CoreDNS still answers %s: %s %v", c, wt.FQDN(name, wt.Namespace), ans.RcodeString(), ans.A), nil
			}
		}
		return true, name + " is gone from every cluster and every CoreDNS (NXDOMAIN)", nil
	}
}

// dnsA holds when a cluster's CoreDNS answers name with exactly the
// addresses want() returns at that moment (NOERROR).
func dnsA(env *wt.Env, cluster, name string, want func(ctx context.Context) ([]string, error)) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		w, err := want(ctx)
		if err != nil {
			return false, "", err
		}
		w = slices.Clone(w)
		sort.Strings(w)
		ans, err := env.QueryA(ctx, cluster, name)
		if err != nil {
			return false, "", err
		}
		ok := ans.Rcode == dns.RcodeSuccess && len(w) > 0 && slices.Equal(ans.A, w)
		return ok, fmt.Sprintf("%s's CoreDNS: %s A → %s %v (want %v)", cluster, name, ans.RcodeString(), ans.A, w), nil
	}
}

// dnsRcode holds when a cluster's CoreDNS answers name/qtype with rcode.
func dnsRcode(env *wt.Env, cluster, name string, qtype uint16, rcode int) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		ans, err := env.Query(ctx, cluster, name, qtype)
		if err != nil {
			return false, "", err
		}
		return ans.Rcode == rcode, fmt.Sprintf("%s's CoreDNS: %s %s → %s (want %s)", cluster, name, dns.TypeToString[qtype], ans.RcodeString(), dns.RcodeToString[rcode]), nil
	}
}

// importIPs returns a function giving the cluster's current ServiceImport
// ips, for dnsA.
func importIPs(env *wt.Env, cluster, name string) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		imp, err := env.GetImport(ctx, cluster, wt.Namespace, name)
		if err != nil {
			return nil, err
		}
		return imp.IPs(), nil
	}
}

// checkExportConditions checks E1: Valid=True, Ready=True and
// Conflict=False/NoConflicts on a ServiceExport.
func checkExportConditions(t *testing.T, env *wt.Env, cluster, name string) {
	t.Helper()
	se, err := env.GetExport(t.Context(), cluster, wt.Namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	if se == nil {
		t.Fatalf("%s: ServiceExport %s/%s is gone", cluster, wt.Namespace, name)
	}
	for _, want := range []struct {
		t      mcsv1beta1.ServiceExportConditionType
		status metav1.ConditionStatus
		reason string
	}{
		{mcsv1beta1.ServiceExportConditionValid, metav1.ConditionTrue, ""},
		{mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, ""},
		{mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, string(mcsv1beta1.ServiceExportReasonNoConflicts)},
	} {
		c := wt.ExportCondition(se, want.t)
		switch {
		case c == nil:
			t.Errorf("%s: ServiceExport %s has no %s condition (has %+v)", cluster, name, want.t, se.Status.Conditions)
		case c.Status != want.status || (want.reason != "" && c.Reason != want.reason):
			t.Errorf("%s: ServiceExport %s condition %s=%s reason %s (%s), want %s %s", cluster, name, want.t, c.Status, c.Reason, c.Message, want.status, want.reason)
		}
	}
}

// wantPorts are the ports of every walkthrough Service: http 80/TCP.
var wantPorts = []mcsv1beta1.ServicePort{{Name: wt.PortName, Protocol: corev1.ProtocolTCP, Port: wt.Port}}

// checkClusterSetIPImport checks, in one cluster, the import of a
// ClusterSetIP service exported by `from` whose ready pods have podIPs: I2
// (derived Service owning the VIP, spec.ips = its clusterIPs, in the
// cluster's service CIDR), ports, I5 status.clusters and I4 the slices.
func checkClusterSetIPImport(t *testing.T, env *wt.Env, cluster, name string, from []string, podIPs []string) {
	t.Helper()
	imp, err := env.GetImport(t.Context(), cluster, wt.Namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	si := imp.ServiceImport
	if si == nil {
		t.Fatalf("%s: no ServiceImport %s/%s", cluster, wt.Namespace, name)
	}
	if si.Spec.Type != mcsv1beta1.ClusterSetIP {
		t.Errorf("%s: ServiceImport type %q, want ClusterSetIP", cluster, si.Spec.Type)
	}
	if !slices.Equal(si.Spec.Ports, wantPorts) {
		t.Errorf("%s: ServiceImport ports %+v, want %+v", cluster, si.Spec.Ports, wantPorts)
	}
	if got := imp.Clusters(); !slices.Equal(got, from) {
		t.Errorf("%s: ServiceImport status.clusters %v, want %v", cluster, got, from)
	}
	d := imp.Derived
	switch {
	case d == nil:
		t.Errorf("%s: no derived Service for ServiceImport %s", cluster, name)
	default:
		if d.Spec.Type != corev1.ServiceTypeClusterIP || len(d.Spec.Selector) != 0 {
			t.Errorf("%s: derived Service %s has type %s and selector %v, want ClusterIP without selector", cluster, d.Name, d.Spec.Type, d.Spec.Selector)
		}
		if !metav1.IsControlledBy(d, si) {
			t.Errorf("%s: derived Service %s is not controlled by ServiceImport %s (owners %+v)", cluster, d.Name, name, d.OwnerReferences)
		}
		if len(si.Spec.IPs) == 0 || !slices.Equal(si.Spec.IPs, d.Spec.ClusterIPs) {
			t.Errorf("%s: ServiceImport ips %v, derived Service %s clusterIPs %v: want them equal", cluster, si.Spec.IPs, d.Name, d.Spec.ClusterIPs)
		}
	}
	_, cidr, err := net.ParseCIDR(env.Sandbox.Cluster(cluster).ServiceCIDR)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range si.Spec.IPs {
		if !cidr.Contains(net.ParseIP(ip)) {
			t.Errorf("%s: ServiceImport ip %s is not in the cluster's service CIDR %s", cluster, ip, cidr)
		}
	}
	derivedName := ""
	if d != nil {
		derivedName = d.Name
	}
	checkSlices(t, imp, name, derivedName, podIPs, nil)
}

// checkSlices checks I4 on a cluster's imported EndpointSlices: MCS labels,
// managed-by ours, kubernetes.io/service-name = the derived Service (when
// derivedName is set), one source cluster per slice, the port, every
// endpoint ready, and the addresses = podIPs. hostnames, when not nil, maps
// each address to the hostname its endpoint must carry (I3).
func checkSlices(t *testing.T, imp *wt.Import, name, derivedName string, podIPs []string, hostnames map[string]string) {
	t.Helper()
	if len(imp.Slices) == 0 {
		t.Errorf("%s: no EndpointSlice labelled %s=%s", imp.Cluster, mcsv1beta1.LabelServiceName, name)
		return
	}
	for _, s := range imp.Slices {
		want := map[string]string{
			mcsv1beta1.LabelServiceName:   name,
			discoveryv1.LabelManagedBy:    wt.ManagedBy,
			mcsv1beta1.LabelSourceCluster: wt.Exporter,
		}
		if derivedName != "" {
			want[discoveryv1.LabelServiceName] = derivedName
		}
		for k, v := range want {
			if s.Labels[k] != v {
				t.Errorf("%s: EndpointSlice %s label %s=%q, want %q (labels %v)", imp.Cluster, s.Name, k, s.Labels[k], v, s.Labels)
			}
		}
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			t.Errorf("%s: EndpointSlice %s addressType %s, want IPv4", imp.Cluster, s.Name, s.AddressType)
		}
		if len(s.Ports) != 1 || ptr.Deref(s.Ports[0].Name, "") != wt.PortName || ptr.Deref(s.Ports[0].Port, 0) != wt.TargetPort ||
			ptr.Deref(s.Ports[0].Protocol, "") != corev1.ProtocolTCP {
			t.Errorf("%s: EndpointSlice %s ports %s, want [http 8080/TCP]", imp.Cluster, s.Name, slicePorts(s))
		}
	}
	var got []string
	for _, ep := range imp.Endpoints() {
		got = append(got, ep.Address)
		if !ep.Ready {
			t.Errorf("%s: endpoint %s in slice %s is not ready", imp.Cluster, ep.Address, ep.Slice)
		}
		if hostnames != nil && ep.Hostname != hostnames[ep.Address] {
			t.Errorf("%s: endpoint %s hostname %q, want %q", imp.Cluster, ep.Address, ep.Hostname, hostnames[ep.Address])
		}
	}
	if !slices.Equal(got, podIPs) {
		t.Errorf("%s: EndpointSlice addresses %v, want the exporter's pod IPs %v", imp.Cluster, got, podIPs)
	}
}

func slicePorts(s discoveryv1.EndpointSlice) string {
	var out []string
	for _, p := range s.Ports {
		out = append(out, fmt.Sprintf("%s %d/%s", ptr.Deref(p.Name, ""), ptr.Deref(p.Port, 0), ptr.Deref(p.Protocol, "")))
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// seed creates namespace demo in every cluster and the walkthrough's
// Deployment, Service and ServiceExport in cls1.
func seed(t *testing.T, env *wt.Env) {
	t.Helper()
	ctx := t.Context()
	if err := env.CreateNamespace(ctx, wt.Namespace, env.Clusters()...); err != nil {
		t.Fatal(err)
	}
	if err := env.Create(ctx, wt.Exporter, wt.SeedObjects()...); err != nil {
		t.Fatal(err)
	}
}

// testWalkthrough is the seed scenario on a sandbox where seed has run:
// nginx-hello exported from cls1 is imported by every cluster, exporter
// included (I1), as a ClusterSetIP service whose VIP CoreDNS serves (D1).
func testWalkthrough(t *testing.T, env *wt.Env) {
	waitFor(t, "cls2 to import nginx-hello and its CoreDNS to answer with the ServiceImport IP",
		propagation, env.SeedReady(wt.Replicas))
	waitFor(t, "every cluster to import nginx-hello with the 3 pod IPs", propagation,
		importedEverywhere(env, wt.Service, []string{wt.Exporter}, wt.Replicas))

	// E1 on the exporter.
	checkExportConditions(t, env, wt.Exporter, wt.Service)

	pods, err := env.ReadyPods(t.Context(), wt.Exporter, wt.Namespace, wt.Service)
	if err != nil {
		t.Fatal(err)
	}
	podIPs := wt.PodIPs(pods)
	if len(podIPs) != wt.Replicas {
		t.Fatalf("%s: %d ready pods, want %d", wt.Exporter, len(podIPs), wt.Replicas)
	}
	// I1, I2, I4, I5 in the importer and in the exporter, which imports too.
	for _, c := range []string{wt.Importer, wt.Exporter} {
		checkClusterSetIPImport(t, env, c, wt.Service, []string{wt.Exporter}, podIPs)
	}
	if t.Failed() {
		return
	}
	// D1: each cluster's CoreDNS answers with its own ServiceImport's ips.
	for _, c := range env.Clusters() {
		waitFor(t, "D1 "+c+"'s CoreDNS: "+wt.FQDN(wt.Service, wt.Namespace)+" A = "+c+"'s ServiceImport ips", propagation,
			dnsA(env, c, wt.FQDN(wt.Service, wt.Namespace), importIPs(env, c, wt.Service)))
	}
}

// testUnexport deletes the ServiceExports of names in cls1 and checks E5/I5:
// the ServiceExport goes (its finalizer withdraws the record), and every
// cluster loses the ServiceImport, derived Service, EndpointSlices and the
// DNS name (D4: NXDOMAIN).
func testUnexport(t *testing.T, env *wt.Env, names ...string) {
	ctx := t.Context()
	for _, name := range names {
		if err := env.Unexport(ctx, wt.Exporter, wt.Namespace, name); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		waitFor(t, "the ServiceExport "+name+" to be deleted (finalizer released)", propagation, func(ctx context.Context) (bool, string, error) {
			se, err := env.GetExport(ctx, wt.Exporter, wt.Namespace, name)
			if err != nil {
				return false, "", err
			}
			if se != nil {
				return false, fmt.Sprintf("%s: ServiceExport %s still there (finalizers %v)", wt.Exporter, name, se.Finalizers), nil
			}
			return true, "ServiceExport " + name + " deleted", nil
		})
		waitFor(t, "E5/I5/D4 "+name+" to disappear from every cluster and DNS", propagation, goneEverywhere(env, name))
	}
}
