package cloudmap

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterset/clusterset/pkg/registry"
)

// TestDecodeSkipsUnimportableClusters: a cluster ID that cannot be the value
// of multicluster.kubernetes.io/source-cluster (here 64 characters, written
// by another controller) leaves that cluster's record out, reported once
// with ErrUnimportableCluster; other clusters of the service are imported,
// IDs of 63 characters and other writers' label values included.
func TestDecodeSkipsUnimportableClusters(t *testing.T) {
	aws := func(cluster, ip string) instance {
		return instance{ID: "tcp-" + strings.ReplaceAll(ip, ".", "_") + "-80", Attrs: map[string]string{
			"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": "80", "CLUSTERSET_ID": "set1", "CLUSTER_ID": cluster,
			"ENDPOINT_PORT_NAME": "http", "ENDPOINT_PROTOCOL": "TCP", "READY": "true", "SERVICE_PORT": "80",
			"SERVICE_PORT_NAME": "http", "SERVICE_PROTOCOL": "TCP", "SERVICE_TARGET_PORT": "80", "SERVICE_TYPE": "ClusterSetIP",
			"SERVICE_EXPORT_CREATION_TIMESTAMP": "1665108776000",
		}}
	}
	tooLong := strings.Repeat("x", 64)
	insts := []instance{aws(tooLong, "10.0.0.1"), aws(tooLong, "10.0.0.2"), aws(strings.Repeat("c", 63), "10.0.0.3"), aws("EKS_Cluster.1", "10.0.0.4")}
	var skipped []error
	recs := decodeInstances("set1", "demo", "web", insts, func(_ string, err error) { skipped = append(skipped, err) })
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.ClusterID)
	}
	if strings.Join(ids, ",") != "EKS_Cluster.1,"+strings.Repeat("c", 63) {
		t.Errorf("decoded clusters %q, want the 63-character one and EKS_Cluster.1", ids)
	}
	if len(skipped) != 1 || !errors.Is(skipped[0], registry.ErrUnimportableCluster) || !strings.Contains(skipped[0].Error(), tooLong) {
		t.Errorf("skipped %v, want one ErrUnimportableCluster naming the 64-character ID", skipped)
	}
}

// TestDecodeReportsWhatItLeavesOut: instances that claim the clusterset and
// are not read into their cluster's record are reported, not only skipped:
// a second marker of a cluster (the lowest InstanceId is read) and an
// instance of a kind this version does not know. Found by
// FuzzDecodeInstances' count of what is left out; both were skipped
// silently before.
func TestDecodeReportsWhatItLeavesOut(t *testing.T) {
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	enc, err := encodeRecord(&rec, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var insts []instance
	for _, in := range enc {
		insts = append(insts, in)
	}
	marker := enc[markerID("set1", "cls1")]
	second := instance{ID: "zz-second-marker", Attrs: copyAttrs(marker.Attrs)}
	second.Attrs[attrServicePorts] = "[]"
	unknown := instance{ID: "tcp-10_0_0_2-80", Attrs: map[string]string{attrClusterSetID: "set1", attrClusterID: "cls1",
		attrRecordKind: "endpoint-v2", attrIPv4: "10.0.0.2", attrPort: "80"}}
	insts = append(insts, second, unknown)

	skipped := map[string]string{}
	got := decodeInstances("set1", "demo", "web", insts, func(id string, err error) { skipped[id] = err.Error() })
	if !equalRecords(got, []registry.Record{rec}) {
		t.Errorf("decoded %+v, want cls1's record as written", got)
	}
	if len(skipped) != 2 || !strings.Contains(skipped[second.ID], "a second marker of cluster cls1") ||
		!strings.Contains(skipped[unknown.ID], `"endpoint-v2"`) {
		t.Errorf("reported %q, want the second marker and the instance of an unknown kind", skipped)
	}
}

// TestDecodeHeartbeatsAtTheEdges: found by FuzzDecodeHeartbeats. A heartbeat
// dated before year 1 (the zero time.Time) was dropped without being
// skipped, leaving its cluster with no heartbeat at all; it is now read as
// the very old heartbeat it says. A lease of more seconds than
// time.Duration holds wrapped around to an arbitrary, even negative,
// duration; it now reads as no lease.
func TestDecodeHeartbeatsAtTheEdges(t *testing.T) {
	hb := func(id, cluster, ms, lease string) instance {
		return instance{ID: id, Attrs: map[string]string{attrClusterSetID: "set1", attrClusterID: cluster, attrRecordKind: kindHeartbeat,
			attrHeartbeat: ms, attrHeartbeatLease: lease}}
	}
	insts := []instance{hb("a", "ancient", "-62135596800001", "30"), hb("b", "long", "1700000000000", "9223372037")}
	got := decodeHeartbeats("set1", insts, func(id string, err error) { t.Errorf("%s skipped: %v", id, err) })
	slices.SortFunc(got, func(a, b registry.Heartbeat) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	if len(got) != 2 || got[0].ClusterID != "ancient" || got[0].RenewTime.Year() != 0 || got[0].LeaseDuration != 30*time.Second {
		t.Errorf("the heartbeat before year 1 read as %+v", got)
	}
	if len(got) == 2 && (got[1].ClusterID != "long" || got[1].LeaseDuration != 0) {
		t.Errorf("the heartbeat with a lease of 9,223,372,037 s read as %+v, want no lease", got[1])
	}
}
