package hub_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// TestHubHandWrittenRecords: member cls-x writes ClusterSetRecords by hand,
// with its own credentials in its own hub namespace (what a compromised
// member can do), malformed in every way the CRD's schema lets through, and
// 1,000 more garbage objects besides. Meanwhile cls-a publishes real records
// in the same Kubernetes namespace (one of them the service cls-x fills with
// bad endpoints) and in another. The running reader of a third member:
//
//   - never panics (a panic in the informer's handlers ends the test binary);
//   - reads cls-a's records exactly, including one written after all the
//     garbage, and reports cls-a's heartbeat as cls-a wrote it;
//   - reads of cls-x exactly what the code makes of each case: a record
//     that cannot be read is left out, or keeps the version read before
//     (invalid service ports), and a record with some bad endpoints keeps
//     the valid ones, with names that are not DNS names cleared; no
//     garbage endpoint reaches it;
//   - logs each kind of fault, and a bounded number of lines: one line for
//     a chunk of 5,000 invalid endpoints, not one per endpoint.
func TestHubHandWrittenRecords(t *testing.T) {
	began := time.Now()
	h := startHub(t)
	ctx := context.Background()
	const set = "hostile"
	demo := func(name string) registry.ServiceKey { return types.NamespacedName{Namespace: "demo", Name: name} }

	var logs logLines
	reader := h.registry(t, set, "cls-r", nil)
	runLogged(t, reader, logs.logger())
	healthy := h.registry(t, set, "cls-a", nil)
	attacker := h.registry(t, set, "cls-x", nil)
	x := &forger{t: t, c: newClient(t, h.member(t, set, "cls-x", nil)), ns: attacker.Namespace(), set: set, cluster: "cls-x"}

	// cls-a's records: a small one in demo, one of three chunks in demo,
	// one in another namespace; more come after the garbage.
	web, big, api := healthyRecord(set, demo("web"), 3, 0), healthyRecord(set, demo("big"), 2500, 1), healthyRecord(set, types.NamespacedName{Namespace: "other", Name: "api"}, 2, 2)
	for _, rec := range []*registry.Record{web, big, api} {
		if err := healthy.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := healthy.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	// cls-x first publishes a valid record, which its hand-written head
	// breaks below.
	ports := demo("ports")
	attackerPorts := healthyRecord(set, ports, 2, 9)
	attackerPorts.ClusterID = "cls-x"
	if err := attacker.Publish(ctx, attackerPorts); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cls-x's valid record of demo/ports read", func() error { return hasRecordOf(reader, ports, "cls-x") })

	cases := hostileCases(x, demo)
	for _, c := range cases {
		x.create(c.objs...)
	}
	// The head cls-x published, rewritten with service ports 0 and 70000.
	head := &hubv1alpha1.ClusterSetRecord{}
	if err := x.c.Get(ctx, client.ObjectKey{Namespace: x.ns, Name: "demo.ports"}, head); err != nil {
		t.Fatal(err)
	}
	head.Spec.Record = strings.Replace(head.Spec.Record, `"port":80`, `"port":0`, 1)
	head.Spec.Record = strings.Replace(head.Spec.Record, `"port":9000`, `"port":70000`, 1)
	if !strings.Contains(head.Spec.Record, `"port":0`) || !strings.Contains(head.Spec.Record, `"port":70000`) {
		t.Fatalf("the service ports of the head were not rewritten: %s", head.Spec.Record)
	}
	if err := x.c.Update(ctx, head); err != nil {
		t.Fatalf("cls-x rewriting its head: %v", err)
	}
	junk := x.junk(1000)
	written := len(junk) + 1
	for _, c := range cases {
		written += len(c.objs)
	}

	// cls-a's records written after every piece of garbage: once the
	// reader has them, it has handled all of the garbage (one watch,
	// in order).
	after := healthyRecord(set, demo("after"), 4, 3)
	api2 := healthyRecord(set, api.Key(), 3, 4)
	for _, rec := range []*registry.Record{after, api2} {
		if err := healthy.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "cls-a's record written after the garbage read", func() error {
		if err := sameRecordOf(reader, after, "cls-a"); err != nil {
			return err
		}
		return sameRecordOf(reader, api2, "cls-a")
	})
	t.Logf("%d objects written by hand; the reader caught up %v after the start", written, time.Since(began).Round(time.Millisecond))

	for _, rec := range []*registry.Record{web, big} {
		if err := sameRecordOf(reader, rec, "cls-a"); err != nil {
			t.Errorf("cls-a's record: %v", err)
		}
	}
	wantKeys := []registry.ServiceKey{api.Key(), after.Key(), big.Key(), ports, web.Key()}
	if err := sameRecordOf(reader, attackerPorts, "cls-x"); err != nil {
		t.Errorf("cls-x's record whose head now has invalid service ports: %v, want the version read before", err)
	}
	for _, c := range cases {
		if c.want == nil {
			if err := hasRecordOf(reader, c.key, "cls-x"); err == nil {
				t.Errorf("%s: read a record of cls-x for %s, want it left out", c.what, c.key)
			}
			continue
		}
		if !slices.Contains(wantKeys, c.key) {
			wantKeys = append(wantKeys, c.key)
		}
		if err := sameRecordOf(reader, c.want, "cls-x"); err != nil {
			t.Errorf("%s: %v", c.what, err)
		}
	}
	keys, err := reader.Keys()
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(wantKeys, registry.CompareKeys)
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("keys read: %v, want %v", keys, wantKeys)
	}
	for _, key := range keys {
		recs, _ := reader.Records(key)
		for _, rec := range recs {
			if rec.ClusterID != "cls-a" && rec.ClusterID != "cls-x" {
				t.Errorf("record of %s from cluster %q", key, rec.ClusterID)
			}
			for _, ep := range rec.Endpoints {
				if err := ep.Validate(); err != nil {
					t.Errorf("cls-x's endpoint of %s that cannot be imported read: %v", key, err)
				}
			}
		}
	}

	// Heartbeats: one in cls-x's namespace in cls-a's name changes nothing;
	// one in cls-x's own name, with a lease of -1 s and a renewal in 2100,
	// is cls-x's to make and read as written.
	beat := x.object(hub.HeartbeatName, hubv1alpha1.Heartbeat, "")
	beat.Spec.ClusterID = "cls-a"
	beat.Spec.RenewTime = &metav1.MicroTime{Time: time.Now().Add(-time.Hour)}
	live, err := reader.Liveness(ctx)
	if err != nil {
		t.Fatal(err)
	}
	renewed := live["cls-a"].RenewTime
	x.create(beat)
	// cls-a's next heartbeat, read after the forged one: the watch delivers
	// in order.
	if err := healthy.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cls-a's next heartbeat read", func() error {
		live, err = reader.Liveness(ctx)
		if err == nil && !live["cls-a"].RenewTime.After(renewed) {
			err = fmt.Errorf("cls-a's heartbeat read as %v", live["cls-a"])
		}
		return err
	})
	future := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	garbled := beat.DeepCopy()
	garbled.Spec.ClusterID, garbled.Spec.RenewTime = "cls-x", &metav1.MicroTime{Time: future}
	garbled.Spec.LeaseDurationSeconds, garbled.Spec.HolderIdentity = ptr.To[int32](-1), "\x00 not a UID"
	if hb := live["cls-a"]; time.Since(hb.RenewTime) > time.Minute {
		t.Errorf("cls-a's liveness after a heartbeat forged in its name: %v", hb)
	}
	if hb, ok := live["cls-x"]; ok {
		t.Errorf("liveness of cls-x, which wrote no heartbeat of its own yet: %v", hb)
	}
	if err := x.c.Update(ctx, garbled); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cls-x's own heartbeat read as written", func() error {
		live, err := reader.Liveness(ctx)
		if err != nil {
			return err
		}
		if hb := live["cls-x"]; !hb.RenewTime.Equal(future) || hb.LeaseDuration != -time.Second {
			return fmt.Errorf("cls-x's heartbeat read as %+v", hb)
		}
		if hb := live["cls-a"]; time.Since(hb.RenewTime) > time.Minute {
			return fmt.Errorf("cls-a's liveness is %v", hb)
		}
		return nil
	})

	// The log: each fault once at least, cls-a never, and a few lines per
	// object written, whatever the objects hold.
	for _, c := range cases {
		if len(c.logged) > 0 && len(logs.matching(c.logged...)) == 0 {
			t.Errorf("%s: no log line with %q", c.what, c.logged)
		}
	}
	if len(logs.matching("without the hostname or node name", `"service"="web"`, `"endpoints"=1`)) == 0 {
		t.Error("no log line for the hostname and node name cleared from an endpoint of cls-x")
	}
	if len(logs.matching("service ports cannot be imported", `"service"="ports"`)) == 0 {
		t.Error("no log line for cls-x's head with invalid service ports")
	}
	if got := logs.matching(`"sourceCluster"="cls-a"`); len(got) > 0 {
		t.Errorf("log lines about cls-a's records: %q", got[:min(len(got), 3)])
	}
	if got := logs.matching(`"service"="flood"`); len(got) > 2 {
		t.Errorf("%d log lines about one chunk of 5,000 invalid endpoints, want one per reading: %q", len(got), got[:3])
	}
	if n := logs.count(); n > 2*written {
		t.Errorf("%d log lines for %d objects written by hand", n, written)
	}
	t.Logf("%d log lines for %d objects; %v in all", logs.count(), written, time.Since(began).Round(time.Millisecond))
}

