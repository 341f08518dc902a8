package registrylink

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
)

// When the registry answers again after a heartbeat round that could not
// reach it, every service of the view is queued for the controllers at once,
// so that what failed meanwhile is not left to its backoff; nothing is
// queued while it stays reachable or stays down.
func TestRegistryBackQueuesEveryService(t *testing.T) {
	id := identity.Identity{ClusterSetID: "set", ClusterID: "cls-a"}
	l := New(identity.Fixed(id), nil, Options{})
	sub := &subscriber{pending: map[registry.ServiceKey]struct{}{}, wake: make(chan struct{}, 1)}
	l.subs = append(l.subs, sub)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := registrytest.NewMemoryStore().Registry("set", "cls-a")
	go func() { _ = reg.Run(ctx, func(registry.ServiceKey) {}) }()
	want := []registry.ServiceKey{{Namespace: "ns", Name: "api"}, {Namespace: "ns", Name: "web"}}
	for _, k := range want {
		rec := registry.Record{ClusterSetID: "set", ClusterID: "cls-a", Namespace: k.Namespace, Name: k.Name,
			Spec: registry.ServiceSpec{Type: registry.ClusterSetIP, Ports: []registry.Port{{Name: "http", Protocol: "TCP", Port: 80}}}}
		if err := reg.Publish(ctx, &rec); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if keys, err := reg.Keys(); err == nil && len(keys) == len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the memory registry's view did not show both records")
		}
	}
	queued := func() []registry.ServiceKey {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		keys := slices.SortedFunc(maps.Keys(sub.pending), registry.CompareKeys)
		clear(sub.pending)
		return keys
	}

	for _, step := range []struct {
		reachable bool
		want      []registry.ServiceKey
	}{
		{true, nil},  // reachable from the start: nothing to retry
		{false, nil}, // the registry fails
		{false, nil}, // and still does
		{true, want}, // it answers again: every service
		{true, nil},  // and keeps answering
		{false, nil}, // a second outage
		{true, want}, // and its end
	} {
		l.noteReachable(ctx, reg, step.reachable)
		if got := queued(); !slices.Equal(got, step.want) {
			t.Fatalf("after a round that reached the registry: %t, queued %v, want %v", step.reachable, got, step.want)
		}
	}
}
