package cachelag

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
)

func obj(uid, rv string) *metav1.ObjectMeta {
	return &metav1.ObjectMeta{UID: types.UID(uid), ResourceVersion: rv}
}

func TestBehind(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	tr := &Tracker{Clock: clk}

	if tr.Behind(obj("a", "1")) {
		t.Error("an object never written is behind")
	}
	// Two writes in one reconcile: spec 1 -> 2, status 2 -> 3.
	tr.Wrote("1", obj("a", "2"))
	tr.Wrote("2", obj("a", "3"))
	tr.Wrote("", obj("b", "7")) // a create: nothing was written over
	for _, rv := range []string{"1", "2"} {
		if !tr.Behind(obj("a", rv)) {
			t.Errorf("version %s, which this process wrote over, is not behind", rv)
		}
	}
	if tr.Behind(obj("b", "7")) {
		t.Error("a created object is behind")
	}
	if tr.Behind(obj("c", "1")) {
		t.Error("another object is behind")
	}
	if !tr.Behind(obj("a", "1")) {
		t.Error("reading an old version twice ends the tracking")
	}
	// The cache shows the latest write: caught up, and old versions are
	// no longer special (the cache never goes back).
	if tr.Behind(obj("a", "3")) {
		t.Error("the version of the last write is behind")
	}
	if tr.Behind(obj("a", "1")) {
		t.Error("tracking went on after the cache caught up")
	}

	// Somebody else's write after ours ends the tracking too.
	tr.Wrote("3", obj("a", "4"))
	if tr.Behind(obj("a", "9")) {
		t.Error("a version somebody else wrote is behind")
	}

	// A write whose event never shows (the object went) expires.
	tr.Wrote("4", obj("d", "5"))
	clk.SetTime(clk.Now().Add(Expiry))
	if tr.Behind(obj("d", "4")) {
		t.Errorf("still behind %v after the write", Expiry)
	}
	tr.Wrote("5", obj("e", "6"))
	tr.Forget("e")
	if tr.Behind(obj("e", "5")) {
		t.Error("behind after Forget")
	}
	tr.Wrote("1", obj("f", "2"))
	clk.SetTime(clk.Now().Add(2 * Expiry))
	tr.Behind(obj("g", "1"))
	tr.Wrote("1", obj("h", "2"))
	tr.Behind(obj("h", "2")) // drops h, and expires f with it
	if n := len(tr.written); n != 0 {
		t.Errorf("%d objects still tracked after expiry, want 0", n)
	}
}

func TestUnseen(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	tr := &Tracker{Clock: clk}
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	b := types.NamespacedName{Namespace: "ns", Name: "b"}

	if tr.Unseen("ServiceImport", a) {
		t.Error("an object this process never created is unseen")
	}
	tr.Created("ServiceImport", a)
	if !tr.Unseen("ServiceImport", a) {
		t.Error("an object just created is not unseen")
	}
	if !tr.Unseen("ServiceImport", a) {
		t.Error("asking twice ends the tracking")
	}
	if tr.Unseen("Service", a) {
		t.Error("another kind of the same key is unseen")
	}
	if tr.Unseen("ServiceImport", b) {
		t.Error("another key is unseen")
	}
	tr.Seen("ServiceImport", a)
	if tr.Unseen("ServiceImport", a) {
		t.Error("still unseen after the cache showed it")
	}

	tr.Created("ServiceImport", a)
	clk.SetTime(clk.Now().Add(CreateExpiry - time.Millisecond))
	if !tr.Unseen("ServiceImport", a) {
		t.Errorf("not unseen just before %v", CreateExpiry)
	}
	clk.SetTime(clk.Now().Add(time.Millisecond))
	if tr.Unseen("ServiceImport", a) {
		t.Errorf("still unseen %v after the create: an object deleted before the cache showed it would never be created again", CreateExpiry)
	}

	// A create nobody marks Seen (deleted before the cache showed it) is
	// dropped at the next create after CreateExpiry.
	tr.Created("EndpointSlice", a)
	clk.SetTime(clk.Now().Add(2 * CreateExpiry))
	tr.Created("EndpointSlice", b)
	if n := len(tr.created); n != 1 {
		t.Errorf("%d creates kept, want 1: the expired one stays", n)
	}
}

func TestForgetCreated(t *testing.T) {
	tr := &Tracker{}
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	b := types.NamespacedName{Namespace: "ns", Name: "b"}
	tr.Created("EndpointSlice of ns/x", a)
	tr.Created("EndpointSlice of ns/x", b)
	tr.Created("EndpointSlice of ns/y", a)
	tr.ForgetCreated("EndpointSlice of ns/x")
	if tr.Unseen("EndpointSlice of ns/x", a) || tr.Unseen("EndpointSlice of ns/x", b) {
		t.Error("unseen after ForgetCreated of its kind")
	}
	if !tr.Unseen("EndpointSlice of ns/y", a) {
		t.Error("ForgetCreated forgot another kind")
	}
}
