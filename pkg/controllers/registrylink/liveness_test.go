package registrylink

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
)

// Liveness is judged on this cluster's clock: by when a heartbeat was seen
// to change, not by the time the other cluster wrote into it.
func TestLivenessByObservedRenewals(t *testing.T) {
	const grace = 30 * time.Second
	id := identity.Identity{ClusterSetID: "set", ClusterID: "cls-a"}
	l := New(identity.Fixed(id), nil, Options{GracePeriod: grace})
	l.id = id
	reg := registrytest.NewMemoryStore().Registry("set", "cls-a")
	ctx := context.Background()
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	skew := -5 * time.Minute // cls-skewed's clock is five minutes behind

	// beats returns the heartbeats the registry shows at now: cls-a (this
	// cluster) and cls-skewed renew every 10 s; cls-dead renewed once at
	// t0 and stopped; cls-late appears later.
	beats := func(now time.Time, late bool) map[string]time.Time {
		renewed := t0.Add(now.Sub(t0).Truncate(10 * time.Second))
		out := map[string]time.Time{
			"cls-a":      renewed,
			"cls-skewed": renewed.Add(skew),
			"cls-dead":   t0,
		}
		if late {
			out["cls-late"] = now.Add(-time.Second)
		}
		return out
	}
	check := func(now time.Time, late bool, wantDead ...string) {
		t.Helper()
		l.updateLiveness(ctx, reg, id, beats(now, late), now)
		dead := map[string]bool{}
		for _, c := range wantDead {
			dead[c] = true
		}
		for _, c := range []string{"cls-a", "cls-skewed", "cls-dead", "cls-late"} {
			if got := !l.Alive(c); got != dead[c] {
				t.Errorf("at +%v: %s dead = %v, want %v", now.Sub(t0), c, got, dead[c])
			}
		}
	}

	// First sight: cls-skewed's renew time looks five minutes old, so it
	// counts as past the grace period until it is seen to renew.
	check(t0, false, "cls-skewed")
	for s := 10; s <= 30; s += 10 {
		check(t0.Add(time.Duration(s)*time.Second), false)
	}
	// cls-dead has not renewed for longer than the grace period, by this
	// cluster's clock; cls-skewed keeps renewing and stays alive however
	// far off its clock is.
	check(t0.Add(31*time.Second), false, "cls-dead")
	check(t0.Add(5*time.Minute), false, "cls-dead")
	// A heartbeat first seen fresh is alive.
	check(t0.Add(5*time.Minute+time.Second), true, "cls-dead")
	// cls-dead renews again: alive.
	l.updateLiveness(ctx, reg, id, map[string]time.Time{"cls-a": t0.Add(6 * time.Minute), "cls-dead": t0.Add(6 * time.Minute)}, t0.Add(6*time.Minute))
	if !l.Alive("cls-dead") {
		t.Error("cls-dead renewed its heartbeat but is still dead")
	}
}

// A member that starts with its clock five minutes ahead sees every other
// heartbeat five minutes old. They are within the grace period of each
// other, so it keeps them alive for two heartbeat intervals instead of
// dropping every other member's endpoints until they renew; they renew and
// stay alive. Had they all died together, they would be dead after those two
// intervals. A heartbeat far older than the newest one is dead at once, and
// so is an old heartbeat that no other member's vouches for: with no other
// member, or none renewed near it.
func TestLivenessFirstSightWithClockAhead(t *testing.T) {
	const grace, interval = 30 * time.Second, 10 * time.Second
	id := identity.Identity{ClusterSetID: "set", ClusterID: "cls-a"}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC) // the true time
	ahead := 5 * time.Minute
	for _, renewing := range []bool{true, false} {
		l := New(identity.Fixed(id), nil, Options{GracePeriod: grace, HeartbeatInterval: interval})
		l.id = id
		reg := registrytest.NewMemoryStore().Registry("set", "cls-a")
		ctx := context.Background()
		beats := func(now time.Time) map[string]time.Time {
			renewed := t0
			if renewing {
				renewed = now.Truncate(interval)
			}
			return map[string]time.Time{
				"cls-a":   now.Add(ahead), // its own, by its clock
				"cls-b":   renewed,
				"cls-c":   renewed.Add(-2 * time.Second),
				"cls-old": t0.Add(-time.Hour), // dead long before
			}
		}
		for s := 0; s <= 60; s += 10 {
			now := t0.Add(time.Duration(s) * time.Second)
			l.updateLiveness(ctx, reg, id, beats(now), now.Add(ahead))
			for _, c := range []string{"cls-b", "cls-c"} {
				wantAlive := renewing || s <= int((2*interval).Seconds())
				if got := l.Alive(c); got != wantAlive {
					t.Errorf("renewing %t, +%ds: %s alive = %t, want %t", renewing, s, c, got, wantAlive)
				}
			}
			if l.Alive("cls-old") {
				t.Errorf("renewing %t, +%ds: cls-old, an hour older than the others, is alive", renewing, s)
			}
		}
	}
}

