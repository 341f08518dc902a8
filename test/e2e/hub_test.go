//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/sandbox"
	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// headless is the headless Service and StatefulSet of the D3 test.
const headless = "web"

// TestHubRegistry runs the whole suite on one 2-cluster sandbox whose
// controllers share the hub registry (cls1's API server). The steps build
// on each other; after a failed walkthrough the rest is not attempted.
func TestHubRegistry(t *testing.T) {
	env := startSandbox(t, sandbox.RegistryHub)
	seed(t, env)

	if !t.Run("Walkthrough", func(t *testing.T) { testWalkthrough(t, env) }) {
		t.Fatal("the walkthrough failed: the steps that build on it are not run")
	}
	t.Run("DNS", func(t *testing.T) { testDNS(t, env) })
	t.Run("Scale", func(t *testing.T) { testScale(t, env) })
	t.Run("HeadlessStatefulSet", func(t *testing.T) { testHeadless(t, env) })
	t.Run("NamespaceDeleted", func(t *testing.T) { testNamespaceDeleted(t, env) })
	t.Run("Unexport", func(t *testing.T) {
		testUnexport(t, env, wt.Service, headless)
		// D4: cluster.local is untouched: the exporter's own Service still
		// answers under its cluster.local name.
		waitFor(t, "D4 cls1's CoreDNS still answers nginx-hello.demo.svc.cluster.local", propagation,
			dnsA(env, wt.Exporter, wt.Service+"."+wt.Namespace+".svc.cluster.local", serviceIPs(env, wt.Exporter, wt.Namespace, wt.Service)))
	})
}

// serviceIPs gives the clusterIPs of a Service, for dnsA.
func serviceIPs(env *wt.Env, cluster, namespace, name string) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		svc := &corev1.Service{}
		if err := env.Client(cluster).Get(ctx, clientKey(namespace, name), svc); err != nil {
			return nil, fmt.Errorf("%s: Service %s/%s: %w", cluster, namespace, name, err)
		}
		return svc.Spec.ClusterIPs, nil
	}
}

// testDNS checks D2 and D4 against every cluster's CoreDNS (D1 is part of
// the walkthrough).
func testDNS(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	name := wt.FQDN(wt.Service, wt.Namespace)

	t.Run("D2_SRV_named_port", func(t *testing.T) {
		srv := "_" + wt.PortName + "._tcp." + name
		for _, c := range env.Clusters() {
			waitFor(t, "D2 "+c+"'s CoreDNS: SRV "+srv, propagation, func(ctx context.Context) (bool, string, error) {
				ans, err := env.Query(ctx, c, srv, dns.TypeSRV)
				if err != nil {
					return false, "", err
				}
				want := []string{dns.Fqdn(name) + ":" + strconv.Itoa(wt.Port)}
				return ans.Rcode == dns.RcodeSuccess && slices.Equal(ans.SRV, want),
					fmt.Sprintf("%s: SRV %s → %s %v (want %v)", c, srv, ans.RcodeString(), ans.SRV, want), nil
			})
		}
		// A port name the service does not have has no SRV record.
		for _, c := range env.Clusters() {
			ans, err := env.Query(ctx, c, "_nosuchport._tcp."+name, dns.TypeSRV)
			if err != nil {
				t.Fatal(err)
			}
			if len(ans.SRV) != 0 {
				t.Errorf("D2 %s: SRV _nosuchport._tcp.%s answered %v, want no records", c, name, ans.SRV)
			}
		}
	})

	t.Run("D4_NXDOMAIN_and_cluster_local", func(t *testing.T) {
		// A Service that exists in cls2 but is not exported: it has a
		// cluster.local name and no clusterset.local name.
		if err := env.Create(ctx, wt.Importer, wt.ServiceObject(wt.Namespace, "local-only")); err != nil {
			t.Fatal(err)
		}
		for _, c := range env.Clusters() {
			for _, n := range []string{
				wt.FQDN("not-imported", wt.Namespace),
				wt.FQDN("local-only", wt.Namespace),
				wt.FQDN(wt.Service, "no-such-namespace"),
			} {
				waitFor(t, "D4 "+c+"'s CoreDNS: NXDOMAIN for "+n, propagation, dnsRcode(env, c, n, dns.TypeA, dns.RcodeNameError))
			}
			waitFor(t, "D4 "+c+"'s CoreDNS: kubernetes.default.svc.cluster.local unchanged", propagation,
				dnsA(env, c, "kubernetes.default.svc.cluster.local", serviceIPs(env, c, "default", "kubernetes")))
		}
		waitFor(t, "D4 cls2's CoreDNS: local-only.demo.svc.cluster.local = its clusterIP", propagation,
			dnsA(env, wt.Importer, "local-only."+wt.Namespace+".svc.cluster.local", serviceIPs(env, wt.Importer, wt.Namespace, "local-only")))
		// In the exporter, nginx-hello's cluster.local name is its own
		// Service, not the import's VIP.
		waitFor(t, "D4 cls1's CoreDNS: nginx-hello.demo.svc.cluster.local = the local Service's clusterIP", propagation,
			dnsA(env, wt.Exporter, wt.Service+"."+wt.Namespace+".svc.cluster.local", serviceIPs(env, wt.Exporter, wt.Namespace, wt.Service)))
		// In the importer, where no Service nginx-hello exists, only the
		// clusterset.local name resolves.
		waitFor(t, "D4 cls2's CoreDNS: nginx-hello.demo.svc.cluster.local NXDOMAIN", propagation,
			dnsRcode(env, wt.Importer, wt.Service+"."+wt.Namespace+".svc.cluster.local", dns.TypeA, dns.RcodeNameError))
	})
}

