package cloudmap

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// The change list of a change beacon (beacon.go): its encoding by the
// writer and its reading by readers, apart from the I/O.

// changeListing is what one beacon write says of its writer's changes in
// the namespace.
type changeListing struct {
	// parts are CHANGE_SERVICES and its continuations CHANGE_SERVICES_2 …
	// (changePartKey), each at most maxChangeList bytes: together one list
	// of "name:digest:generation" entries, newest first, split between
	// entries.
	parts []string
	// since is CHANGE_SINCE: the generation after which parts[0] alone
	// names every change, or "" when it cannot. It is all that readers
	// before the continuations read.
	since string
	// sinceAll is CHANGE_SINCE_ALL: the same for all the parts together,
	// or "" when there is only one part (since says it all) or no anchor.
	sinceAll string
	// keep is how many writes of the history are still worth keeping (the
	// anchor and later ones).
	keep int
}

// addTo sets the attributes of l in a beacon's attributes attrs.
func (l changeListing) addTo(attrs map[string]string) {
	attrs[attrChangeServices] = ""
	for i, part := range l.parts {
		attrs[changePartKey(i)] = part
	}
	attrs[attrChangeSince] = l.since
	if l.sinceAll != "" {
		attrs[attrChangeSinceAll] = l.sinceAll
	}
}

// changePartKey is the attribute of part i (from 0) of a change list:
// CHANGE_SERVICES, then CHANGE_SERVICES_2 … CHANGE_SERVICES_<maxChangeParts>.
func changePartKey(i int) string {
	if i == 0 {
		return attrChangeServices
	}
	return attrChangeServices + "_" + strconv.Itoa(i+1)
}

// changeList returns what the beacon write of generation gen announcing
// pending says, after the writes of history (oldest first). Its list holds
// one "name:digest:generation" entry per service, newest first: pending's
// at gen, then the services of as many of the latest writes as fit, each at
// the generation of the write that last changed it. They fit when the list
// splits, between entries, into parts of at most maxChangeList bytes, at
// most maxChangeParts of them, and the continuations (every part but the
// first), keys and commas included, take at most budget characters (what
// Cloud Map's 5,000 per instance leave). A write goes into the list whole
// or not at all, but may be split between two parts. since is the
// generation of the write before the oldest one wholly in the first part,
// sinceAll the same for all the parts (set only when there are several);
// none when there is no earlier write (the first write since this process
// started) or pending is not wholly there.
//
// Readers before the continuations read the first part and since alone.
// The first part may hold the first entries of a write split with the
// next part, which such a reader would not have found there before; those
// are of generation since, and parseChangeList drops every entry of a
// generation the reader has seen, which is all it trusts the list for
// (since ≤ the generation it saw). So it reads exactly the changes it
// missed, as before.
func changeList(gen int64, pending map[string]string, history []beaconWrite, budget int) changeListing {
	seen := map[string]bool{}
	var entries []string
	var parts []string
	// add appends the services of one write, unless they do not all fit.
	add := func(gen int64, services map[string]string) bool {
		grown := slices.Clone(entries)
		var names []string
		for _, name := range slices.Sorted(maps.Keys(services)) {
			if !seen[name] {
				grown = append(grown, name+":"+services[name]+":"+strconv.FormatInt(gen, 10))
				names = append(names, name)
			}
		}
		p, ok := packChangeList(grown, budget)
		if !ok {
			return false
		}
		for _, name := range names {
			seen[name] = true
		}
		entries, parts = grown, p
		return true
	}
	if !add(gen, pending) {
		return changeListing{}
	}
	inFirst := len(parts) <= 1 // pending is wholly in the first part
	if len(history) == 0 {
		return changeListing{parts: parts}
	}
	i := len(history) - 1
	first := -1 // the anchor of the first part alone, by index in history
	if inFirst {
		first = i
	}
	for ; i > 0 && add(history[i].gen, history[i].services); i-- {
		if inFirst && len(parts) <= 1 {
			first = i - 1
		}
	}
	out := changeListing{parts: parts, keep: len(history) - i}
	if first >= 0 {
		out.since = strconv.FormatInt(history[first].gen, 10)
	}
	if len(parts) > 1 {
		out.sinceAll = strconv.FormatInt(history[i].gen, 10)
	}
	return out
}

