package cloudmap

import (
	"fmt"
	"maps"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/clusterset/clusterset/pkg/registry"
)

func TestChangeList(t *testing.T) {
	w := func(gen int64, services ...string) beaconWrite {
		m := map[string]string{}
		for _, s := range services {
			m[s] = "d-" + s
		}
		return beaconWrite{gen: gen, services: m}
	}
	long := func(i int) string { return fmt.Sprintf("%s-%02d", strings.Repeat("s", 58), i) } // 61 bytes
	many := func(from, n int) map[string]string {
		m := map[string]string{}
		for i := from; i < from+n; i++ {
			m[long(i)] = "dddddddd" // entries of 61+1+8+1+2 = 73 bytes
		}
		return m
	}
	const budget = 3500 // as continuationBudget leaves for short IDs
	cases := []struct {
		name      string
		pending   map[string]string
		history   []beaconWrite
		budget    int    // 0: budget
		list      string // all parts, joined
		parts     int
		since     string
		sinceAll  string
		keep      int
		readers   map[int64]map[string]string // reader's last generation -> what it reads
		fallsBack []int64                     // reader's last generations that must check the namespace
	}{{
		name:      "first write of a process: no anchor",
		pending:   map[string]string{"web": "d1"},
		list:      "web:d1:50",
		parts:     1,
		fallsBack: []int64{0, 10},
	}, {
		name:    "one write before: it is the anchor",
		pending: map[string]string{"web": "d2"},
		history: []beaconWrite{w(10, "db")},
		list:    "web:d2:50",
		parts:   1,
		since:   "10",
		keep:    1,
		readers: map[int64]map[string]string{10: {"web": "d2"}, 20: {"web": "d2"}},
		// A reader that saw only an earlier generation missed db's change.
		fallsBack: []int64{9},
	}, {
		name:    "newest first, one entry per service at its last change",
		pending: map[string]string{"web": "d3"},
		history: []beaconWrite{w(10, "a"), w(20, "web", "b"), w(30, "c")},
		list:    "web:d3:50,c:d-c:30,b:d-b:20",
		parts:   1,
		since:   "10",
		keep:    3,
		readers: map[int64]map[string]string{
			10: {"web": "d3", "c": "d-c", "b": "d-b"},
			20: {"web": "d3", "c": "d-c"},
			30: {"web": "d3"},
			50: {},
		},
		fallsBack: []int64{5},
	}, {
		name:     "a write past the first part goes on in continuations",
		pending:  map[string]string{long(99): "d"},
		history:  []beaconWrite{w(10, "x"), {gen: 20, services: many(0, 20)}, w(30, "c")},
		parts:    2,
		since:    "20", // the first part holds pending, c and 12 of 20's 20
		sinceAll: "10",
		keep:     3,
		readers: map[int64]map[string]string{
			10: joinMaps(map[string]string{long(99): "d", "c": "d-c"}, many(0, 20)),
			20: {long(99): "d", "c": "d-c"},
		},
		fallsBack: []int64{9},
	}, {
		name:    "what does not fit in all parts is left to the anchor",
		pending: map[string]string{"web": "d"},
		history: []beaconWrite{w(10, "x"), {gen: 20, services: many(0, 60)}, {gen: 30, services: many(60, 30)}},
		parts:   3,
		// The first part holds pending and 13 of 30's 30; 60 more
		// entries of 73 bytes would pass the budget.
		since:    "30",
		sinceAll: "20",
		keep:     2,
		readers: map[int64]map[string]string{
			20: joinMaps(map[string]string{"web": "d"}, many(60, 30)),
			30: {"web": "d"},
		},
		fallsBack: []int64{10, 19},
	}, {
		name:      "pending alone takes more than the first part: continuations, no CHANGE_SINCE",
		pending:   many(0, 20),
		history:   []beaconWrite{w(10, "a")},
		parts:     2,
		sinceAll:  "10",
		keep:      1,
		readers:   map[int64]map[string]string{10: many(0, 20), 40: many(0, 20)},
		fallsBack: []int64{9},
	}, {
		name:      "pending alone does not fit at all: no list",
		pending:   many(0, 60),
		history:   []beaconWrite{w(10, "a")},
		fallsBack: []int64{10, 40},
	}, {
		name:      "no budget for continuations, pending takes more than one part: no list",
		pending:   many(0, 20),
		history:   []beaconWrite{w(10, "a")},
		budget:    -1,
		fallsBack: []int64{10, 40},
	}, {
		name:    "no budget for continuations: the list stops at the first part",
		pending: map[string]string{"web": "d"},
		history: []beaconWrite{w(10, "x"), {gen: 20, services: many(0, 20)}, w(30, "c")},
		budget:  -1,
		list:    "web:d:50,c:d-c:30",
		parts:   1,
		since:   "20",
		keep:    2,
		readers: map[int64]map[string]string{
			20: {"web": "d", "c": "d-c"},
			30: {"web": "d"},
		},
		fallsBack: []int64{10, 19},
	}, {
		name:      "writes that announced nothing move the anchor back",
		pending:   map[string]string{},
		history:   []beaconWrite{w(10, "a"), w(20), w(30)},
		parts:     0,
		since:     "10",
		keep:      3,
		readers:   map[int64]map[string]string{10: {}, 20: {}},
		fallsBack: []int64{9},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := budget
			if c.budget != 0 {
				b = max(c.budget, 0)
			}
			l := changeList(50, c.pending, c.history, b)
			if c.list != "" && strings.Join(l.parts, ",") != c.list {
				t.Errorf("list %q, want %q", strings.Join(l.parts, ","), c.list)
			}
			if len(l.parts) != c.parts || l.since != c.since || l.sinceAll != c.sinceAll || l.keep != c.keep {
				t.Fatalf("changeList: %d parts, since %q, sinceAll %q, keep %d; want %d, %q, %q, %d",
					len(l.parts), l.since, l.sinceAll, l.keep, c.parts, c.since, c.sinceAll, c.keep)
			}
			attrs := map[string]string{}
			l.addTo(attrs)
			cont := 0
			for i, part := range l.parts {
				if len(part) > maxChangeList {
					t.Fatalf("part %d of %d bytes", i, len(part))
				}
				if i > 0 {
					cont += len(changePartKey(i)) + len(part)
				}
			}
			if cont > b {
				t.Fatalf("continuations take %d characters, budget %d", cont, b)
			}
			for prev, want := range c.readers {
				got, ok := changesSince(attrs, strconv.FormatInt(prev, 10), true)
				if !ok || !reflect.DeepEqual(got, want) {
					t.Errorf("reader at %d reads %d services, %v; want %d", prev, len(got), ok, len(want))
				}
			}
			for _, prev := range c.fallsBack {
				if got, ok := changesSince(attrs, strconv.FormatInt(prev, 10), true); ok {
					t.Errorf("reader at %d reads only %v, want a check of the namespace", prev, got)
				}
			}
			if _, ok := changesSince(attrs, "", false); ok {
				t.Error("a reader that never saw the beacon reads only its list")
			}
			// A reader of the version before the continuations reads
			// CHANGE_SERVICES and CHANGE_SINCE alone; whatever it trusts
			// must be the whole truth.
			for prev := int64(0); prev <= 60; prev++ {
				old, ok := changesSinceFirstPart(attrs, prev)
				if !ok {
					continue
				}
				got, ok := changesSince(attrs, strconv.FormatInt(prev, 10), true)
				if !ok || !reflect.DeepEqual(old, got) {
					t.Errorf("an earlier reader at %d reads %d services, this one %d, %v", prev, len(old), len(got), ok)
				}
			}
		})
	}
}

