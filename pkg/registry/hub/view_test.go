package hub

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/clusterset/clusterset/pkg/registry"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// TestViewReadsARecordOncePerVersion feeds a reader's view the informer
// events of a record of 20 chunks, as the informer would deliver them.
//
//   - An honest writer's new version (its chunks, then its head, then the
//     deletion of the last version's chunks) is read once, with one onChange,
//     not at each of its 39 events: the chunks of a version the head does
//     not name change nothing.
//   - A head written before its chunks (by hand, by a hostile member) is
//     read once, when its last chunk arrives, not again from chunk 0 at the
//     arrival of each one: its broken chunk 1 is reported once.
func TestViewReadsARecordOncePerVersion(t *testing.T) {
	const chunks = 20
	reader, writer := viewTestRegistry(t, "cls-r"), viewTestRegistry(t, "cls-w")
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	var lines []string
	logger := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 1})
	changes := 0
	event := func(obj *hubv1alpha1.ClusterSetRecord, deleted bool) {
		t.Helper()
		var err error
		if deleted {
			err = store.Delete(obj)
		} else {
			err = store.Update(obj) // adds it when it is not there
		}
		if err != nil {
			t.Fatal(err)
		}
		reader.view.handle(logger, store, obj, func(registry.ServiceKey) { changes++ })
	}

	key := registry.ServiceKey{Namespace: "demo", Name: "big"}
	v1, v2 := writer.encoded(t, key, chunks, "v1"), writer.encoded(t, key, chunks, "v2")
	for _, obj := range v1[1:] {
		event(obj, false)
	}
	event(v1[0], false)
	changes = 0
	for _, obj := range v2[1:] {
		event(obj, false)
	}
	event(v2[0], false)
	for _, obj := range v1[1:] {
		event(obj, true)
	}
	if changes != 1 {
		t.Errorf("%d onChange calls for one new version of a record of %d chunks, want 1", changes, chunks)
	}
	if got := reader.view.records[key]["cls-w"]; len(got.Endpoints) != chunks || got.Endpoints[0].Zone != "v2" {
		t.Errorf("the view holds %d endpoints of zone %q, want %d of v2", len(got.Endpoints), got.Endpoints[0].Zone, chunks)
	}

	hostile := registry.ServiceKey{Namespace: "demo", Name: "head-first"}
	objs := writer.encoded(t, hostile, chunks, "h")
	objs[1].Spec.Endpoints = "{"
	for _, obj := range objs {
		event(obj, false)
	}
	if got := matching(lines, "cannot read a chunk", `"service"="head-first"`); len(got) != 1 {
		t.Errorf("chunk 1 of a head written before its chunks reported %d times, want once, when the last chunk arrived", len(got))
	}
}

// viewTestRegistry is a Registry of clusterID that never contacts a hub.
func viewTestRegistry(t *testing.T, clusterID string) *Registry {
	t.Helper()
	r, err := New(Options{ClusterSetID: "set", ClusterID: clusterID, Config: &rest.Config{Host: "https://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// encoded returns r's objects of a record of key with n endpoints of zone
// zone, one per chunk: the head first, then its chunks 1 to n-1.
func (r *Registry) encoded(t *testing.T, key registry.ServiceKey, n int, zone string) []*hubv1alpha1.ClusterSetRecord {
	t.Helper()
	rec := &registry.Record{ClusterSetID: r.setID, ClusterID: r.clusterID, Namespace: key.Namespace, Name: key.Name,
		Spec: registry.ServiceSpec{Type: registry.ClusterSetIP, Ports: []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}, ExportCreated: time.Now()}}
	for i := range n {
		rec.Endpoints = append(rec.Endpoints, registry.Endpoint{Address: fmt.Sprintf("10.0.0.%d", i+1), AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []registry.EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}}, Ready: true, Zone: zone})
	}
	enc, err := encode(rec, 1)
	if err != nil {
		t.Fatal(err)
	}
	head := r.object(headName(key), hubv1alpha1.Head, key)
	head.Spec.Record, head.Spec.Endpoints = string(enc.head), string(enc.chunks[0])
	objs := []*hubv1alpha1.ClusterSetRecord{head}
	for i := 1; i < len(enc.chunks); i++ {
		chunk := r.object(chunkName(key, enc.digest, i), hubv1alpha1.Chunk, key)
		chunk.Spec.Endpoints = string(enc.chunks[i])
		objs = append(objs, chunk)
	}
	return objs
}

func matching(lines []string, parts ...string) []string {
	var out []string
	for _, line := range lines {
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

// TestRecordInformerDropsManagedFields: the view's informer keeps records,
// listed or watched, without their managed fields.
func TestRecordInformerDropsManagedFields(t *testing.T) {
	record := func(name string) *hubv1alpha1.ClusterSetRecord {
		return &hubv1alpha1.ClusterSetRecord{ObjectMeta: metav1.ObjectMeta{
			Namespace: "clusterset-set-cls", Name: name, ResourceVersion: "1",
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "clusterset-controller", Operation: metav1.ManagedFieldsOperationApply}},
		}}
	}
	watcher := watch.NewFake()
	inf, err := newRecordInformer(listWatchWithoutWatchList{&cache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			return &hubv1alpha1.ClusterSetRecordList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: []hubv1alpha1.ClusterSetRecord{*record("listed")}}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) { return watcher, nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	go inf.RunWithContext(t.Context())
	if !cache.WaitForCacheSync(t.Context().Done(), inf.HasSynced) {
		t.Fatal("the informer did not sync")
	}
	watcher.Add(record("watched"))
	for _, name := range []string{"listed", "watched"} {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			obj, found, err := inf.GetStore().GetByKey("clusterset-set-cls/" + name)
			if err != nil {
				t.Fatal(err)
			}
			if found {
				if mf := obj.(*hubv1alpha1.ClusterSetRecord).ManagedFields; mf != nil {
					t.Errorf("%s record kept its managed fields: %v", name, mf)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s record in the informer's store after 10s", name)
			}
		}
	}
}

// listWatchWithoutWatchList lists and watches without client-go's WatchList
// semantics (a list as initial watch events), as a fake does.
type listWatchWithoutWatchList struct{ *cache.ListWatch }

func (listWatchWithoutWatchList) IsWatchListSemanticsUnSupported() bool { return true }