// hostileCase is one way to get a record wrong, as cls-x writes it.
type hostileCase struct {
	what string
	key  registry.ServiceKey
	objs []*hubv1alpha1.ClusterSetRecord
	// want is the reader's record of cls-x, nil when it must be left out.
	want *registry.Record
	// logged is what one log line must contain, all of it; nothing when
	// the reader cannot see the objects at all.
	logged []string
}

func hostileCases(x *forger, demo func(string) registry.ServiceKey) []hostileCase {
	good := wireChunk("d1", 0, goodPortSets, `[{"a":"10.9.0.1","c":3}]`)
	headOnly := func(name, record, endpoints string) []*hubv1alpha1.ClusterSetRecord {
		return []*hubv1alpha1.ClusterSetRecord{x.head(demo(name), record, endpoints)}
	}
	assembly := func(msg, name string) []string { return []string{msg, `"service"="` + name + `"`} }
	ignored := func(msg, objName string) []string { return []string{msg, x.ns + "/" + objName} }
	var cases []hostileCase
	add := func(c hostileCase) { cases = append(cases, c) }

	add(hostileCase{what: "head that is not JSON", key: demo("bad-json"),
		objs: headOnly("bad-json", `{"v":1,"digest":`, good), logged: assembly("cannot read the record head", "bad-json")})
	add(hostileCase{what: "head of an unknown wire version", key: demo("version-2"),
		objs: headOnly("version-2", wireHead(2, "d1", 1, httpPorts), good), logged: assembly("cannot read the record head", "version-2")})
	add(hostileCase{what: "head of zero chunks", key: demo("no-chunks"),
		objs: headOnly("no-chunks", wireHead(1, "d1", 0, httpPorts), good), logged: assembly("cannot read the record head", "no-chunks")})
	add(hostileCase{what: "chunk 0 of another digest", key: demo("wrong-digest"),
		objs: headOnly("wrong-digest", wireHead(1, "d2", 1, httpPorts), good), logged: assembly("cannot read a chunk", "wrong-digest")})
	wrongIndex := demo("wrong-index")
	add(hostileCase{what: "chunk at another index than its name's", key: wrongIndex,
		objs: []*hubv1alpha1.ClusterSetRecord{
			x.head(wrongIndex, wireHead(1, "d1", 2, httpPorts), good),
			x.chunk(wrongIndex, "d1", 1, wireChunk("d1", 2, goodPortSets, `[{"a":"10.9.0.2"}]`)),
		}, logged: assembly("cannot read a chunk", "wrong-index")})
	otherVersion := demo("other-version")
	add(hostileCase{what: "chunks of another version than the head's", key: otherVersion,
		objs: []*hubv1alpha1.ClusterSetRecord{
			x.head(otherVersion, wireHead(1, "d2", 2, httpPorts), wireChunk("d2", 0, goodPortSets, `[{"a":"10.9.0.1"}]`)),
			x.chunk(otherVersion, "d1", 1, wireChunk("d1", 1, goodPortSets, `[{"a":"10.9.0.2"}]`)),
		}, logged: assembly("a chunk of the newest version is missing", "other-version")})
	missing := demo("missing-chunk")
	add(hostileCase{what: "a missing chunk", key: missing,
		objs: []*hubv1alpha1.ClusterSetRecord{
			x.head(missing, wireHead(1, "d1", 3, httpPorts), good),
			x.chunk(missing, "d1", 1, wireChunk("d1", 1, goodPortSets, `[{"a":"10.9.0.2"}]`)),
		}, logged: assembly("a chunk of the newest version is missing", "missing-chunk")})
	add(hostileCase{what: "head of a billion chunks", key: demo("billion"),
		objs: headOnly("billion", wireHead(1, "d1", 1_000_000_000, httpPorts), good), logged: assembly("a chunk of the newest version is missing", "billion")})
	add(hostileCase{what: "endpoint of a port set that does not exist", key: demo("port-set"),
		objs:   headOnly("port-set", wireHead(1, "d1", 1, httpPorts), wireChunk("d1", 0, goodPortSets, `[{"a":"10.9.0.1","ps":3}]`)),
		logged: assembly("cannot read a chunk", "port-set")})
	add(hostileCase{what: "service ports out of range, of an unknown protocol", key: demo("bad-ports"),
		objs:   headOnly("bad-ports", wireHead(1, "d1", 1, `[{"port":0},{"port":70000},{"protocol":"ICMP","port":80}]`), good),
		logged: assembly("service ports cannot be imported", "bad-ports")})

	// In cls-a's service, beside cls-a's record: invalid endpoints of every
	// kind and three valid ones, one with names that are not DNS names.
	mixed := `[{"a":"not-an-ip"},{"a":"10.9.1.1","ps":1},{"a":"10.9.1.2","ps":2},{"a":"10.9.1.3","ps":3},` +
		`{"a":"fd00::1"},{"a":"127.0.0.1"},{"a":"169.254.0.1"},{"a":"10.9.1.4","t":"FQDN"},{"a":"010.9.1.5"},` +
		`{"a":"10.9.1.6","c":1},{"a":"10.9.1.7","c":3,"h":"Not_A_Label","n":"bad node!","z":"z1"},{"a":"fd00:0::8","t":"IPv6"}]`
	mixedSets := `[[{"n":"http","port":8080}],[{"n":"http","port":0}],[{"n":"http","port":70000}],[{"n":"http","p":"ICMP","port":8080}]]`
	add(hostileCase{what: "invalid endpoints beside valid ones, in cls-a's service", key: demo("web"),
		objs: headOnly("web", wireHead(1, "d1", 1, httpPorts), wireChunk("d1", 0, mixedSets, mixed)),
		want: attackerRecord(demo("web"),
			registry.Endpoint{Address: "10.9.1.6", Ready: true},
			registry.Endpoint{Address: "10.9.1.7", Ready: true, Serving: true, Zone: "z1"},
			registry.Endpoint{Address: "fd00::8", AddressType: discoveryv1.AddressTypeIPv6}),
		logged: assembly("Leaving out endpoints that cannot be imported", "web")})
	var flood strings.Builder
	flood.WriteString(`[{"a":"10.9.2.1","c":1}`)
	for range 5000 {
		flood.WriteString(`,{"a":"x"}`)
	}
	flood.WriteString("]")
	add(hostileCase{what: "5,000 invalid endpoints and a valid one", key: demo("flood"),
		objs:   headOnly("flood", wireHead(1, "d1", 1, httpPorts), wireChunk("d1", 0, goodPortSets, flood.String())),
		want:   attackerRecord(demo("flood"), registry.Endpoint{Address: "10.9.2.1", Ready: true}),
		logged: assembly("Leaving out endpoints that cannot be imported", "flood")})

	// Identity: heads that name another cluster or clusterset than the
	// namespace's.
	for _, forged := range []struct{ name, set, cluster string }{{"big", x.set, "cls-a"}, {"reader", x.set, "cls-r"}, {"api", "other-set", "cls-x"}} {
		obj := x.head(demo(forged.name), wireHead(1, "d1", 1, httpPorts), good)
		obj.Spec.ClusterSetID, obj.Spec.ClusterID = forged.set, forged.cluster
		add(hostileCase{what: fmt.Sprintf("head of cluster %s in clusterset %s", forged.cluster, forged.set), key: demo(forged.name),
			objs: []*hubv1alpha1.ClusterSetRecord{obj}, logged: ignored("not in the namespace of the cluster it names", obj.Name)})
	}
	// Labels: only the clusterset label selects; the spec decides the rest.
	unwatched := x.head(demo("unwatched"), wireHead(1, "d1", 1, httpPorts), good)
	unwatched.Labels[hub.LabelClusterSet] = "other-set"
	add(hostileCase{what: "head labelled with another clusterset", key: demo("unwatched"), objs: []*hubv1alpha1.ClusterSetRecord{unwatched}})
	mislabeled := x.head(demo("mislabeled"), wireHead(1, "d1", 1, httpPorts), good)
	mislabeled.Labels[hub.LabelKind], mislabeled.Labels[hub.LabelRecord] = hub.KindHeartbeat, "nonsense"
	delete(mislabeled.Labels, hub.LabelManagedBy)
	add(hostileCase{what: "head labelled as a heartbeat of another service", key: demo("mislabeled"), objs: []*hubv1alpha1.ClusterSetRecord{mislabeled},
		want: attackerRecord(demo("mislabeled"), registry.Endpoint{Address: "10.9.0.1", Ready: true, Serving: true})})
	// Names: a service that is not the one of the object's name, or no
	// service key at all.
	for _, m := range []struct{ name, service string }{{"demo.one", "demo/two"}, {"demo.upper", "Demo/UPPER"}, {"noslash", "noslash"}, {hub.HeartbeatName + "-not", "demo/beat"}} {
		obj := x.object(m.name, hubv1alpha1.Head, m.service)
		obj.Spec.Record, obj.Spec.Endpoints = wireHead(1, "d1", 1, httpPorts), good
		add(hostileCase{what: fmt.Sprintf("head %s of service %s", m.name, m.service), key: demo(strings.TrimPrefix(m.service, "demo/")),
			objs: []*hubv1alpha1.ClusterSetRecord{obj}, logged: ignored("does not match its name", m.name)})
	}
	// A heartbeat under a record's name: no record, and no liveness.
	stray := x.object("demo.beat", hubv1alpha1.Heartbeat, "demo/beat")
	stray.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	add(hostileCase{what: "heartbeat under a record's name", key: demo("beat"), objs: []*hubv1alpha1.ClusterSetRecord{stray}})
	return cases
}