// changesSinceFirstPart is what readers before the continuations read of a
// beacon's attributes a: CHANGE_SERVICES, when CHANGE_SINCE is prev or
// earlier.
func changesSinceFirstPart(a map[string]string, prev int64) (map[string]string, bool) {
	s, err := strconv.ParseInt(a[attrChangeSince], 10, 64)
	if err != nil || s > prev {
		return nil, false
	}
	return parseChangeList(a[attrChangeServices], prev)
}

func joinMaps(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func TestChangesSinceRejectsMalformed(t *testing.T) {
	for _, list := range []string{"web", "web:d", ":d:1", "web::1", "web:d:x", "web:d:1:2", "web:d:1,,b:d:2"} {
		attrs := map[string]string{attrChangeServices: list, attrChangeSince: "1"}
		if got, ok := changesSince(attrs, "5", true); ok {
			t.Errorf("CHANGE_SERVICES %q read as %v", list, got)
		}
		// The same in a continuation, trusted through either anchor.
		for _, since := range []string{attrChangeSince, attrChangeSinceAll} {
			attrs := map[string]string{attrChangeServices: "api:d:9", changePartKey(1): list, since: "1"}
			if got, ok := changesSince(attrs, "5", true); ok {
				t.Errorf("CHANGE_SERVICES_2 %q under %s read as %v", list, since, got)
			}
		}
	}
	for _, since := range []string{"", "x", "-", restartSince} {
		for _, key := range []string{attrChangeSince, attrChangeSinceAll} {
			attrs := map[string]string{attrChangeServices: "web:d:9", key: since}
			if got, ok := changesSince(attrs, "5", true); ok {
				t.Errorf("%s %q read as %v", key, since, got)
			}
		}
	}
	// A beacon of an earlier version, without the list.
	if got, ok := changesSince(map[string]string{}, "5", true); ok {
		t.Errorf("a beacon without a list read as %v", got)
	}
	// A continuation past maxChangeParts is read too: a later version may
	// write more parts, and a list read in part must not be trusted whole.
	attrs := map[string]string{attrChangeServices: "web:d:9", changePartKey(maxChangeParts): "api:e:8", attrChangeSinceAll: "1"}
	if got, ok := changesSince(attrs, "5", true); !ok || !maps.Equal(got, map[string]string{"web": "d", "api": "e"}) {
		t.Errorf("a list with a part past %d read as %v, %v", maxChangeParts, got, ok)
	}
}

// TestBeaconFitsCloudMapLimits: a beacon with its change list at its
// longest, and IDs at the longest the registry accepts (names_test.go), is
// an instance Cloud Map accepts.
func TestBeaconFitsCloudMapLimits(t *testing.T) {
	const gen = 1764581234567999
	fixed := beaconAttrs(setAtLimit, clusterAtLimit, nsAtLimit, "0123456789ab", gen)
	var history []beaconWrite
	for g := int64(1); g <= maxChangeHistory; g++ {
		m := map[string]string{}
		for i := range 3 {
			m[fmt.Sprintf("%s-%d-%d", svcAtLimit[:50], g, i)] = "0a1b2c3d"
		}
		history = append(history, beaconWrite{gen: gen - 100 + g, services: m})
	}
	l := changeList(gen, map[string]string{svcAtLimit: unknownDigest}, history, continuationBudget(fixed))
	if len(l.parts) != maxChangeParts || l.sinceAll == "" {
		t.Fatalf("%d parts, CHANGE_SINCE_ALL %q; want %d parts and an anchor", len(l.parts), l.sinceAll, maxChangeParts)
	}
	for _, since := range []string{l.since, restartSince, "-9223372036854775808"} {
		attrs := maps.Clone(fixed)
		l.since = since
		l.addTo(attrs)
		if err := checkAttrs(registry.ServiceKey{Namespace: "n", Name: "beacon"}, attrs); err != nil {
			t.Errorf("CHANGE_SINCE %q: %v", since, err)
		}
	}
}

// FuzzChangeList checks changeList and the readers against the truth, for
// histories of up to 8 writes made from the fuzzer's bytes (each byte a
// service of 8 names, or the end of a write), names of any length and
// budgets from none to the most: for every generation a reader may have
// seen last, what a reader of this version trusts (changesSince), and what
// a reader before the continuations trusts (the first part and
// CHANGE_SINCE alone), is exactly the newest digest of every service
// changed after it; every part fits its attribute, and the continuations
// fit the budget.
func FuzzChangeList(f *testing.F) {
	f.Add([]byte{1, 2, 0xff, 3, 0xff, 1, 4}, uint8(10), uint16(3000))
	f.Add([]byte{0xff, 0xff, 1}, uint8(60), uint16(0))
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 0xff, 0, 1, 2, 3, 4, 5, 6, 7}, uint8(200), uint16(800))
	f.Fuzz(func(t *testing.T, ops []byte, nameLen uint8, budget uint16) {
		name := func(b byte) string {
			return fmt.Sprintf("%c%s", 'a'+b%8, strings.Repeat("x", int(nameLen)%120))
		}
		// writes[0] is the oldest; the last one is pending.
		writes := []map[string]string{{}}
		for i, b := range ops {
			if b == 0xff {
				if len(writes) == 8 {
					break
				}
				writes = append(writes, map[string]string{})
				continue
			}
			writes[len(writes)-1][name(b)] = fmt.Sprintf("d%d", i)
		}
		gen := func(i int) int64 { return int64(10 * (i + 1)) }
		var history []beaconWrite
		for i, w := range writes[:len(writes)-1] {
			history = append(history, beaconWrite{gen: gen(i), services: w})
		}
		last := len(writes) - 1
		b := int(budget) % 4000
		l := changeList(gen(last), writes[last], history, b)
		cont := 0
		for i, part := range l.parts {
			if len(part) > maxChangeList {
				t.Fatalf("part %d of %d bytes", i, len(part))
			}
			if i > 0 {
				cont += len(changePartKey(i)) + len(part)
			}
		}
		if cont > b {
			t.Fatalf("continuations of %d characters, budget %d", cont, b)
		}
		attrs := map[string]string{}
		l.addTo(attrs)
		for prev := int64(0); prev <= gen(last); prev++ {
			truth := map[string]string{}
			for i, w := range writes {
				if gen(i) > prev {
					maps.Copy(truth, w) // later writes overwrite earlier ones
				}
			}
			if got, ok := changesSince(attrs, strconv.FormatInt(prev, 10), true); ok && !maps.Equal(got, truth) {
				t.Fatalf("a reader at %d trusts %v, the changes after it are %v (listing %+v)", prev, got, truth, l)
			}
			if got, ok := changesSinceFirstPart(attrs, prev); ok && !maps.Equal(got, truth) {
				t.Fatalf("an earlier reader at %d trusts %v, the changes after it are %v (listing %+v)", prev, got, truth, l)
			}
		}
	})
}
