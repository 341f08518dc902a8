package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

func record(setID, clusterID string, key registry.ServiceKey, n int, mark string) *registry.Record {
	rec := &registry.Record{
		ClusterSetID: setID, ClusterID: clusterID, Namespace: key.Namespace, Name: key.Name,
		Spec: registry.ServiceSpec{
			Type:          registry.ClusterSetIP,
			Ports:         []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}, {Name: "grpc", Protocol: corev1.ProtocolTCP, Port: 9000}},
			IPFamilies:    []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			ExportCreated: time.Now(),
		},
	}
	for i := range n {
		ep := registry.Endpoint{
			Address: fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256), AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []registry.EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}, {Name: "grpc", Protocol: corev1.ProtocolTCP, Port: 9000}},
			Ready: true, Serving: true,
			Hostname: fmt.Sprintf("pod-%d", i), NodeName: fmt.Sprintf("node-%d.example.internal", i%50), Zone: mark,
		}
		if i%5 == 4 {
			ep.Address, ep.AddressType = fmt.Sprintf("fd00:10:%x::%x", i/65536, i%65536), discoveryv1.AddressTypeIPv6
		}
		rec.Endpoints = append(rec.Endpoints, ep)
	}
	return rec
}

func run(t *testing.T, r registry.Registry, onChange func(registry.ServiceKey)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx, onChange) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "sync", func() error {
		if !r.HasSynced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
}

