package cloudmap

import (
	"strconv"
	"testing"
	"time"
)

// FuzzDecodeHeartbeats feeds arbitrary instances of the heartbeat service
// (lines "ID\x1fKEY=VALUE\x1f..." as for FuzzDecodeInstances) to the
// heartbeat decoder: anyone allowed to register there may write them.
// Whatever the input, it does not panic; it returns one heartbeat per
// cluster, the newest of that cluster's parsed instances, with a lease of
// whole seconds that is never negative; and every instance is either
// skipped (reported once) or counted in its cluster's heartbeat.
func FuzzDecodeHeartbeats(f *testing.F) {
	hb := func(id, cluster, ms, lease string) instance {
		return instance{ID: id, Attrs: map[string]string{attrClusterSetID: "set1", attrClusterID: cluster, attrRecordKind: kindHeartbeat,
			attrHeartbeat: ms, attrHeartbeatLease: lease, attrHeartbeatHolder: "uid-1", attrController: controllerName}}
	}
	f.Add(formatInstances([]instance{hb("hb-set1.cls1", "cls1", "1700000000000", "30"), hb("hb-set1.cls2", "cls2", "1700000001000", "")}))
	f.Add(formatInstances([]instance{hb("a", "cls1", "1700000000000", "30"), hb("b", "cls1", "1600000000000", "-5")}))
	f.Add(formatInstances([]instance{hb("a", "cls1", "-62135596800001", "99999999999"), hb("b", "", "1", "1")}))

	f.Fuzz(func(t *testing.T, data []byte) {
		insts, _ := dedupe(parseInstances(data))
		skipped := map[string]int{}
		out := decodeHeartbeats("set1", insts, func(id string, err error) {
			if err == nil {
				t.Errorf("instance %s skipped without a reason", id)
			}
			skipped[id]++
		})
		newest := map[string]time.Time{}
		for _, h := range out {
			if h.ClusterID == "" {
				t.Fatalf("a heartbeat without a cluster: %+v", h)
			}
			if _, dup := newest[h.ClusterID]; dup {
				t.Fatalf("two heartbeats of cluster %s", h.ClusterID)
			}
			newest[h.ClusterID] = h.RenewTime
			if h.LeaseDuration < 0 || h.LeaseDuration%time.Second != 0 {
				t.Errorf("cluster %s: lease %v, want 0 or whole seconds", h.ClusterID, h.LeaseDuration)
			}
		}
		for _, in := range insts {
			switch n := skipped[in.ID]; {
			case n > 1:
				t.Errorf("instance %s skipped %d times", in.ID, n)
			case n == 1:
				continue
			}
			c := in.Attrs[attrClusterID]
			at, ok := newest[c]
			if !ok {
				t.Fatalf("instance %s of cluster %q neither skipped nor counted in a heartbeat", in.ID, c)
			}
			if own := parseMillis(t, in.Attrs[attrHeartbeat]); at.Before(own) {
				t.Errorf("cluster %s: heartbeat at %v, but instance %s renewed at %v", c, at, in.ID, own)
			}
		}
	})
}

// parseMillis is the renew time of a heartbeat the decoder did not skip:
// its time must parse.
func parseMillis(t *testing.T, v string) time.Time {
	t.Helper()
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("a heartbeat whose time does not parse was not skipped: %v", err)
	}
	return time.UnixMilli(ms)
}
