// The contract cases: each checks one promise of registry.Registry (its
// docstrings) on the backend of the Harness. Run lists them.

package registrytest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/clusterset/clusterset/pkg/registry"
)

func testReadBeforeSync(s *suite) {
	reg := s.h.NewRegistry(s.t, s.setID, "cls-a")
	if reg.HasSynced() {
		s.t.Fatal("HasSynced is true before Run was called")
	}
	if _, err := reg.Records(s.key("web")); !errors.Is(err, registry.ErrNotSynced) {
		s.t.Errorf("Records before Run: got error %v, want ErrNotSynced", err)
	}
}

func testPublishRead(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	recA := fullRecord(s.setID, "cls-a", key, 1)
	a.publish(recA)
	// Both another cluster and the exporter itself see the record.
	b.waitRecords(key, recA)
	a.waitRecords(key, recA)
	b.waitKeys(key)

	// A second cluster's record: Records is sorted by ClusterID whatever the
	// publication order, so publish "cls-0" after "cls-a".
	z := s.start("cls-0")
	recZ := fullRecord(s.setID, "cls-0", key, 2)
	recZ.Spec.ExportCreated = recA.Spec.ExportCreated.Add(-time.Hour)
	z.publish(recZ)
	b.waitRecords(key, recZ, recA)

	// A registry started after the records were published sees them in its
	// first fill.
	c := s.start("cls-c")
	c.waitRecords(key, recZ, recA)
	c.waitKeys(key)
}

func testZeroEndpoints(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("scaled")
	rec := fullRecord(s.setID, "cls-a", key, 1)
	rec.Endpoints = nil
	a.publish(rec)
	b.waitRecords(key, rec)
	b.waitKeys(key)

	// Scaled up, then back to zero: the export still exists.
	up := fullRecord(s.setID, "cls-a", key, 1)
	a.publish(up)
	b.waitRecords(key, up)
	a.publish(rec)
	b.waitRecords(key, rec)
	b.waitKeys(key)

	// An empty, non-nil slice is the same as nil.
	rec.Endpoints = []registry.Endpoint{}
	a.publish(rec)
	b.waitRecords(key, rec)
}

func testUpdates(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	rec := fullRecord(s.setID, "cls-a", key, 1)
	a.publish(rec)
	b.waitRecords(key, rec)

	steps := []struct {
		name   string
		change func(r *registry.Record)
	}{
		{"ready flips to false", func(r *registry.Record) {
			r.Endpoints[0].Ready = false
			r.Endpoints[0].Serving = false
		}},
		{"ready flips back to true", func(r *registry.Record) {
			r.Endpoints[0].Ready = true
			r.Endpoints[0].Serving = true
		}},
		{"endpoint terminating", func(r *registry.Record) {
			r.Endpoints[1].Ready = false
			r.Endpoints[1].Terminating = true
		}},
		{"endpoint removed", func(r *registry.Record) { r.Endpoints = r.Endpoints[:len(r.Endpoints)-1] }},
		{"endpoint added", func(r *registry.Record) {
			r.Endpoints = append(r.Endpoints, endpoint(1, 200, r.Spec.Ports, false))
		}},
		{"IPv6 endpoint added", func(r *registry.Record) {
			r.Endpoints = append(r.Endpoints, endpoint(1, 201, r.Spec.Ports, true))
		}},
		{"port added", func(r *registry.Record) {
			p := registry.Port{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9090, TargetPort: "9090"}
			r.Spec.Ports = append(r.Spec.Ports, p)
			for i := range r.Endpoints {
				r.Endpoints[i].Ports = append(r.Endpoints[i].Ports, registry.EndpointPort{Name: p.Name, Protocol: p.Protocol, Port: 9090})
			}
		}},
		{"labels and affinity changed", func(r *registry.Record) {
			r.Spec.ExportedLabels = map[string]string{"tier": "backend"}
			r.Spec.ExportedAnnotations = nil
			r.Spec.SessionAffinity = corev1.ServiceAffinityNone
			r.Spec.SessionAffinityConfig = nil
			r.Spec.TrafficDistribution = nil
		}},
		{"type changed to Headless", func(r *registry.Record) { r.Spec.Type = registry.Headless }},
	}
	for _, step := range steps {
		step.change(&rec)
		s.t.Logf("update: %s", step.name)
		a.publish(rec)
		b.waitRecords(key, rec)
		a.waitRecords(key, rec)
	}

	// Publishing the same record again is harmless.
	a.publish(rec)
	b.waitRecords(key, rec)
}