// packChangeList splits entries, in order, into the parts of a change
// list (changeList says how); ok is false when they do not fit.
func packChangeList(entries []string, budget int) (parts []string, ok bool) {
	var cur []string
	size := 0
	for _, e := range entries {
		if len(cur) > 0 && size+1+len(e) <= maxChangeList {
			cur, size = append(cur, e), size+1+len(e)
			if len(parts) > 0 {
				budget-- // the comma, in a continuation
			}
		} else {
			if len(cur) > 0 {
				parts = append(parts, strings.Join(cur, ","))
			}
			if len(parts) > 0 {
				budget -= len(changePartKey(len(parts)))
			}
			cur, size = []string{e}, len(e)
			if len(e) > maxChangeList || len(parts) >= maxChangeParts {
				return nil, false
			}
		}
		if len(parts) > 0 {
			budget -= len(e)
			if budget < 0 {
				return nil, false
			}
		}
	}
	if len(cur) > 0 {
		parts = append(parts, strings.Join(cur, ","))
	}
	return parts, true
}

// changeEntries is the whole change list of a beacon's attributes a:
// CHANGE_SERVICES and every continuation CHANGE_SERVICES_<n> there is, in
// order, joined. It reads continuations past maxChangeParts too, so that
// a later version may write more of them without this one trusting a list
// it read only in part.
func changeEntries(a map[string]string) string {
	var parts []string
	for i := range maxAttributes {
		if v := a[changePartKey(i)]; v != "" {
			parts = append(parts, v)
		}
	}
	return strings.Join(parts, ",")
}

// continuationBudget is what Cloud Map's 5,000 characters per instance
// leave for the continuations of a change list (keys and values), given
// the beacon's other attributes fixed and its first part, CHANGE_SINCE and
// CHANGE_SINCE_ALL at their longest.
func continuationBudget(fixed map[string]string) int {
	const generation = 20 // digits of the largest int64
	used := len(attrChangeServices) + maxChangeList +
		len(attrChangeSince) + max(generation, len(restartSince)) +
		len(attrChangeSinceAll) + generation
	for k, v := range fixed {
		used += len(k) + len(v)
	}
	return maxAttributesTotal - used
}

// parseChangeList returns the services CHANGE_SERVICES lists as changed at
// a generation after prev, with their digests. ok is false when the value
// is malformed; readers then check the namespace.
func parseChangeList(s string, prev int64) (map[string]string, bool) {
	out := map[string]string{}
	if s == "" {
		return out, true
	}
	for _, e := range strings.Split(s, ",") {
		f := strings.Split(e, ":")
		if len(f) != 3 || f[0] == "" || f[1] == "" {
			return nil, false
		}
		gen, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return nil, false
		}
		if gen > prev {
			out[f[0]] = f[1]
		}
	}
	return out, true
}

// changesSince returns the services a beacon's attributes a list as
// changed, when that list names every change after prev, the generation
// of the same beacon this reader saw last (seen is false when it saw
// none): when CHANGE_SINCE or CHANGE_SINCE_ALL is prev or earlier. The
// whole list is parsed either way: entries past what CHANGE_SINCE covers
// are of generations up to it, which the generation filter drops.
func changesSince(a map[string]string, prev string, seen bool) (map[string]string, bool) {
	if !seen {
		return nil, false
	}
	p, err := strconv.ParseInt(prev, 10, 64)
	if err != nil {
		return nil, false
	}
	for _, key := range []string{attrChangeSince, attrChangeSinceAll} {
		if s, err := strconv.ParseInt(a[key], 10, 64); err == nil && s <= p {
			return parseChangeList(changeEntries(a), p)
		}
	}
	return nil, false
}
