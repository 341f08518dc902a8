package hub

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/clusterset/clusterset/pkg/registry"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// logEntry is one line a logSink received: its message, whether it was an
// error, and its key-value pairs.
type logEntry struct {
	msg   string
	isErr bool
	kv    []any
}

// logSink keeps every line, at every verbosity.
type logSink struct{ lines *[]logEntry }

func (s logSink) Init(logr.RuntimeInfo)          {}
func (s logSink) Enabled(int) bool               { return true }
func (s logSink) WithValues(...any) logr.LogSink { return s }
func (s logSink) WithName(string) logr.LogSink   { return s }
func (s logSink) Info(_ int, msg string, kv ...any) {
	*s.lines = append(*s.lines, logEntry{msg: msg, kv: kv})
}
func (s logSink) Error(_ error, msg string, kv ...any) {
	*s.lines = append(*s.lines, logEntry{msg: msg, isErr: true, kv: kv})
}

// value returns the value of key in e's key-value pairs.
func (e logEntry) value(key string) (any, bool) {
	for i := 0; i+1 < len(e.kv); i += 2 {
		if e.kv[i] == key {
			return e.kv[i+1], true
		}
	}
	return nil, false
}

// FuzzAssemble feeds the view's assembly of a record arbitrary heads and up
// to two more chunks, as member cls-w could write them in its namespace of
// the hub (spec.record of the head, spec.endpoints of the head and of chunk
// objects 1 and 2, named after the digest the head gives; an empty chunk
// is one not written), through a cache.Store as the informer's. The view
// holds a record of cls-w read before. Whatever the input, assemble does
// not panic, and:
//   - a record it reads into the view has service ports and endpoints the
//     API server accepts (ValidatePorts, Endpoint.Validate), the head's
//     chunk count of chunks, and every endpoint of those chunks either
//     read or counted in the one log line that reports those left out;
//   - otherwise the view keeps the record it had, and a log line says why.
func FuzzAssemble(f *testing.F) {
	head := wireHeadJSON(1, "d1", 2, `[{"name":"http","protocol":"TCP","port":80}]`)
	sets := `[[{"n":"http","port":8080}]]`
	f.Add(head, wireChunkJSON("d1", 0, sets, `[{"a":"10.9.0.1","c":3}]`), wireChunkJSON("d1", 1, sets, `[{"a":"10.9.0.2"}]`), "")
	f.Add(head, wireChunkJSON("d1", 0, sets, `[{"a":"10.9.0.1","c":3}]`), "", "")
	f.Add(wireHeadJSON(2, "d1", 1, "[]"), wireChunkJSON("d1", 0, sets, `[]`), "", "")
	f.Add(wireHeadJSON(1, "d1", 1, "[]"), wireChunkJSON("d2", 0, sets, `[{"a":"10.9.0.1"}]`), "", "")
	f.Add(head, wireChunkJSON("d1", 0, sets, `[{"a":"not-an-ip"},{"a":"10.9.0.3","h":"Not_A_Label"}]`), wireChunkJSON("d1", 2, sets, `[]`), "")

	key := registry.ServiceKey{Namespace: "demo", Name: "web"}
	const cluster = "cls-w"
	r := &Registry{setID: "set", clusterID: "cls-r"}
	ns := NamespaceName(r.setID, cluster)
	before := registry.Record{ClusterSetID: "set", ClusterID: cluster, Namespace: key.Namespace, Name: key.Name,
		Spec: registry.ServiceSpec{Type: registry.ClusterSetIP, Ports: []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}}}
	object := func(name string, typ hubv1alpha1.RecordType, endpoints string) *hubv1alpha1.ClusterSetRecord {
		w := &Registry{setID: r.setID, clusterID: cluster, namespace: ns}
		obj := w.object(name, typ, key)
		obj.Spec.Endpoints = endpoints
		return obj
	}

	f.Fuzz(func(t *testing.T, record, chunk0, chunk1, chunk2 string) {
		r.view = newView(r)
		r.view.set(key, cluster, before.DeepCopy())
		store := cache.NewStore(cache.MetaNamespaceKeyFunc)
		h := object(headName(key), hubv1alpha1.Head, chunk0)
		h.Spec.Record = record
		raws := []string{chunk0}
		if err := store.Add(h); err != nil {
			t.Fatal(err)
		}
		digest := ""
		if wh, err := decodeHead(record); err == nil {
			digest = wh.Digest
		}
		for i, raw := range []string{chunk1, chunk2} {
			if raw == "" {
				break
			}
			raws = append(raws, raw)
			if err := store.Add(object(chunkName(key, digest, i+1), hubv1alpha1.Chunk, raw)); err != nil {
				t.Fatal(err)
			}
		}

		var lines []logEntry
		changed := r.view.assemble(logr.New(logSink{&lines}), store, cluster, key, headName(key))
		got, ok := r.view.records[key][cluster]
		if !ok {
			t.Fatal("the view lost the record it had")
		}
		if !changed {
			if !reflect.DeepEqual(got, before) {
				t.Fatalf("the view's record changed, but assemble says it did not:\n%+v", got)
			}
			if len(lines) == 0 {
				t.Fatal("the record was not read, and no log line says why")
			}
			return
		}

		wh, err := decodeHead(record)
		if err != nil || wh.Chunks > len(raws) {
			t.Fatalf("read a record of head %q (%v) from %d chunks", record, err, len(raws))
		}
		if got.ClusterSetID != "set" || got.ClusterID != cluster || got.Key() != key {
			t.Fatalf("read a record of %s/%s %s", got.ClusterSetID, got.ClusterID, got.Key())
		}
		if err := got.Spec.ValidatePorts(); err != nil {
			t.Fatalf("read service ports the API server rejects: %v", err)
		}
		total := 0
		for _, raw := range raws[:wh.Chunks] {
			c, err := decodeChunk(raw)
			if err != nil {
				t.Fatalf("read a record with a chunk that does not decode: %v", err)
			}
			total += len(c.Endpoints)
		}
		for _, ep := range got.Endpoints {
			if err := ep.Validate(); err != nil {
				t.Fatalf("read an endpoint the API server rejects: %v", err)
			}
		}
		left := 0
		for _, l := range lines {
			if n, ok := l.value("endpoints"); ok && l.isErr && l.msg == "Leaving out endpoints that cannot be imported; the error is the first one's" {
				left += n.(int)
			}
		}
		if len(got.Endpoints)+left != total {
			t.Fatalf("%d endpoints read and %d reported as left out of %d in the chunks", len(got.Endpoints), left, total)
		}
	})
}

// wireHeadJSON is a head's spec.record of the given version, digest, chunk
// count and service ports (JSON).
func wireHeadJSON(version int, digest string, chunks int, ports string) string {
	return fmt.Sprintf(`{"v":%d,"digest":%q,"chunks":%d,"spec":{"type":"ClusterSetIP","ports":%s,"exportCreated":"2024-05-01T10:00:00Z"}}`,
		version, digest, chunks, ports)
}

// wireChunkJSON is a chunk's spec.endpoints.
func wireChunkJSON(digest string, index int, portSets, endpoints string) string {
	return fmt.Sprintf(`{"digest":%q,"index":%d,"portSets":%s,"endpoints":%s}`, digest, index, portSets, endpoints)
}