// TestHubRBACIsolation shows that a member's credentials cannot create,
// change or delete another member's records or heartbeat, that they read
// nothing of the hub but ClusterSetRecords (no ConfigMaps, Secrets or Leases
// in any namespace, its own included), and that a record a member forges in
// its own namespace in another cluster's name is ignored.
func TestHubRBACIsolation(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	const set = "rbac"
	key := types.NamespacedName{Namespace: "demo", Name: "web"}
	regA := h.registry(t, set, "cls-a", nil)
	regB := h.registry(t, set, "cls-b", nil)
	regC := h.registry(t, set, "cls-c", nil)
	run(t, regC, func(registry.ServiceKey) {})
	recB := record(set, "cls-b", key, 3, "b")
	if err := regB.Publish(ctx, recB); err != nil {
		t.Fatal(err)
	}
	if err := regB.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	// An unrelated workload's objects on the hub.
	const workload = "workload"
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workload}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: workload}, Data: map[string]string{"k": "v"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "password", Namespace: workload}, StringData: map[string]string{"k": "v"}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "leader", Namespace: workload}},
	} {
		if err := h.adminClient.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	cfgA := h.member(t, set, "cls-a", nil)
	a := newClient(t, cfgA)
	nsA, nsB := hub.NamespaceName(set, "cls-a"), hub.NamespaceName(set, "cls-b")

	// Reading records is allowed (every member reads every record).
	headB := &hubv1alpha1.ClusterSetRecord{}
	if err := a.Get(ctx, client.ObjectKey{Namespace: nsB, Name: "demo.web"}, headB); err != nil {
		t.Fatalf("cls-a reading cls-b's record: %v", err)
	}
	beatB := &hubv1alpha1.ClusterSetRecord{}
	if err := a.Get(ctx, client.ObjectKey{Namespace: nsB, Name: hub.HeartbeatName}, beatB); err != nil {
		t.Fatalf("cls-a reading cls-b's heartbeat: %v", err)
	}
	var all hubv1alpha1.ClusterSetRecordList
	if err := a.List(ctx, &all); err != nil {
		t.Fatalf("cls-a listing every record: %v", err)
	}

	forbidden := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) {
			t.Errorf("cls-a %s: got %v, want Forbidden", what, err)
		}
	}
	// Nothing else of the hub can be read, anywhere.
	for _, ns := range []string{workload, nsA, nsB, metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespaceAll} {
		where := "in namespace " + ns
		if ns == metav1.NamespaceAll {
			where = "in all namespaces"
		}
		forbidden("listing ConfigMaps "+where, a.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(ns)))
		forbidden("listing Secrets "+where, a.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)))
		forbidden("listing Leases "+where, a.List(ctx, &coordinationv1.LeaseList{}, client.InNamespace(ns)))
	}
	forbidden("reading a ConfigMap", a.Get(ctx, client.ObjectKey{Namespace: workload, Name: "settings"}, &corev1.ConfigMap{}))
	forbidden("reading a Secret", a.Get(ctx, client.ObjectKey{Namespace: workload, Name: "password"}, &corev1.Secret{}))
	forbidden("reading a Lease", a.Get(ctx, client.ObjectKey{Namespace: workload, Name: "leader"}, &coordinationv1.Lease{}))
	forbidden("reading the root CA ConfigMap of its own namespace", a.Get(ctx, client.ObjectKey{Namespace: nsA, Name: "kube-root-ca.crt"}, &corev1.ConfigMap{}))
	ak, err := kubernetes.NewForConfig(cfgA)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ak.CoreV1().ConfigMaps(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{})
	forbidden("watching ConfigMaps", err)
	_, err = ak.CoreV1().Secrets(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{})
	forbidden("watching Secrets", err)

	// No record or heartbeat of cls-b can be written.
	forged := headB.DeepCopy()
	forged.ResourceVersion, forged.UID = "", ""
	forged.Name = "demo.forged"
	forbidden("creating a record in cls-b's namespace", a.Create(ctx, forged))
	changed := headB.DeepCopy()
	changed.Spec.Endpoints = `{"digest":"x","index":0}`
	forbidden("updating cls-b's record", a.Update(ctx, changed))
	forbidden("patching cls-b's record", a.Patch(ctx, headB.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"endpoints":"{}"}}`))))
	forbidden("deleting cls-b's record", a.Delete(ctx, headB.DeepCopy()))
	forbidden("deleting all of cls-b's records", a.DeleteAllOf(ctx, &hubv1alpha1.ClusterSetRecord{}, client.InNamespace(nsB)))
	staleBeat := beatB.DeepCopy()
	staleBeat.Spec.RenewTime = &metav1.MicroTime{Time: time.Now().Add(-time.Hour)}
	forbidden("updating cls-b's heartbeat", a.Update(ctx, staleBeat))
	forbidden("patching cls-b's heartbeat", a.Patch(ctx, beatB.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"renewTime":"2000-01-01T00:00:00.000000Z"}}`))))
	forbidden("deleting cls-b's heartbeat", a.Delete(ctx, beatB.DeepCopy()))
	// Nor anything else, its own namespace included.
	forbidden("creating a ConfigMap in its own namespace", a.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: nsA}}))
	forbidden("creating a Lease in its own namespace", a.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: nsA}}))
	forbidden("creating a ConfigMap in namespace default", a.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: metav1.NamespaceDefault}}))
	forbidden("creating a namespace", a.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "clusterset-rbac-x"}}))
	forbidden("listing cls-b's role bindings", a.List(ctx, &rbacv1.RoleBindingList{}, client.InNamespace(nsB)))
	_, err = ak.Discovery().RESTClient().Delete().AbsPath("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clustersetrecords.hub.clusterset.dev").Do(ctx).Raw()
	forbidden("deleting the ClusterSetRecord CRD", err)

	// The only thing cls-a can do: write records in its own namespace. There
	// it forges a record that claims to be cls-b's, which readers ignore,
	// and publishes one of its own, which they see.
	forged.Namespace = nsA
	forged.Name = "demo.web"
	if err := a.Create(ctx, forged); err != nil {
		t.Fatalf("cls-a writing in its own namespace: %v", err)
	}
	own := record(set, "cls-a", types.NamespacedName{Namespace: "demo", Name: "own"}, 2, "a")
	if err := regA.Publish(ctx, own); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cls-a's own record seen", func() error {
		recs, err := regC.Records(own.Key())
		if err != nil || len(recs) != 1 {
			return fmt.Errorf("%d records, %v", len(recs), err)
		}
		return nil
	})
	recs, err := regC.Records(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].ClusterID != "cls-b" || recs[0].Endpoints[0].Zone != "b" {
		t.Errorf("records of %s: got %d (%v), want cls-b's only", key, len(recs), recs)
	}
	live, err := regC.Liveness(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(live["cls-b"].RenewTime) > time.Minute {
		t.Errorf("cls-b's liveness %v was changed", live["cls-b"])
	}
	if _, ok := live["cls-a"]; ok {
		t.Errorf("liveness of cls-a, which never sent a heartbeat: %v", live)
	}
}

