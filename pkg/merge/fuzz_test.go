package merge

import (
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"k8s.io/utils/ptr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/merge/mergetest"
	"github.com/clusterset/clusterset/pkg/registry"
)

// deepCopyRecords copies records so that a mutation by Merge would show.
func deepCopyRecords(recs []registry.Record) []registry.Record {
	out := make([]registry.Record, len(recs))
	for i := range recs {
		out[i] = *recs[i].DeepCopy()
	}
	return out
}

// FuzzMerge checks E6/I6 invariants on arbitrary records: the result does not
// depend on the input order, every cluster has a Conflicts entry, the
// winner's properties are in the import, the merged ports have no duplicate
// names nor duplicate (protocol, port), and a cluster does not differ
// exactly when its own ports are the merged ones and its properties the
// winner's.
func FuzzMerge(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{3, 0, 1, 2, 0, 1, 2, 3, 1, 2, 3, 0, 1, 2, 3, 1, 2, 0, 1, 2, 0, 1, 0, 1, 1, 0, 2})
	f.Add([]byte("\x06\x05\x04\x03\x02\x01mergethesewithsomeportsandclashes0123456789abcdefghijklmnopqrstuvwxyz"))
	f.Add([]byte{6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 1, 0, 0, 0, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 2, 1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs := mergetest.Records(data)
		before := deepCopyRecords(recs)
		res, ok := Merge(recs)
		if ok != (len(recs) > 0) {
			t.Fatalf("Merge of %d records: ok = %v", len(recs), ok)
		}
		if !reflect.DeepEqual(recs, before) {
			t.Fatal("Merge changed its input")
		}
		if !ok {
			return
		}

		// Order independence: any shuffle gives the identical Result.
		h := fnv.New64a()
		h.Write(data)
		rng := rand.New(rand.NewPCG(h.Sum64(), 1))
		for range 3 {
			shuffled := deepCopyRecords(recs)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			res2, _ := Merge(shuffled)
			if !reflect.DeepEqual(res, res2) {
				t.Fatalf("result depends on the input order:\n%s\nvs\n%s", show(res), show(res2))
			}
		}

		// The winner, computed independently.
		w := recs[0]
		for _, r := range recs[1:] {
			if r.Spec.ExportCreated.Before(w.Spec.ExportCreated) ||
				r.Spec.ExportCreated.Equal(w.Spec.ExportCreated) && r.ClusterID < w.ClusterID {
				w = r
			}
		}
		if res.Winner != w.ClusterID {
			t.Errorf("Winner = %s, want %s", res.Winner, w.ClusterID)
		}

		// I6: the winner's properties are in the import.
		ws := w.Spec
		if res.Spec.Type != mcsv1beta1.ServiceImportType(ws.Type) ||
			res.Spec.SessionAffinity != ws.SessionAffinity ||
			!reflect.DeepEqual(res.Spec.SessionAffinityConfig, ws.SessionAffinityConfig) ||
			!reflect.DeepEqual(res.Spec.IPFamilies, ws.IPFamilies) ||
			!reflect.DeepEqual(res.Spec.InternalTrafficPolicy, ws.InternalTrafficPolicy) ||
			!reflect.DeepEqual(res.Spec.TrafficDistribution, ws.TrafficDistribution) ||
			!reflect.DeepEqual(res.Labels, ws.ExportedLabels) ||
			!reflect.DeepEqual(res.Annotations, ws.ExportedAnnotations) {
			t.Errorf("the winner's (%s) properties are not the import's:\n%s\nwinner %s", w.ClusterID, show(res), show(ws))
		}
		if len(res.Spec.IPs) != 0 {
			t.Errorf("Spec.IPs = %v, want none", res.Spec.IPs)
		}

		// Ports: no duplicate names nor (protocol, port); every port comes
		// from some record; the winner's first port is the first one.
		names := map[string]bool{}
		pps := map[protoPort]bool{}
		merged := map[portID]bool{}
		for _, p := range res.Spec.Ports {
			if names[p.Name] {
				t.Errorf("duplicate port name %q in %s", p.Name, show(res.Spec.Ports))
			}
			if pps[protoPort{p.Protocol, p.Port}] {
				t.Errorf("duplicate port %d/%s in %s", p.Port, p.Protocol, show(res.Spec.Ports))
			}
			names[p.Name] = true
			pps[protoPort{p.Protocol, p.Port}] = true
			merged[portID{p.Name, p.Protocol, p.Port, ptr.Deref(p.AppProtocol, "")}] = true
		}
		if len(ws.Ports) > 0 {
			if len(res.Spec.Ports) == 0 || idOf(&ws.Ports[0]) != (portID{
				res.Spec.Ports[0].Name, res.Spec.Ports[0].Protocol, res.Spec.Ports[0].Port, ptr.Deref(res.Spec.Ports[0].AppProtocol, ""),
			}) {
				t.Errorf("the winner's first port %+v is not the import's first port: %s", ws.Ports[0], show(res.Spec.Ports))
			}
		}
		all := map[portID]bool{}
		for _, r := range recs {
			for i := range r.Spec.Ports {
				all[idOf(&r.Spec.Ports[i])] = true
			}
		}
		for id := range merged {
			if !all[id] {
				t.Errorf("import port %v is in no record", id)
			}
		}

		// Served: a cluster serves exactly the merged ports that equal one of
		// its own in name, protocol and number, in the import's order.
		if len(res.Served) != len(recs) {
			t.Errorf("Served has %d entries for %d clusters", len(res.Served), len(recs))
		}
		for _, r := range recs {
			var want []string
			for _, m := range res.Spec.Ports {
				if slices.ContainsFunc(r.Spec.Ports, func(p registry.Port) bool {
					id := idOf(&p)
					return id.name == m.Name && id.protocol == m.Protocol && id.port == m.Port
				}) {
					want = append(want, m.Name)
				}
			}
			if got := res.Served[r.ClusterID]; !slices.Equal(got, want) {
				t.Errorf("cluster %s: Served = %q, want %q (own ports %s, import ports %s)",
					r.ClusterID, got, want, show(r.Spec.Ports), show(res.Spec.Ports))
			}
		}

		// E6: a Conflicts entry for every cluster, and nothing else.
		ids := make([]string, 0, len(recs))
		for _, r := range recs {
			ids = append(ids, r.ClusterID)
		}
		slices.Sort(ids)
		if !slices.Equal(res.Clusters, ids) {
			t.Errorf("Clusters = %v, want %v", res.Clusters, ids)
		}
		if len(res.Conflicts) != len(recs) {
			t.Errorf("Conflicts has %d entries for %d clusters", len(res.Conflicts), len(recs))
		}
		anyDiffers := false
		for _, r := range recs {
			c, ok := res.Conflicts[r.ClusterID]
			if !ok {
				t.Fatalf("no Conflicts entry for cluster %s", r.ClusterID)
			}
			if c.Message == "" {
				t.Errorf("cluster %s: empty message", r.ClusterID)
			}
			anyDiffers = anyDiffers || c.Differs
			// A cluster differs exactly when its own port set is not the
			// merged one or a property is not the winner's.
			own := map[portID]bool{}
			for i := range r.Spec.Ports {
				own[idOf(&r.Spec.Ports[i])] = true
			}
			same := maps.Equal(own, merged)
			for _, p := range properties {
				if p.equal != nil && !p.equal(&r.Spec, &ws) {
					same = false
				}
			}
			if c.Differs == same {
				t.Errorf("cluster %s: Differs = %v, but its ports %v vs merged %v and properties %s vs winner %s",
					r.ClusterID, c.Differs, own, merged, show(r.Spec), show(ws))
			}
			if c.Differs && !c.Conflicting {
				t.Errorf("cluster %s differs but is not Conflicting: %+v", r.ClusterID, c)
			}
		}
		// Per KEP-1645, a conflict marks every export; no conflict marks none.
		for id, c := range res.Conflicts {
			if c.Conflicting != anyDiffers {
				t.Errorf("cluster %s: Conflicting = %v, but some cluster differs = %v", id, c.Conflicting, anyDiffers)
			}
			if c.Conflicting == (c.Reason == mcsv1beta1.ServiceExportReasonNoConflicts) {
				t.Errorf("cluster %s: Conflicting = %v with reason %s", id, c.Conflicting, c.Reason)
			}
			if r := res.Conflicts[id].Reason; r != mcsv1beta1.ServiceExportReasonNoConflicts &&
				!slices.ContainsFunc(properties, func(p *property) bool { return p.reason == r }) {
				t.Errorf("cluster %s: unknown reason %s", id, r)
			}
		}
	})
}