// testScale scales nginx-hello in cls1 3→10→0 (and back to 3) and checks
// that every cluster's imported EndpointSlices follow (I4), while the
// ServiceImport stays with its VIP.
func testScale(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	before, err := env.GetImport(ctx, wt.Importer, wt.Namespace, wt.Service)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{10, 0, wt.Replicas} {
		if err := env.Scale(ctx, wt.Exporter, wt.Namespace, wt.Service, int32(n)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("%d pods of nginx-hello ready in cls1", n), propagation, podsReady(env, wt.Exporter, wt.Service, n))
		// Every endpoint counts, ready or not: the endpoints of deleted
		// pods must go, not linger as not-ready.
		waitFor(t, fmt.Sprintf("every cluster's EndpointSlices to hold exactly the %d pod IPs", n), propagation,
			allOf(importedEverywhere(env, wt.Service, []string{wt.Exporter}, n), endpointCount(env, wt.Service, n)))
		imp, err := env.GetImport(ctx, wt.Importer, wt.Namespace, wt.Service)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(imp.IPs(), before.IPs()) {
			t.Errorf("%d replicas: cls2's ServiceImport ips changed from %v to %v", n, before.IPs(), imp.IPs())
		}
	}
}

// testHeadless exports a headless Service with a 3-replica StatefulSet from
// cls1 and checks I3 (Headless, no ips, hostnames in the slices) and D3
// (A of every ready endpoint; <hostname>.<clusterid>.<svc>.<ns> per pod).
func testHeadless(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	exportHeadless(t, env)
	checkExportConditions(t, env, wt.Exporter, headless)

	pods, err := env.ReadyPods(ctx, wt.Exporter, wt.Namespace, headless)
	if err != nil {
		t.Fatal(err)
	}
	hostnames := map[string]string{} // pod IP → hostname (the pod's name)
	for _, p := range pods {
		hostnames[p.Status.PodIP] = p.Name
	}
	podIPs := wt.PodIPs(pods)
	for _, c := range env.Clusters() {
		imp, err := env.GetImport(ctx, c, wt.Namespace, headless)
		if err != nil {
			t.Fatal(err)
		}
		si := imp.ServiceImport
		if si.Spec.Type != mcsv1beta1.Headless || len(si.Spec.IPs) != 0 {
			t.Errorf("I3 %s: ServiceImport web type %s ips %v, want Headless without ips", c, si.Spec.Type, si.Spec.IPs)
		}
		if !slices.Equal(si.Spec.Ports, wantPorts) {
			t.Errorf("%s: ServiceImport web ports %+v, want %+v", c, si.Spec.Ports, wantPorts)
		}
		if got := imp.Clusters(); !slices.Equal(got, []string{wt.Exporter}) {
			t.Errorf("%s: ServiceImport web status.clusters %v, want [cls1]", c, got)
		}
		checkSlices(t, imp, headless, "", podIPs, hostnames)
	}

	// D3: the headless name answers with every ready endpoint, and each
	// endpoint with a hostname has <hostname>.<clusterid>.<svc>.<ns>.
	for _, c := range env.Clusters() {
		waitFor(t, "D3 "+c+"'s CoreDNS: "+wt.FQDN(headless, wt.Namespace)+" A = every ready pod IP", propagation,
			dnsA(env, c, wt.FQDN(headless, wt.Namespace), constant(podIPs)))
		for ip, host := range hostnames {
			name := host + "." + wt.Exporter + "." + wt.FQDN(headless, wt.Namespace)
			waitFor(t, "D3 "+c+"'s CoreDNS: "+name+" A = "+ip, propagation, dnsA(env, c, name, constant([]string{ip})))
		}
		// A hostname that does not exist, and a real hostname under the
		// wrong cluster ID, are unknown names.
		for _, n := range []string{
			"web-99." + wt.Exporter + "." + wt.FQDN(headless, wt.Namespace),
			"web-0." + wt.Importer + "." + wt.FQDN(headless, wt.Namespace),
		} {
			ans, err := env.QueryA(ctx, c, n)
			if err != nil {
				t.Fatal(err)
			}
			if len(ans.A) != 0 {
				t.Errorf("D3/D4 %s: %s answered %v, want no address", c, n, ans.A)
			}
		}
	}
}

