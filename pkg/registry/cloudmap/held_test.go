package cloudmap

import (
	"maps"
	"testing"
)

// What Publish keeps of the instances it wrote (heldInstance) answers what
// their attributes answered: whether a new encoding changes an instance,
// which InstanceId an endpoint port holds, and the marker's attributes.
func TestHoldInstances(t *testing.T) {
	rec := sampleRecord("set", "cls-a", "ns", "web", "10.0.0.1", "10.0.0.2")
	insts, err := encodeRecord(&rec, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	held := holdInstances(insts)
	if !sameInstances(held, insts) {
		t.Fatal("the instances just encoded differ from what is kept of them")
	}
	mid := markerID("set", "cls-a")
	for id, in := range insts {
		h := held[id]
		if id == mid {
			if !maps.Equal(h.attrs, in.Attrs) || h.portKey != "" {
				t.Errorf("marker %s: kept attrs %v, port key %q; want its attributes and no port key", id, h.attrs, h.portKey)
			}
			continue
		}
		a := in.Attrs
		if want := portKey(corev1Protocol(a[attrEPProtocol]), a[attrIPv4], atoi32(a[attrPort])); h.portKey != want || h.attrs != nil {
			t.Errorf("instance %s: port key %q, attrs %v; want %q and no attributes", id, h.portKey, h.attrs, want)
		}
	}

	// Any change of any attribute, an attribute more or less, an instance
	// more or less: not the same.
	for id, in := range insts {
		for k := range in.Attrs {
			changed := cloneInstances(insts)
			changed[id].Attrs[k] += "x"
			if sameInstances(held, changed) {
				t.Errorf("instance %s with %s changed reads as the same", id, k)
			}
			dropped := cloneInstances(insts)
			delete(dropped[id].Attrs, k)
			if sameInstances(held, dropped) {
				t.Errorf("instance %s without %s reads as the same", id, k)
			}
		}
		added := cloneInstances(insts)
		added[id].Attrs["EXTRA"] = ""
		if sameInstances(held, added) {
			t.Errorf("instance %s with an attribute more reads as the same", id)
		}
		fewer := cloneInstances(insts)
		delete(fewer, id)
		if sameInstances(held, fewer) {
			t.Errorf("the instances without %s read as the same", id)
		}
	}
	// Attributes swapped between keys are another set of attributes.
	if attrsDigest(map[string]string{"A": "1", "B": "2"}) == attrsDigest(map[string]string{"A": "2", "B": "1"}) {
		t.Error("swapped values digest alike")
	}
	if attrsDigest(map[string]string{"AB": ""}) == attrsDigest(map[string]string{"A": "B"}) {
		t.Error("a key and a value run together digest alike")
	}
}

func cloneInstances(insts map[string]instance) map[string]instance {
	out := make(map[string]instance, len(insts))
	for id, in := range insts {
		out[id] = instance{ID: id, Attrs: maps.Clone(in.Attrs)}
	}
	return out
}