// junk writes n objects that no reader can use, spread over n services of
// namespace junk and over five kinds (a head that is not JSON, a chunk
// without a head, a head whose chunk is missing, a head in cls-a's name, a
// head whose chunk 0 is of another version), 16 at a time.
func (f *forger) junk(n int) []*hubv1alpha1.ClusterSetRecord {
	objs := make([]*hubv1alpha1.ClusterSetRecord, n)
	for i := range objs {
		key := types.NamespacedName{Namespace: "junk", Name: fmt.Sprintf("s-%d", i)}
		chunk := wireChunk("d1", 0, goodPortSets, `[{"a":"10.8.0.1"}]`)
		switch i % 5 {
		case 0:
			objs[i] = f.head(key, "{{{", chunk)
		case 1:
			objs[i] = f.chunk(key, "d1", 1, chunk)
		case 2:
			objs[i] = f.head(key, wireHead(1, "d1", 2, httpPorts), chunk)
		case 3:
			objs[i] = f.head(key, wireHead(1, "d1", 1, httpPorts), chunk)
			objs[i].Spec.ClusterID = "cls-a"
		case 4:
			objs[i] = f.head(key, wireHead(1, "d0", 1, httpPorts), chunk)
		}
	}
	work := make(chan *hubv1alpha1.ClusterSetRecord)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for obj := range work {
				f.create(obj)
			}
		})
	}
	for _, obj := range objs {
		work <- obj
	}
	close(work)
	wg.Wait()
	return objs
}