func TestLivenessFirstSightNeedsAnotherMember(t *testing.T) {
	const grace, interval = 30 * time.Second, 10 * time.Second
	id := identity.Identity{ClusterSetID: "set", ClusterID: "cls-a"}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for name, beats := range map[string]map[string]time.Time{
		"alone":               {"cls-a": now, "cls-old": now.Add(-time.Hour)},
		"with one even older": {"cls-a": now, "cls-old": now.Add(-time.Hour), "cls-older": now.Add(-2 * time.Hour)},
	} {
		l := New(identity.Fixed(id), nil, Options{GracePeriod: grace, HeartbeatInterval: interval})
		l.id = id
		l.updateLiveness(context.Background(), registrytest.NewMemoryStore().Registry("set", "cls-a"), id, beats, now)
		if l.Alive("cls-old") {
			t.Errorf("%s: cls-old, an hour old and vouched for by nobody near it, is alive at first sight", name)
		}
	}
}

// Another cluster renewing a heartbeat of this member's cluster ID blocks
// this one (Registry says why). It unblocks only once that heartbeat has not
// moved for the grace period while the view is seen to move; a heartbeat of
// its own, or without a holder, blocks nothing.
func TestClusterIDHeldByAnotherMember(t *testing.T) {
	const grace = 30 * time.Second
	id := identity.Identity{ClusterSetID: "set", ClusterID: "cls-a", UID: "uid-mine"}
	l := New(identity.Fixed(id), nil, Options{GracePeriod: grace})
	l.id = id
	reg := registrytest.NewMemoryStore().Registry("set", "cls-a")
	ctx := context.Background()
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	if _, _, err := l.Registry(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("before the first check, Registry = %v, want ErrNotReady", err)
	}
	judge := func(hb registry.Heartbeat, present bool, now time.Time) error {
		t.Helper()
		l.judgeClusterID(ctx, reg, id, hb, present, now)
		conflict := l.clusterIDConflict()
		if _, _, err := l.Registry(); conflict != nil && err != conflict {
			t.Fatalf("Registry error %v while blocked by %v", err, conflict)
		}
		// The gauge behind the ClustersetClusterIDInUse alert says the same.
		want := 0.0
		if conflict != nil {
			want = 1
		}
		if got := testutil.ToFloat64(clusterIDConflict); got != want {
			t.Fatalf("clusterset_cluster_id_conflict = %v while the conflict is %v, want %v", got, conflict, want)
		}
		return conflict
	}
	foreign := func(renew time.Time) registry.Heartbeat {
		return registry.Heartbeat{ClusterID: "cls-a", RenewTime: renew, Holder: "uid-other"}
	}
	// liveView makes another cluster's heartbeat seen renewed at now.
	liveView := func(now time.Time) { l.seen["cls-b"] = observation{renew: now, at: now} }

	if err := judge(registry.Heartbeat{}, false, t0); err != nil {
		t.Errorf("no heartbeat of the ID yet: %v", err)
	}
	if err := judge(registry.Heartbeat{ClusterID: "cls-a", RenewTime: t0, Holder: "uid-mine"}, true, t0); err != nil {
		t.Errorf("own heartbeat: %v", err)
	}
	if err := judge(registry.Heartbeat{ClusterID: "cls-a", RenewTime: t0}, true, t0); err != nil {
		t.Errorf("a heartbeat without a holder decides nothing: %v", err)
	}
	// First seen: blocked, whatever time the other cluster's clock wrote
	// (its clock may be far behind).
	err := judge(foreign(t0.Add(-time.Hour)), true, t0)
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), `cluster ID "cls-a" is in use by another cluster`) ||
		!strings.Contains(err.Error(), "uid-other") || !strings.Contains(err.Error(), "uid-mine") {
		t.Fatalf("another cluster's heartbeat of the ID, first seen: %v", err)
	}
	// It keeps renewing: blocked, long after the grace period.
	for s := 10; s <= 120; s += 10 {
		now := t0.Add(time.Duration(s) * time.Second)
		liveView(now)
		if judge(foreign(now.Add(-time.Hour)), true, now) == nil {
			t.Fatalf("unblocked at +%ds although the other cluster renews", s)
		}
	}
	// It stops renewing, but the view stops too (the hub is down): blocked.
	last := t0.Add(120 * time.Second).Add(-time.Hour)
	if judge(foreign(last), true, t0.Add(120*time.Second+grace+time.Minute)) == nil {
		t.Error("unblocked while no heartbeat at all moved (a stale view)")
	}
	// The view moves and the other heartbeat stays still past the grace
	// period: this member takes the ID over.
	now := t0.Add(120*time.Second + grace + 2*time.Minute)
	liveView(now)
	if err := judge(foreign(last), true, now); err != nil {
		t.Errorf("the other cluster has been silent past the grace period while the view moves: %v", err)
	}
}