// TestHubLargeRecord publishes a 5,000-endpoint record (two ports, hostnames,
// node names and zones, a fifth of them IPv6): it is split into five objects,
// each far below the API server's object size limit, and is read back whole.
func TestHubLargeRecord(t *testing.T) {
	const maxObject = 512 << 10
	h := startHub(t)
	ctx := context.Background()
	const set = "large"
	key := types.NamespacedName{Namespace: "demo", Name: "big"}
	writer := h.registry(t, set, "cls-a", nil)
	reader := h.registry(t, set, "cls-b", nil)
	run(t, reader, func(registry.ServiceKey) {})

	rec := record(set, "cls-a", key, 5000, "zone-a")
	if err := writer.Publish(ctx, rec); err != nil {
		t.Fatal(err)
	}
	var list hubv1alpha1.ClusterSetRecordList
	if err := h.adminClient.List(ctx, &list, client.InNamespace(writer.Namespace())); err != nil {
		t.Fatal(err)
	}
	var objects, total int
	for _, obj := range list.Items {
		if !strings.HasPrefix(obj.Name, "demo.big") {
			continue
		}
		raw, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		objects++
		total += len(raw)
		t.Logf("%s (%s): %d bytes", obj.Name, obj.Spec.Type, len(raw))
		if len(raw) > maxObject {
			t.Errorf("%s is %d bytes, more than %d", obj.Name, len(raw), maxObject)
		}
	}
	if objects != 5 {
		t.Errorf("the record is in %d objects, want 5 of at most 1,000 endpoints", objects)
	}
	t.Logf("5,000 endpoints in %d objects, %d bytes in all (%d per endpoint)", objects, total, total/5000)
	eventually(t, "large record read back", func() error {
		recs, err := reader.Records(key)
		if err != nil || len(recs) != 1 {
			return fmt.Errorf("%d records, %v", len(recs), err)
		}
		if got := len(recs[0].Endpoints); got != 5000 {
			return fmt.Errorf("%d endpoints", got)
		}
		return nil
	})

	// Shrinking to one chunk deletes the other four.
	small := record(set, "cls-a", key, 10, "zone-a")
	if err := writer.Publish(ctx, small); err != nil {
		t.Fatal(err)
	}
	if err := h.adminClient.List(ctx, &list, client.InNamespace(writer.Namespace())); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Errorf("after shrinking to 10 endpoints: %d ClusterSetRecords left, want 1", len(list.Items))
	}
}