// forger writes ClusterSetRecords by hand with a member's credentials in
// its namespace, with the labels and IDs the backend would give them unless
// a case changes them.
type forger struct {
	t                *testing.T
	c                client.Client
	ns, set, cluster string
}

func (f *forger) object(name string, typ hubv1alpha1.RecordType, service string) *hubv1alpha1.ClusterSetRecord {
	kind := map[hubv1alpha1.RecordType]string{hubv1alpha1.Head: hub.KindRecord, hubv1alpha1.Chunk: hub.KindChunk, hubv1alpha1.Heartbeat: hub.KindHeartbeat}[typ]
	return &hubv1alpha1.ClusterSetRecord{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns, Labels: map[string]string{
			hub.LabelClusterSet: f.set, hub.LabelKind: kind, hub.LabelManagedBy: "clusterset",
		}},
		Spec: hubv1alpha1.ClusterSetRecordSpec{Type: typ, ClusterSetID: f.set, ClusterID: f.cluster, Service: service},
	}
}

func (f *forger) head(key registry.ServiceKey, record, endpoints string) *hubv1alpha1.ClusterSetRecord {
	obj := f.object(key.Namespace+"."+key.Name, hubv1alpha1.Head, key.String())
	obj.Spec.Record, obj.Spec.Endpoints = record, endpoints
	return obj
}