// exportHeadless creates the headless Service web, its 3-replica
// StatefulSet and its ServiceExport in cls1, and waits until the pods are
// ready, the export is Valid and Ready, and every cluster imports them.
func exportHeadless(t *testing.T, env *wt.Env) {
	t.Helper()
	if err := env.Create(t.Context(), wt.Exporter,
		wt.HeadlessServiceObject(wt.Namespace, headless),
		wt.StatefulSet(wt.Namespace, headless, wt.Replicas),
		wt.ServiceExport(wt.Namespace, headless),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 pods of the StatefulSet ready in cls1", propagation, podsReady(env, wt.Exporter, headless, wt.Replicas))
	waitFor(t, "the headless ServiceExport to be Valid and Ready", propagation, exportReady(env, wt.Exporter, headless))
	waitFor(t, "every cluster to import web with the 3 pod IPs", propagation,
		importedEverywhere(env, headless, []string{wt.Exporter}, wt.Replicas))
}

// endpointCount holds when every cluster's imported EndpointSlices of the
// service hold exactly n endpoints, ready or not.
func endpointCount(env *wt.Env, name string, n int) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		for _, c := range env.Clusters() {
			imp, err := env.GetImport(ctx, c, wt.Namespace, name)
			if err != nil {
				return false, "", err
			}
			if eps := imp.Endpoints(); len(eps) != n {
				return false, fmt.Sprintf("%s: %d endpoint(s) (%d ready) in %d EndpointSlice(s), want exactly %d", c, len(eps), len(imp.ReadyAddresses()), len(imp.Slices), n), nil
			}
		}
		return true, fmt.Sprintf("every cluster holds exactly %d endpoint(s) of %s", n, name), nil
	}
}

func constant(v []string) func(context.Context) ([]string, error) {
	return func(context.Context) ([]string, error) { return v, nil }
}

func clientKey(namespace, name string) client.ObjectKey {
	return client.ObjectKey{Namespace: namespace, Name: name}
}
