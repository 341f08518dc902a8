package cloudmap

import (
	"maps"
	"math"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseChangeList feeds arbitrary CHANGE_SERVICES values, which anyone
// allowed to register change beacons may write, to parseChangeList, with
// arbitrary generations the reader saw last. Whatever the input, it does
// not panic, and an empty value is a valid empty list. When it accepts a
// value (ok; otherwise the reader checks the whole namespace):
//   - every service it returns is named by an entry "name:digest:gen" of the
//     value with that digest and a generation after prev;
//   - a later prev never returns a service an earlier one does not;
//   - changeList, the writer's encoder, writes the services back into a
//     value that parses to the same services and digests (when they fit in
//     maxChangeParts parts).
func FuzzParseChangeList(f *testing.F) {
	f.Add("", int64(0))
	f.Add("web:0a1b2c3d:1700000000000001,api:?:1700000000000000", int64(1700000000000000))
	f.Add("web:0a1b2c3d:5,web:ffffffff:3", int64(2))
	f.Add("web::5", int64(0))
	f.Add("web:0a1b2c3d", int64(0))
	f.Add(":0a1b2c3d:5", int64(0))
	f.Add("web:0a1b2c3d:99999999999999999999", int64(0))
	f.Add("a:b:c:d,,", int64(math.MinInt64))

	f.Fuzz(func(t *testing.T, s string, prev int64) {
		out, ok := parseChangeList(s, prev)
		if s == "" {
			if !ok || len(out) != 0 {
				t.Fatalf("an empty list gives %v, %v; want no services, ok", out, ok)
			}
			return
		}
		if !ok {
			if out != nil {
				t.Errorf("a malformed list gives services %v", out)
			}
			return
		}
		entries := map[string]bool{}
		for _, e := range strings.Split(s, ",") {
			f := strings.Split(e, ":")
			if len(f) != 3 {
				t.Fatalf("accepted entry %q, which is not name:digest:generation", e)
			}
			if g, err := strconv.ParseInt(f[2], 10, 64); err == nil && g > prev {
				entries[f[0]+":"+f[1]] = true
			}
		}
		for name, digest := range out {
			if name == "" || digest == "" || !entries[name+":"+digest] {
				t.Errorf("service %q with digest %q is not an entry after generation %d of %q", name, digest, prev, s)
			}
		}
		if prev < math.MaxInt64 {
			later, ok := parseChangeList(s, prev+1)
			if !ok {
				t.Fatalf("%q accepted after generation %d but not after %d", s, prev, prev+1)
			}
			for name := range later {
				if _, ok := out[name]; !ok {
					t.Errorf("service %q changed after generation %d but not after %d", name, prev+1, prev)
				}
			}
		}

		// The writer's encoding of these services reads back the same.
		if len(out) == 0 || prev == math.MaxInt64 {
			return
		}
		l := changeList(prev+1, out, nil, maxAttributesTotal)
		list := strings.Join(l.parts, ",")
		if list == "" {
			return // more than fits in maxChangeParts
		}
		again, ok := parseChangeList(list, prev)
		if !ok || !maps.Equal(again, out) {
			t.Errorf("changeList wrote %v as %q, which parses to %v, %v", out, list, again, ok)
		}
	})
}