func (f *forger) chunk(key registry.ServiceKey, digest string, index int, endpoints string) *hubv1alpha1.ClusterSetRecord {
	obj := f.object(fmt.Sprintf("%s.%s.%s.%d", key.Namespace, key.Name, digest, index), hubv1alpha1.Chunk, key.String())
	obj.Spec.Endpoints = endpoints
	return obj
}

func (f *forger) create(objs ...*hubv1alpha1.ClusterSetRecord) {
	f.t.Helper()
	for _, obj := range objs {
		if err := f.c.Create(context.Background(), obj); err != nil {
			f.t.Errorf("%s writing %s/%s: %v", f.cluster, obj.Namespace, obj.Name, err)
		}
	}
}

// The wire format of encoding.go, written out by hand.
const (
	httpPorts     = `[{"name":"http","protocol":"TCP","port":80}]`
	goodPortSets  = `[[{"n":"http","port":8080}]]`
	exportCreated = "2024-05-01T10:00:00Z"
)

func wireHead(version int, digest string, chunks int, ports string) string {
	return fmt.Sprintf(`{"v":%d,"digest":%q,"chunks":%d,"spec":{"type":"ClusterSetIP","ports":%s,"exportCreated":%q}}`, version, digest, chunks, ports, exportCreated)
}