// TestHubReadersNeverSeeHalfUpdatedRecords publishes versions of a
// 2,500-endpoint record (three chunks) in a row. Every endpoint of version v
// has zone "v<v>" and version v has 2,500-v endpoints; every read, made after
// every onChange and in a tight loop besides, must show one whole version.
func TestHubReadersNeverSeeHalfUpdatedRecords(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	const set = "consistent"
	key := types.NamespacedName{Namespace: "demo", Name: "big"}
	writer := h.registry(t, set, "cls-a", nil)
	reader := h.registry(t, set, "cls-b", nil)

	var mu sync.Mutex
	var bad []string
	seen := map[string]bool{}
	check := func() {
		recs, err := reader.Records(key)
		if err != nil || len(recs) == 0 {
			return
		}
		eps := recs[0].Endpoints
		zone := eps[0].Zone
		var v int
		fmt.Sscanf(zone, "v%d", &v)
		mu.Lock()
		defer mu.Unlock()
		seen[zone] = true
		if len(eps) != 2500-v {
			bad = append(bad, fmt.Sprintf("version %s with %d endpoints", zone, len(eps)))
		}
		for _, ep := range eps {
			if ep.Zone != zone {
				bad = append(bad, fmt.Sprintf("versions %s and %s mixed", zone, ep.Zone))
				break
			}
		}
	}
	run(t, reader, func(registry.ServiceKey) { check() })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				check()
			}
		}
	})
	const versions = 8
	for v := range versions {
		if err := writer.Publish(ctx, record(set, "cls-a", key, 2500-v, fmt.Sprintf("v%d", v))); err != nil {
			t.Fatal(err)
		}
	}
	last := fmt.Sprintf("v%d", versions-1)
	eventually(t, "last version seen", func() error {
		mu.Lock()
		defer mu.Unlock()
		if !seen[last] {
			return fmt.Errorf("seen %v", seen)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	// onChange may still run: the reader stops when the test ends.
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("half-updated reads: %v", bad[:min(len(bad), 5)])
	}
	t.Logf("versions read: %d of %d", len(seen), versions)
}

// TestHubPublishBackToAnEarlierVersion publishes A, then B, then A again
// while the writer's own view still shows A (its watch is held). The hub must
// end with A: a cache that lags behind this writer's own writes must not turn
// the last publish into a no-op (the ABA case).
func TestHubPublishBackToAnEarlierVersion(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	const set = "aba"
	key := types.NamespacedName{Namespace: "demo", Name: "flip"}
	var o outage
	writer := h.registry(t, set, "cls-a", &o)
	reader := h.registry(t, set, "cls-b", nil)
	run(t, writer, func(registry.ServiceKey) {})
	run(t, reader, func(registry.ServiceKey) {})
	zones := func(r registry.Registry) string {
		recs, err := r.Records(key)
		if err != nil || len(recs) != 1 || len(recs[0].Endpoints) == 0 {
			return fmt.Sprintf("%d records (%v)", len(recs), err)
		}
		return recs[0].Endpoints[0].Zone
	}
	want := func(r registry.Registry, who, zone string) {
		t.Helper()
		eventually(t, who+" sees "+zone, func() error {
			if got := zones(r); got != zone {
				return fmt.Errorf("%s sees %s", who, got)
			}
			return nil
		})
	}

	// caughtUp waits until the writer's view holds every write made so far:
	// the watch delivers in order, so a marker written last shows that.
	caughtUp := func(round int) {
		t.Helper()
		mark := types.NamespacedName{Namespace: "demo", Name: fmt.Sprintf("marker-%d", round)}
		if err := writer.Publish(ctx, record(set, "cls-a", mark, 1, "marker")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "writer sees "+mark.Name, func() error {
			if recs, err := writer.Records(mark); err != nil || len(recs) != 1 {
				return fmt.Errorf("%d records (%v)", len(recs), err)
			}
			return nil
		})
	}

	a := record(set, "cls-a", key, 3, "zone-a")
	for round, b := range []*registry.Record{record(set, "cls-a", key, 3, "zone-b"), record(set, "cls-a", key, 3000, "zone-b")} {
		if err := writer.Publish(ctx, a); err != nil {
			t.Fatal(err)
		}
		caughtUp(round)
		want(writer, "writer", "zone-a")
		release := o.holdWatches()
		t.Cleanup(release)
		if err := writer.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
		want(reader, "reader", "zone-b")
		held := func(step string) {
			t.Helper()
			if got := zones(writer); got != "zone-a" {
				t.Fatalf("round %d, %s: the writer's watch was not held: its view shows %s", round, step, got)
			}
		}
		held("after B")
		if err := writer.Publish(ctx, a); err != nil {
			t.Fatal(err)
		}
		release()
		want(reader, "reader", "zone-a")
		caughtUp(10 + round)
		// Withdraw and publish A again while the view still holds A: the
		// record must come back.
		release = o.holdWatches()
		t.Cleanup(release)
		if err := writer.Withdraw(ctx, key); err != nil {
			t.Fatal(err)
		}
		want(reader, "reader", "0 records (<nil>)")
		held("after the withdrawal")
		if err := writer.Publish(ctx, a); err != nil {
			t.Fatal(err)
		}
		release()
		want(reader, "reader", "zone-a")
	}
}