func testWithdraw(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	other := s.key("other")
	recA := fullRecord(s.setID, "cls-a", key, 1)
	recB := fullRecord(s.setID, "cls-b", key, 2)
	recOther := fullRecord(s.setID, "cls-a", other, 1)
	a.publish(recA)
	a.publish(recOther)
	b.publish(recB)
	b.waitRecords(key, recA, recB)
	b.waitRecords(other, recOther)

	// Withdrawing removes only this cluster's record of this key.
	a.withdraw(key)
	b.waitRecords(key, recB)
	a.waitRecords(key, recB)
	b.waitRecords(other, recOther)

	// Twice is fine, and so is a key that was never published.
	a.withdraw(key)
	a.withdraw(s.key("never-published"))

	b.withdraw(key)
	b.waitRecords(key)
	a.waitRecords(key)
	b.waitKeys(other)

	a.withdraw(other)
	b.waitRecords(other)
	b.waitKeys()

	// Published again after a withdrawal.
	a.publish(recA)
	b.waitRecords(key, recA)
}

func testPublishForeign(s *suite) {
	a := s.start("cls-a")
	key := s.key("web")
	foreign := fullRecord(s.setID, "cls-b", key, 2)
	if err := a.reg.Publish(s.ctx(), &foreign); err == nil {
		s.t.Errorf("cluster cls-a published a record with ClusterID cls-b: got no error")
	}
	otherSet := fullRecord(s.setID+"-x", "cls-a", key, 1)
	if err := a.reg.Publish(s.ctx(), &otherSet); err == nil {
		s.t.Errorf("cluster cls-a of %s published a record of clusterset %s: got no error", s.setID, otherSet.ClusterSetID)
	}
	// The positive control: a record of its own is seen, and nothing else.
	own := fullRecord(s.setID, "cls-a", s.key("own"), 1)
	a.publish(own)
	a.waitRecords(own.Key(), own)
	if recs, err := a.reg.Records(key); err != nil || len(recs) != 0 {
		s.t.Errorf("Records(%s) = %v, %v; want none", key, clusterIDs(recs), err)
	}
}

func testClusterSetIsolation(s *suite) {
	set1, set2 := s.setID, s.setID+"-other"
	a1 := s.startIn(set1, "cls-a")
	b1 := s.startIn(set1, "cls-b")
	// The same cluster ID in the other clusterset.
	a2 := s.startIn(set2, "cls-a")
	b2 := s.startIn(set2, "cls-b")

	key := s.key("web")
	only1 := s.key("only-in-set1")
	rec1 := fullRecord(set1, "cls-a", key, 1)
	rec1Only := fullRecord(set1, "cls-a", only1, 1)
	rec2 := fullRecord(set2, "cls-a", key, 3) // other addresses
	rec2.Spec.Ports = rec2.Spec.Ports[:1]
	for i := range rec2.Endpoints {
		rec2.Endpoints[i].Ports = rec2.Endpoints[i].Ports[:1]
	}
	a1.publish(rec1)
	a1.publish(rec1Only)
	b1.waitRecords(key, rec1)
	b1.waitRecords(only1, rec1Only)

	a2.publish(rec2)
	// Positive control first: once set2's own record is seen, set1's would
	// have been too.
	b2.waitRecords(key, rec2)
	b1.waitRecords(key, rec1)
	for _, m := range []*member{a2, b2} {
		if recs, err := m.reg.Records(only1); err != nil || len(recs) != 0 {
			m.s.t.Errorf("cluster %s of %s: Records(%s) = %v, %v; want none", m.clusterID, set2, only1, clusterIDs(recs), err)
		}
		m.waitKeys(key)
	}
	b1.waitKeys(key, only1)

	// Withdrawing in set2 leaves set1's record of the same cluster ID alone.
	a2.withdraw(key)
	b2.waitRecords(key)
	a1.waitRecords(key, rec1)
	b1.waitRecords(key, rec1)

	// Liveness is per clusterset too: a cluster that only set1 has.
	x1 := s.h.NewRegistry(s.t, set1, "cls-x")
	if err := x1.Heartbeat(s.ctx()); err != nil {
		s.t.Fatalf("Heartbeat: %v", err)
	}
	if err := b2.reg.Heartbeat(s.ctx()); err != nil {
		s.t.Fatalf("Heartbeat: %v", err)
	}
	s.eventually("liveness of set1 shows cls-x", func() error {
		live, err := a1.reg.Liveness(s.ctx())
		if err != nil {
			return err
		}
		if _, ok := live["cls-x"]; !ok {
			return fmt.Errorf("cls-x missing from %v", live)
		}
		return nil
	})
	s.eventually("liveness of set2 shows cls-b and not cls-x", func() error {
		live, err := a2.reg.Liveness(s.ctx())
		if err != nil {
			return err
		}
		if _, ok := live["cls-b"]; !ok {
			return fmt.Errorf("cls-b missing from %v", live)
		}
		if _, ok := live["cls-x"]; ok {
			return fmt.Errorf("cls-x of %s heartbeated, but set2's liveness shows it: %v", set1, live)
		}
		return nil
	})
}

