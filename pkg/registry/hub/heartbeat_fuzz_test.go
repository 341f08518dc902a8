package hub

import (
	"encoding/json"
	"testing"
	"time"

	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// ownNamespace stands, in FuzzHeartbeats' objects, for the hub namespace of
// the cluster the object names: a fuzzer does not find hashed names.
const ownNamespace = "$own"

// FuzzHeartbeats feeds the hub's heartbeat reading arbitrary
// ClusterSetRecords (a JSON list, as the hub lists them; a namespace of
// "$own" is the namespace of the cluster the object names), as any member
// can write them in its own namespace and the hub's admin anywhere.
// Whatever the input, it does not panic, and it returns, in order, exactly
// the heartbeats the rules accept: an object named HeartbeatName of type
// Heartbeat with a renew time, of this clusterset, in the namespace of the
// cluster it names; each read as written, a lease of -1 s included (as
// TestHubHandWrittenRecords reads it; doctor takes a lease that is not
// positive for none).
func FuzzHeartbeats(f *testing.F) {
	f.Add([]byte(`[{"metadata":{"name":"clusterset-heartbeat","namespace":"$own"},"spec":{"type":"Heartbeat","clusterSetID":"set","clusterID":"cls-a",` +
		`"renewTime":"2025-03-01T12:00:00.000000Z","leaseDurationSeconds":40,"holderIdentity":"uid-a"}}]`))
	f.Add([]byte(`[{"metadata":{"name":"clusterset-heartbeat","namespace":"clusterset-set-cls-x-0123456789"},"spec":{"type":"Heartbeat","clusterSetID":"set","clusterID":"cls-a",` +
		`"renewTime":"2025-03-01T12:00:00.000000Z"}}]`))
	f.Add([]byte(`[{"metadata":{"name":"clusterset-heartbeat","namespace":"$own"},"spec":{"type":"Heartbeat","clusterSetID":"set","clusterID":"cls-x",` +
		`"renewTime":"2100-01-01T00:00:00.000000Z","leaseDurationSeconds":-1,"holderIdentity":"\u0000 not a UID"}}]`))

	r := &Registry{setID: "set"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var objs []*hubv1alpha1.ClusterSetRecord
		if err := json.Unmarshal(data, &objs); err != nil {
			return
		}
		for i, obj := range objs {
			if obj == nil {
				objs[i] = &hubv1alpha1.ClusterSetRecord{}
			} else if obj.Namespace == ownNamespace {
				obj.Namespace = NamespaceName(obj.Spec.ClusterSetID, obj.Spec.ClusterID)
			}
		}
		out := r.heartbeats(objs)
		next := 0
		for _, obj := range objs {
			s := obj.Spec
			if obj.Name != HeartbeatName || s.Type != hubv1alpha1.Heartbeat || s.RenewTime == nil ||
				s.ClusterSetID != "set" || s.ClusterID == "" || obj.Namespace != NamespaceName("set", s.ClusterID) {
				continue
			}
			if next == len(out) {
				t.Fatalf("the heartbeat of %s in %s/%s was left out", s.ClusterID, obj.Namespace, obj.Name)
			}
			hb := out[next]
			next++
			var lease time.Duration
			if s.LeaseDurationSeconds != nil {
				lease = time.Duration(*s.LeaseDurationSeconds) * time.Second
			}
			if hb.ClusterID != s.ClusterID || !hb.RenewTime.Equal(s.RenewTime.Time) || hb.Holder != s.HolderIdentity || hb.LeaseDuration != lease {
				t.Fatalf("heartbeat %+v read as %+v", s, hb)
			}
		}
		if next != len(out) {
			t.Fatalf("%d heartbeats read, %d of them from objects the rules reject: %+v", len(out), len(out)-next, out[next:])
		}
	})
}
