package cloudmap

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/clusterset/clusterset/pkg/merge/mergetest"
	"github.com/clusterset/clusterset/pkg/registry"
)

// Instances are written for the fuzzer as lines "ID\x1fKEY=VALUE\x1f...".
const fieldSep = "\x1f"

func formatInstances(insts []instance) []byte {
	var b bytes.Buffer
	for _, in := range insts {
		b.WriteString(in.ID)
		keys := make([]string, 0, len(in.Attrs))
		for k := range in.Attrs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b.WriteString(fieldSep + k + "=" + in.Attrs[k])
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func parseInstances(data []byte) []instance {
	var out []instance
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		fields := strings.Split(line, fieldSep)
		in := instance{ID: fields[0], Attrs: map[string]string{}}
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(f, "=")
			in.Attrs[k] = v
		}
		out = append(out, in)
	}
	return out
}

// FuzzDecodeInstances feeds arbitrary instances to the reader's decoder, as
// Cloud Map may hold them: records of clusterset-controller and of the AWS
// Cloud Map MCS controller, other clustersets, and anything a person or a
// broken writer registered (missing, garbage or oversized attributes, an
// address that is not an IP, ports out of range). Whatever the input, the
// decoder returns only records of its own clusterset, one per cluster in
// cluster ID order, whose endpoints and service ports the API server would
// accept (registry.Endpoint.Validate, ServiceSpec.ValidatePorts), and the
// result does not depend on the order Cloud Map lists the instances in.
func FuzzDecodeInstances(f *testing.F) {
	// Seeds: clusterset-controller's own encoding of generated records
	// (endpoints and marker), the AWS controller's format, and broken
	// instances.
	for _, seed := range []string{"", "a", "seed-1", "\x01\x02\x03\x04\x05\x06\x07\x08", strings.Repeat("\xff", 32)} {
		var insts []instance
		for _, rec := range mergetest.Records([]byte(seed)) {
			rec.ClusterSetID = "set1"
			enc, err := encodeRecord(&rec, nil, nil)
			if err != nil {
				continue
			}
			for _, in := range enc {
				insts = append(insts, in)
			}
		}
		f.Add(formatInstances(insts))
	}
	aws := map[string]string{
		"AWS_INSTANCE_IPV4": "10.10.86.76", "AWS_INSTANCE_PORT": "80", "CLUSTERSET_ID": "set1", "CLUSTER_ID": "cls1",
		"ENDPOINT_PORT_NAME": "", "ENDPOINT_PROTOCOL": "TCP", "HOSTNAME": "", "K8S_CONTROLLER": "aws-cloud-map-mcs-controller-for-k8s",
		"NODENAME": "ip-10-10-77-143", "READY": "true", "SERVICE_EXPORT_CREATION_TIMESTAMP": "1665108776000", "SERVICE_PORT": "80",
		"SERVICE_PORT_NAME": "", "SERVICE_PROTOCOL": "TCP", "SERVICE_TARGET_PORT": "80", "SERVICE_TYPE": "ClusterSetIP",
	}
	f.Add(formatInstances([]instance{{ID: "tcp-10_10_86_76-80", Attrs: aws}}))
	broken := []map[string]string{
		{"CLUSTERSET_ID": "set1", "CLUSTER_ID": "cls9", "AWS_INSTANCE_IPV4": "not-an-ip", "AWS_INSTANCE_PORT": "80"},
		{"CLUSTERSET_ID": "set1", "CLUSTER_ID": "cls9", "AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "70000"},
		{"CLUSTERSET_ID": "set1", "CLUSTER_ID": "cls9", "AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "80", "ENDPOINT_PROTOCOL": "ICMP"},
		{"CLUSTERSET_ID": "set1", "CLUSTER_ID": "cls9", "CLUSTERSET_INSTANCE_KIND": "service", "SERVICE_PORTS": "[{\"port\":0}]"},
		{"CLUSTERSET_ID": "set1", "CLUSTER_ID": "cls9", "CLUSTERSET_INSTANCE_KIND": "service", "SERVICE_PORTS": "garbage"},
		{"CLUSTERSET_ID": "other", "CLUSTER_ID": "cls1", "AWS_INSTANCE_IPV4": "10.0.0.2", "AWS_INSTANCE_PORT": "80"},
		{"CLUSTERSET_ID": "set1", "AWS_INSTANCE_IPV4": "10.0.0.3"},
		{"OWNER_CLUSTERSET_ID": "set1", "CLUSTER_ID": "cls9", "CLUSTERSET_INSTANCE_KIND": "service", "SERVICE_PORTS": "[]"},
		{"OWNER_CLUSTERSET_ID": "set1", "CLUSTERSET_ID": "other", "CLUSTER_ID": "cls9", "AWS_INSTANCE_IPV4": "10.0.0.4"},
	}
	for i, a := range broken {
		f.Add(formatInstances([]instance{{ID: "x" + strings.Repeat("y", i), Attrs: a}, {ID: "tcp-10_10_86_76-80", Attrs: aws}}))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		insts, _ := dedupe(parseInstances(data)) // as every caller does
		var reports []string
		reported := map[string]int{}
		recs := decodeInstances("set1", "demo", "web", insts, func(id string, err error) {
			if err == nil {
				t.Errorf("instance %s reported without a reason", id)
				return
			}
			reported[id]++
			reports = append(reports, id+": "+err.Error())
		})
		byCluster := map[string]*registry.Record{}
		for i, rec := range recs {
			byCluster[rec.ClusterID] = &recs[i]
			if rec.ClusterSetID != "set1" || rec.ClusterID == "" || rec.Namespace != "demo" || rec.Name != "web" {
				t.Fatalf("record %d has identity %q/%q %s/%s", i, rec.ClusterSetID, rec.ClusterID, rec.Namespace, rec.Name)
			}
			if err := registry.ImportableClusterID(rec.ClusterID); err != nil {
				t.Fatalf("record %d: decoded a cluster whose endpoints cannot be imported: %v", i, err)
			}
			if i > 0 && recs[i-1].ClusterID >= rec.ClusterID {
				t.Fatalf("records not in strict cluster ID order: %q then %q", recs[i-1].ClusterID, rec.ClusterID)
			}
			if err := rec.Spec.ValidatePorts(); err != nil {
				t.Fatalf("cluster %s: decoded service ports the API server rejects: %v", rec.ClusterID, err)
			}
			for _, ep := range rec.Endpoints {
				if err := ep.Validate(); err != nil {
					t.Fatalf("cluster %s: decoded an endpoint the API server rejects: %v", rec.ClusterID, err)
				}
			}
		}
		checkNothingDroppedSilently(t, insts, byCluster, reported)

		reversed := slices.Clone(insts)
		slices.Reverse(reversed)
		var reportsAgain []string
		again := decodeInstances("set1", "demo", "web", reversed, func(id string, err error) {
			reportsAgain = append(reportsAgain, id+": "+err.Error())
		})
		if !reflect.DeepEqual(recs, again) {
			t.Fatalf("the decoded records depend on the order of the instances:\n%+v\n%+v", recs, again)
		}
		slices.Sort(reports)
		slices.Sort(reportsAgain)
		if !slices.Equal(reports, reportsAgain) {
			t.Fatalf("the reports depend on the order of the instances:\n%q\n%q", reports, reportsAgain)
		}
	})
}

// checkNothingDroppedSilently checks that every instance of set1 is read
// into its cluster's record in recs (an endpoint instance: an endpoint at
// its address; a marker: the one marker read) or reported: by its own ID,
// or, when its cluster has no record, with the whole cluster, under
// markerID or the ID of its first endpoint instance. reported counts the
// reports by ID.
func checkNothingDroppedSilently(t *testing.T, insts []instance, recs map[string]*registry.Record, reported map[string]int) {
	t.Helper()
	unreported := map[string][]instance{} // by cluster
	for _, in := range insts {
		if clusterSetOf(in.Attrs) != "set1" || reported[in.ID] > 0 {
			continue
		}
		c := in.Attrs[attrClusterID]
		unreported[c] = append(unreported[c], in)
	}
	for c, ins := range unreported {
		rec := recs[c]
		if rec == nil {
			if reported[markerID("set1", c)] > 0 {
				continue
			}
			// Reported under its first endpoint instance: one of its
			// cluster, with an ID below those of the others.
			lowest := slices.MinFunc(ins, func(a, b instance) int { return strings.Compare(a.ID, b.ID) }).ID
			if !slices.ContainsFunc(insts, func(in instance) bool {
				return in.Attrs[attrClusterID] == c && reported[in.ID] > 0 && in.ID < lowest
			}) {
				t.Fatalf("cluster %q has no record, and its instance %s was not reported, nor the cluster", c, lowest)
			}
			continue
		}
		markers := 0
		for _, in := range ins {
			if in.Attrs[attrRecordKind] == kindService {
				if markers++; markers > 1 {
					t.Fatalf("cluster %s: a second marker, %s, neither read nor reported", c, in.ID)
				}
				continue
			}
			raw := in.Attrs[attrIPv6]
			if raw == "" {
				raw = in.Attrs[attrIPv4]
			}
			addr, _, err := normalizeAddr(raw)
			if err != nil || !slices.ContainsFunc(rec.Endpoints, func(ep registry.Endpoint) bool { return ep.Address == addr }) {
				t.Fatalf("cluster %s: endpoint instance %s (address %q) neither read nor reported", c, in.ID, raw)
			}
		}
	}
}
