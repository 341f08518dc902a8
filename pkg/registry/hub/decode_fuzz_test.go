package hub

import (
	"testing"

	"github.com/clusterset/clusterset/pkg/merge/mergetest"
)

// FuzzDecodeRecord feeds arbitrary record heads and chunks, as a member
// could write them into its namespace of the hub (by hand, or with a broken
// or hostile controller), to the reader's decoder. Whatever the input, it
// does not panic, and the endpoints it returns are ones the API server
// accepts in an EndpointSlice (registry.Endpoint.Validate); a bad endpoint
// is left out and reported, never the whole chunk's good ones.
func FuzzDecodeRecord(f *testing.F) {
	for _, seed := range []string{"", "a", "seed-1", "\x01\x02\x03\x04\x05\x06\x07\x08", "\xff\xfe\xfd\xfc"} {
		for _, rec := range mergetest.Records([]byte(seed)) {
			enc, err := encode(&rec, 2)
			if err != nil {
				f.Fatal(err)
			}
			for _, c := range enc.chunks {
				f.Add(enc.head, c)
			}
		}
	}
	head := []byte(`{"v":1,"digest":"abc","chunks":1,"spec":{"type":"ClusterSetIP","ports":[{"port":80}]}}`)
	for _, chunk := range []string{
		`{"digest":"abc","index":0,"portSets":[[{"port":80}]],"endpoints":[{"a":"not-an-ip"},{"a":"10.0.0.1"}]}`,
		`{"digest":"abc","index":0,"portSets":[[{"port":70000}]],"endpoints":[{"a":"10.0.0.1"}]}`,
		`{"digest":"abc","index":0,"portSets":[[{"port":80,"p":"ICMP"}]],"endpoints":[{"a":"10.0.0.1"}]}`,
		`{"digest":"abc","index":0,"portSets":[],"endpoints":[{"a":"fd00::1","t":"IPv4"}]}`,
		`{"digest":"abc","index":0,"portSets":[[{"port":80}]],"endpoints":[{"a":"10.0.0.1","ps":7}]}`,
		`{"digest":"abc","index":0,"endpoints":[{"a":"10.0.0.1","h":"Not_A_Label"}]}`,
	} {
		f.Add(head, []byte(chunk))
	}

	f.Fuzz(func(t *testing.T, rawHead, rawChunk []byte) {
		h, err := decodeHead(string(rawHead))
		if err != nil {
			return
		}
		spec := fromWireSpec(&h.Spec)
		_ = spec.ValidatePorts() // may fail; must not panic
		c, err := decodeChunk(string(rawChunk))
		if err != nil {
			return
		}
		dropped := 0
		eps, err := appendEndpoints(nil, c, func(_ error, leftOut bool) {
			if leftOut {
				dropped++
			}
		})
		if err != nil {
			return
		}
		if len(eps)+dropped != len(c.Endpoints) {
			t.Fatalf("%d endpoints returned and %d reported as left out of %d in the chunk", len(eps), dropped, len(c.Endpoints))
		}
		for _, ep := range eps {
			if err := ep.Validate(); err != nil {
				t.Fatalf("decoded an endpoint the API server rejects: %v", err)
			}
		}
	})
}
