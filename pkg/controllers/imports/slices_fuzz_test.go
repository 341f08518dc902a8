package imports

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/merge"
	"github.com/clusterset/clusterset/pkg/merge/mergetest"
	"github.com/clusterset/clusterset/pkg/registry"
)

// FuzzDesiredSlices checks, for generated record sets (port clashes of every
// shape, ClusterSetIP and headless, IPv4 and IPv6), the invariant that keeps
// traffic off endpoints that do not serve it (KEP-1645 "Service Port"): a
// slice from cluster C carries port P only when C's own record has a port
// equal to the import's port P in name, protocol and number. It also checks
// that nothing routable is lost: every endpoint port of an alive cluster
// that matches a port it serves is in one of its slices, under that port,
// with the endpoint's number and conditions.
func FuzzDesiredSlices(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 2, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 2, 3, 1, 0})
	f.Add([]byte("\x06\x05\x04\x03\x02\x01portclashesbetweenclustersonnamesnumbersandprotocols0123456789"))
	f.Add([]byte{6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 1, 0, 0, 0, 2, 2, 1, 1, 0, 4, 0, 1, 2, 3, 4, 5, 0, 0, 0, 3, 2, 1, 1, 0, 0, 4, 1, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs := mergetest.Records(data)
		res, ok := merge.Merge(recs)
		if !ok {
			return
		}
		// The cluster picked last in data is silent (R1).
		dead := ""
		if len(data) > 0 && len(recs) > 1 && data[len(data)-1]%3 == 0 {
			dead = recs[int(data[len(data)-1])%len(recs)].ClusterID
		}
		alive := func(c string) bool { return c != dead }
		out := desiredSlices("ns", "svc", DerivedServiceName("svc"), "us", recs, &res, alive)

		importPorts := map[string]mcsv1beta1.ServicePort{}
		for _, p := range res.Spec.Ports {
			importPorts[p.Name] = p
		}
		byCluster := map[string]*registry.Record{}
		for i := range recs {
			byCluster[recs[i].ClusterID] = &recs[i]
		}
		type carried struct {
			cluster, address, port string
		}
		got := map[carried]int32{}
		names := map[string]bool{}
		for _, s := range out {
			if names[s.Name] {
				t.Fatalf("duplicate slice name %s", s.Name)
			}
			names[s.Name] = true
			if errs := validation.IsDNS1123Subdomain(s.Name); len(errs) > 0 {
				t.Fatalf("slice name %q: %v", s.Name, errs)
			}
			c := s.Labels[mcsv1beta1.LabelSourceCluster]
			rec := byCluster[c]
			if rec == nil || c == dead {
				t.Fatalf("slice %s from cluster %q, which is not an alive exporter", s.Name, c)
			}
			if len(res.Spec.Ports) > 0 && len(s.Ports) == 0 {
				t.Errorf("slice %s from %s has no ports although the import has %v", s.Name, c, res.Spec.Ports)
			}
			for _, sp := range s.Ports {
				ip, inImport := importPorts[*sp.Name]
				if !inImport || ip.Protocol != *sp.Protocol {
					t.Errorf("slice %s from %s carries port %q/%s, which the import (%v) does not have", s.Name, c, *sp.Name, *sp.Protocol, res.Spec.Ports)
					continue
				}
				if !slices.ContainsFunc(rec.Spec.Ports, func(p registry.Port) bool {
					proto := p.Protocol
					if proto == "" {
						proto = corev1.ProtocolTCP
					}
					return p.Name == ip.Name && proto == ip.Protocol && p.Port == ip.Port
				}) {
					t.Errorf("slice %s from %s carries port %q of the import (%d/%s), but %s's own ports are %+v",
						s.Name, c, ip.Name, ip.Port, ip.Protocol, c, rec.Spec.Ports)
				}
			}
			for _, ep := range s.Endpoints {
				a, err := netip.ParseAddr(ep.Addresses[0])
				if err != nil || a.Is4() != (s.AddressType == discoveryv1.AddressTypeIPv4) {
					t.Errorf("slice %s (%s) holds address %s", s.Name, s.AddressType, ep.Addresses[0])
				}
				for _, sp := range s.Ports {
					got[carried{c, ep.Addresses[0], *sp.Name}] = *sp.Port
				}
				if len(s.Ports) == 0 {
					got[carried{c, ep.Addresses[0], ""}] = 0
				}
			}
		}
		// Nothing routable is lost.
		for _, rec := range recs {
			if rec.ClusterID == dead {
				continue
			}
			served := map[string]corev1.Protocol{}
			for _, n := range res.Served[rec.ClusterID] {
				served[n] = importPorts[n].Protocol
			}
			for _, ep := range rec.Endpoints {
				if len(res.Spec.Ports) == 0 {
					if _, ok := got[carried{rec.ClusterID, ep.Address, ""}]; !ok {
						t.Errorf("endpoint %s of %s is missing although the import has no ports", ep.Address, rec.ClusterID)
					}
					continue
				}
				for _, p := range ep.Ports {
					proto := p.Protocol
					if proto == "" {
						proto = corev1.ProtocolTCP
					}
					if want, ok := served[p.Name]; !ok || want != proto {
						continue
					}
					if n, ok := got[carried{rec.ClusterID, ep.Address, p.Name}]; !ok || n != p.Port {
						t.Errorf("endpoint %s of %s, port %q %d/%s, is missing from the slices (got %d, %v)",
							ep.Address, rec.ClusterID, p.Name, p.Port, proto, n, ok)
					}
				}
			}
		}
	})
}