func testManyServices(s *suite) {
	n := s.h.Services
	if n < 0 {
		s.t.Skip("harness skips the many-services test")
	}
	a := s.start("cls-a")
	recs := make([]registry.Record, n)
	keys := make([]registry.ServiceKey, n)
	for i := range recs {
		keys[i] = s.key(fmt.Sprintf("svc-%04d", i))
		recs[i] = smallRecord(s.setID, "cls-a", keys[i], i)
	}
	start := time.Now()
	s.parallel(n, func(i int) error { return a.reg.Publish(s.ctx(), &recs[i]) })
	s.t.Logf("published %d services in %v", n, time.Since(start).Round(time.Millisecond))

	b := s.start("cls-b")
	b.waitKeys(keys...)
	for i := range recs {
		b.waitRecords(keys[i], recs[i])
	}
	// A reader that starts now fills its view with all of them at once.
	c := s.start("cls-c")
	c.waitKeys(keys...)
	c.waitRecords(keys[n-1], recs[n-1])
}

func testManyEndpoints(s *suite) {
	n := s.h.Endpoints
	if n < 0 {
		s.t.Skip("harness skips the many-endpoints test")
	}
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("big")
	rec := smallRecord(s.setID, "cls-a", key, 0)
	rec.Endpoints = nil
	for i := range n {
		rec.Endpoints = append(rec.Endpoints, endpoint(1, i, rec.Spec.Ports, i%10 == 9))
	}
	start := time.Now()
	a.publish(rec)
	s.t.Logf("published %d endpoints in %v", n, time.Since(start).Round(time.Millisecond))
	b.waitRecords(key, rec)
	s.t.Logf("read back %d endpoints after %v", n, time.Since(start).Round(time.Millisecond))

	// Changes at both ends of the list.
	rec.Endpoints[n-1].Ready = false
	rec.Endpoints = rec.Endpoints[1:]
	a.publish(rec)
	b.waitRecords(key, rec)

	// Scaled down to a few: nothing of the big record is left over.
	rec.Endpoints = rec.Endpoints[:3]
	a.publish(rec)
	b.waitRecords(key, rec)

	// And back up.
	rec.Endpoints = nil
	for i := range n {
		rec.Endpoints = append(rec.Endpoints, endpoint(1, n-i, rec.Spec.Ports, false))
	}
	a.publish(rec)
	b.waitRecords(key, rec)
}