func wireChunk(digest string, index int, portSets, endpoints string) string {
	return fmt.Sprintf(`{"digest":%q,"index":%d,"portSets":%s,"endpoints":%s}`, digest, index, portSets, endpoints)
}

// attackerRecord is the record a reader makes of a hand-written head of
// wireHead(1, …, httpPorts) whose endpoints are eps (IPv4 unless they say
// otherwise, on port set goodPortSets).
func attackerRecord(key registry.ServiceKey, eps ...registry.Endpoint) *registry.Record {
	created, _ := time.Parse(time.RFC3339, exportCreated)
	rec := &registry.Record{ClusterSetID: "hostile", ClusterID: "cls-x", Namespace: key.Namespace, Name: key.Name,
		Spec: registry.ServiceSpec{Type: registry.ClusterSetIP, Ports: []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}, ExportCreated: created}}
	for _, ep := range eps {
		if ep.AddressType == "" {
			ep.AddressType = discoveryv1.AddressTypeIPv4
		}
		ep.Ports = []registry.EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}}
		rec.Endpoints = append(rec.Endpoints, ep)
	}
	return rec
}

// healthyRecord is cls-a's record of key with n endpoints, every fifth IPv6,
// all of them in the canonical form readers return.
func healthyRecord(setID string, key registry.ServiceKey, n, mark int) *registry.Record {
	rec := &registry.Record{ClusterSetID: setID, ClusterID: "cls-a", Namespace: key.Namespace, Name: key.Name,
		Spec: registry.ServiceSpec{
			Type:          registry.ClusterSetIP,
			Ports:         []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}, {Name: "grpc", Protocol: corev1.ProtocolTCP, Port: 9000}},
			ExportCreated: time.Date(2024, 5, 1, 9, 0, mark, 0, time.UTC),
		}}
	for i := range n {
		ep := registry.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", mark, i/256, i%256), AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []registry.EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}, {Name: "grpc", Protocol: corev1.ProtocolTCP, Port: 9000}},
			Ready: true, Serving: true, Hostname: fmt.Sprintf("pod-%d", i), Zone: "zone-a"}
		if i%5 == 4 {
			ep.Address, ep.AddressType = fmt.Sprintf("fd00:%x::%x", mark+1, i+1), discoveryv1.AddressTypeIPv6
		}
		rec.Endpoints = append(rec.Endpoints, ep)
	}
	return rec
}

