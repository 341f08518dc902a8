// Contract cases about what a Registry owns: its identity, the records it
// hands out, and keeping its published records in the registry.

package registrytest

import (
	"errors"
	"fmt"
	"slices"

	"github.com/clusterset/clusterset/pkg/registry"
)

// testOwnIdentity: a record published without IDs gets the registry's own.
func testOwnIdentity(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	want := fullRecord(s.setID, "cls-a", key, 1)
	anonymous := want
	anonymous.ClusterSetID, anonymous.ClusterID = "", ""
	if err := a.reg.Publish(s.ctx(), &anonymous); err != nil {
		s.t.Fatalf("Publish of a record without IDs: %v", err)
	}
	b.waitRecords(key, want)
	if anonymous.ClusterID != "" || anonymous.ClusterSetID != "" {
		s.t.Errorf("Publish changed the caller's record: IDs now %q/%q", anonymous.ClusterSetID, anonymous.ClusterID)
	}
	// Half of the identity is filled in too; the other half must match.
	half := fullRecord(s.setID, "", key, 1)
	half.Endpoints = half.Endpoints[:1]
	a.publish(half)
	wantHalf := half
	wantHalf.ClusterID = "cls-a"
	b.waitRecords(key, wantHalf)
}

// testCopies: Publish does not keep the caller's record, Records hands out
// copies, and Keys is sorted.
func testCopies(s *suite) {
	a := s.start("cls-a")
	key := s.key("web")
	rec := fullRecord(s.setID, "cls-a", key, 1)
	want := fullRecord(s.setID, "cls-a", key, 1)
	appProtocol := *rec.Spec.Ports[0].AppProtocol // the fixture's points to a shared variable
	rec.Spec.Ports[0].AppProtocol = &appProtocol
	a.publish(rec)
	// The caller changes what it published, in every shared part.
	rec.Spec.Ports[0].Port = 9999
	*rec.Spec.Ports[0].AppProtocol = "changed"
	rec.Spec.ExportedLabels["app"] = "changed"
	rec.Endpoints[0].Ports[0].Port = 9999
	rec.Endpoints[0].Address = "192.0.2.254"
	a.waitRecords(key, want)

	got, err := a.reg.Records(key)
	if err != nil || len(got) != 1 {
		s.t.Fatalf("Records = %d records, %v; want 1", len(got), err)
	}
	got[0].Spec.Ports[0].Port = 9999
	*got[0].Spec.Ports[0].AppProtocol = "changed"
	got[0].Spec.ExportedLabels["app"] = "changed"
	*got[0].Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = 1
	got[0].Spec.IPFamilies[0] = "changed"
	got[0].Endpoints[0].Ports[0].Port = 9999
	got[0].Endpoints[0].Address = "192.0.2.254"
	a.waitRecords(key, want)

	// Keys in the order the contract promises, whatever the publish order.
	names := []string{"b", "a", "c-2", "c-10"}
	var keys []registry.ServiceKey
	for i, n := range names {
		k := s.key(n)
		keys = append(keys, k)
		a.publish(smallRecord(s.setID, "cls-a", k, i))
	}
	keys = append(keys, key)
	a.waitKeys(keys...)
	all, err := a.reg.Keys()
	if err != nil {
		s.t.Fatal(err)
	}
	if !slices.IsSortedFunc(all, registry.CompareKeys) {
		s.t.Errorf("Keys is not sorted by namespace, then name: %v", abbreviate(all))
	}
}

// testLostRecordIsKept: a record lost behind the backend's back (deleted by
// hand) is written again by the backend, without another Publish; a
// withdrawn one is not.
func testLostRecordIsKept(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key, gone := s.key("web"), s.key("withdrawn")
	rec := fullRecord(s.setID, "cls-a", key, 1)
	old := fullRecord(s.setID, "cls-a", gone, 1)
	a.publish(rec)
	a.publish(old)
	b.waitRecords(key, rec)
	b.waitRecords(gone, old)
	a.withdraw(gone)
	b.waitRecords(gone)

	for round := 1; round <= 2; round++ { // repair is not a one-off
		// Lose deletes the record before it returns; a backend that
		// does not keep its records never writes it back.
		stored := s.h.Lose(s.t, s.setID, "cls-a", key)
		s.eventually(fmt.Sprintf("round %d: the lost record written again", round), func() error {
			ok, err := stored()
			if err == nil && !ok {
				err = errors.New("the store does not hold it")
			}
			return err
		})
		b.waitRecords(key, rec)
		a.waitRecords(key, rec)
	}

	// What was withdrawn stays withdrawn: a backend that kept it would
	// have written it again by now, as it did the lost one twice.
	if recs, err := b.reg.Records(gone); err != nil || len(recs) != 0 {
		s.t.Errorf("the withdrawn record is back: Records(%s) = %v, %v", gone, clusterIDs(recs), err)
	}
	b.waitKeys(key)
}
