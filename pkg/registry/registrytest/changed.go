package registrytest

import (
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
)

// testChangedTime checks registry.Record.Changed: it round-trips with at
// least millisecond precision, a republish of the same content with a newer
// time keeps the stored time (so a restarted exporter does not make an old
// change look new), and a change of content carries its own time.
func testChangedTime(s *suite) {
	a := s.start("cls-a")
	b := s.start("cls-b")
	key := s.key("web")
	rec := fullRecord(s.setID, "cls-a", key, 1)
	t1 := rec.Changed
	a.publish(rec)
	b.waitRecords(key, rec)

	// Same content, later time: nothing changes. A second service published
	// afterwards is the barrier: once b sees it, a write of the first one
	// made before it would have had the time to show too.
	again := rec
	again.Changed = t1.Add(time.Hour)
	a.publish(again)
	barrier := smallRecord(s.setID, "cls-a", s.key("barrier"), 1)
	a.publish(barrier)
	b.waitRecords(barrier.Key(), barrier)
	b.waitRecords(key, rec) // with Changed still t1

	// New content with a new time: both arrive together.
	changed := rec
	changed.Endpoints = append([]registry.Endpoint(nil), rec.Endpoints[:2]...)
	changed.Changed = t1.Add(2 * time.Hour)
	a.publish(changed)
	b.waitRecords(key, changed)
	a.waitRecords(key, changed)

	// A record without a time reads back without one.
	unknown := smallRecord(s.setID, "cls-a", s.key("untimed"), 2)
	a.publish(unknown)
	b.waitRecords(unknown.Key(), unknown)
}