// sameRecordOf reports how the reader's record of want's service from
// cluster differs from want.
func sameRecordOf(r registry.Registry, want *registry.Record, cluster string) error {
	recs, err := r.Records(want.Key())
	if err != nil {
		return err
	}
	for _, got := range recs {
		if got.ClusterID != cluster {
			continue
		}
		w := *want
		w.ClusterID = cluster
		w.Spec.ExportCreated = w.Spec.ExportCreated.UTC()
		got.Spec.ExportCreated = got.Spec.ExportCreated.UTC()
		if !registry.SameContent(&got, &w) {
			return fmt.Errorf("record of %s from %s:\n got  %+v\n want %+v", want.Key(), cluster, got, w)
		}
		return nil
	}
	return fmt.Errorf("no record of %s from %s among %d", want.Key(), cluster, len(recs))
}

func hasRecordOf(r registry.Registry, key registry.ServiceKey, cluster string) error {
	recs, err := r.Records(key)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.ClusterID == cluster {
			return nil
		}
	}
	return fmt.Errorf("no record of %s from %s", key, cluster)
}

// runLogged runs r until the test ends, logging to logger, and waits until
// it has synced.
func runLogged(t *testing.T, r registry.Registry, logger logr.Logger) {
	t.Helper()
	ctx, cancel := context.WithCancel(log.IntoContext(context.Background(), logger))
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx, func(registry.ServiceKey) {}) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "sync", func() error {
		if !r.HasSynced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
}

// logLines keeps every line a logger writes, V(1) included.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(_, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{Verbosity: 1})
}

// matching returns the lines that contain every one of parts.
func (l *logLines) matching(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

func (l *logLines) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}