func testLiveness(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	if _, err := b.reg.Liveness(s.ctx()); err != nil {
		s.t.Fatalf("Liveness: %v", err)
	}

	var last time.Time
	for round := range 2 {
		before := time.Now()
		if err := a.reg.Heartbeat(s.ctx()); err != nil {
			s.t.Fatalf("Heartbeat (round %d): %v", round, err)
		}
		after := time.Now()
		s.eventually(fmt.Sprintf("liveness of cls-a seen by cls-b (round %d)", round), func() error {
			live, err := b.reg.Liveness(s.ctx())
			if err != nil {
				return err
			}
			hb, ok := live["cls-a"]
			if !ok {
				return fmt.Errorf("cls-a missing: %v", live)
			}
			if hb.Holder != HolderOf("cls-a") {
				return fmt.Errorf("cls-a's heartbeat holder %q, want %q", hb.Holder, HolderOf("cls-a"))
			}
			got := hb.RenewTime
			if got.Before(before.Add(-s.h.ClockSkew)) || got.After(after.Add(s.h.ClockSkew)) {
				return fmt.Errorf("cls-a's heartbeat time %v is not within %v of [%v, %v]", got, s.h.ClockSkew, before, after)
			}
			if !got.After(last) && round > 0 {
				return fmt.Errorf("heartbeat time %v did not advance past %v", got, last)
			}
			last = got
			return nil
		})
		if round == 0 {
			// Let the clock move so the second heartbeat is visibly later.
			time.Sleep(1100 * time.Millisecond)
		}
	}

	// Heartbeats from several clusters.
	if err := b.reg.Heartbeat(s.ctx()); err != nil {
		s.t.Fatalf("Heartbeat: %v", err)
	}
	s.eventually("liveness of both clusters", func() error {
		live, err := a.reg.Liveness(s.ctx())
		if err != nil {
			return err
		}
		if len(live) != 2 {
			return fmt.Errorf("got %v, want cls-a and cls-b", live)
		}
		return nil
	})
}

func testConcurrentWriters(s *suite) {
	ids := []string{"cls-c", "cls-a", "cls-b"}
	members := make([]*member, len(ids))
	for i, id := range ids {
		members[i] = s.start(id)
	}
	key := s.key("shared")
	// Each cluster publishes several versions as fast as it can, all at the
	// same time; the last version of each must win.
	const versions = 4
	final := make([]registry.Record, len(ids))
	release := make(chan struct{})
	errs := make(chan error, len(ids))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			<-release
			for v := range versions {
				rec := fullRecord(s.setID, m.clusterID, key, i+1)
				rec.Endpoints = rec.Endpoints[:1+v%len(rec.Endpoints)]
				rec.Spec.ExportedLabels["version"] = fmt.Sprint(v)
				if err := m.reg.Publish(s.ctx(), &rec); err != nil {
					errs <- fmt.Errorf("cluster %s, version %d: %w", m.clusterID, v, err)
					return
				}
				final[i] = rec
			}
		})
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Fatalf("concurrent Publish: %v", err)
	}
	for _, m := range members {
		m.waitRecords(key, final...)
	}

	// And all three withdraw at once.
	errs = make(chan error, len(ids))
	for _, m := range members {
		wg.Go(func() {
			if err := m.reg.Withdraw(s.ctx(), key); err != nil {
				errs <- fmt.Errorf("cluster %s: %w", m.clusterID, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Fatalf("concurrent Withdraw: %v", err)
	}
	for _, m := range members {
		m.waitRecords(key)
	}
}

func testOutage(s *suite) {
	if s.h.Outage == nil {
		s.t.Skip("harness cannot simulate an outage")
	}
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	rec := fullRecord(s.setID, "cls-a", key, 1)
	a.publish(rec)
	b.waitRecords(key, rec)

	end := s.h.Outage(s.t)
	ended := false
	defer func() {
		if !ended {
			end()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.h.OutageDuration)
	defer cancel()
	update := rec
	update.Endpoints = update.Endpoints[:1]
	if err := a.reg.Publish(ctx, &update); err == nil {
		s.t.Errorf("Publish during the outage: got no error")
	}
	<-ctx.Done()
	if !b.reg.HasSynced() {
		s.t.Errorf("HasSynced turned false during the outage")
	}
	got, err := b.reg.Records(key)
	if err != nil {
		s.t.Fatalf("Records during the outage: %v", err)
	}
	if err := sameRecords(got, canonicalAll([]registry.Record{rec})); err != nil {
		s.t.Fatalf("the view changed during the outage: %v", err)
	}
	end()
	ended = true

	// Recovery: the registries reconnect on their own.
	a.publish(update)
	b.waitRecords(key, update)
}
