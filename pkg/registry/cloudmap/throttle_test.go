package cloudmap

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// TestThrottlingRecovers: a proxy in front of moto answers
// ThrottlingException to every third request, and to the first four attempts
// of every RegisterInstance batch; writes and reads are retried with
// jittered backoff, no update is lost, and the throttle counter grows (R2).
func TestThrottlingRecovers(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	proxy := newFaultProxy(t, url)
	ctx := context.Background()
	w := newTestRegistry(t, proxy.URL, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	rd := newTestRegistry(t, proxy.URL, "set1", "cls2", func(o *Options) { o.MotoWorkarounds = true })
	before := totalThrottled()

	proxy.setThrottle(func(target string, n int) bool { return n%3 == 0 })
	run(t, rd)
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatalf("Publish under throttling: %v", err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})

	// A burst of updates, each one throttled several times in a row.
	var streak int
	proxy.setThrottle(func(target string, n int) bool {
		if target == "RegisterInstance" || target == "DeregisterInstance" {
			streak++
			return streak%5 != 0 // four rejections, then one through
		}
		return n%3 == 0
	})
	for i := 0; i < 3; i++ {
		rec.Endpoints[i].Ready = !rec.Endpoints[i].Ready
		rec.Endpoints[i].Terminating = !rec.Endpoints[i].Terminating
		if err := w.Publish(ctx, &rec); err != nil {
			t.Fatalf("update %d under throttling: %v", i, err)
		}
	}
	rec.Endpoints = rec.Endpoints[1:]
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatalf("removal under throttling: %v", err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})
	proxy.setThrottle(nil)

	got := totalThrottled() - before
	if got < float64(proxy.throttled.Load()) || got == 0 {
		t.Fatalf("clusterset_cloudmap_throttled_requests_total grew by %v, the proxy throttled %d requests", got, proxy.throttled.Load())
	}
	t.Logf("throttled %d requests, passed %d; metric grew by %v", proxy.throttled.Load(), proxy.passed.Load(), got)
}

func totalThrottled() float64 {
	var sum float64
	for _, op := range []string{"ListNamespaces", "ListServices", "GetService", "CreateHttpNamespace", "GetOperation",
		"CreateService", "ListInstances", "RegisterInstance", "DeregisterInstance", "DiscoverInstances", "DiscoverInstancesRevision"} {
		sum += testutil.ToFloat64(throttledTotal.WithLabelValues(op))
	}
	return sum
}

// TestOutageKeepsView: while Cloud Map is unreachable the view keeps its
// records, Publish fails with an error, and everything converges after (R2).
func TestOutageKeepsView(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	proxy := newFaultProxy(t, url)
	ctx := context.Background()
	w := newTestRegistry(t, proxy.URL, "set1", "cls1", func(o *Options) { o.MaxAttempts = 3 })
	rd := newTestRegistry(t, proxy.URL, "set1", "cls2")
	run(t, rd)
	rec := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})
	proxy.setDown(true)
	upd := rec
	upd.Endpoints = nil
	if err := w.Publish(ctx, &upd); err == nil {
		t.Fatal("Publish during an outage succeeded")
	}
	time.Sleep(time.Second) // several failed polls
	got, err := rd.Records(rec.Key())
	if err != nil || !equalRecords(got, []registry.Record{rec}) {
		t.Fatalf("view changed during the outage: %v %v", got, err)
	}
	proxy.setDown(false)
	if err := w.Publish(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{upd})
}

// TestCallRate checks the call-rate model of docs/cloudmap.md with the
// change beacons, exactly:
//   - an idle poll is one DiscoverInstancesRevision (the beacon service),
//     whatever the number of services and namespaces;
//   - a foreign sweep (every ForeignSweepPeriod) adds one ListNamespaces and
//     one ListServices page, and no check of the services it knows while
//     every writer bumps beacons;
//   - a change by another cluster of ours is seen at the next poll, which
//     costs the beacon read plus one read of the changed service, whatever
//     its namespace holds, and the polls after it cost no more than idle
//     ones (the read showed the digest the beacon announced);
//   - a write in the AWS controller's format (no beacon) is not seen by the
//     idle polls; the next sweep sees it when it creates a service, and once
//     the clusterset is mixed, a sweep checks every service.
func TestCallRate(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	const services, perNS = 12, 4
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	rd := newTestRegistry(t, url, "set1", "cls2", func(o *Options) {
		o.PollInterval = 200 * time.Millisecond
		o.ForeignSweepPeriod = 3 * time.Second
		o.FullResyncPeriod = time.Hour
	})
	var recs []registry.Record
	for i := 0; i < services; i++ {
		ns := "ns-" + string(rune('a'+i/perNS))
		rec := sampleRecord("set1", "cls1", ns, "svc-"+string(rune('a'+i)), "10.0.0.1")
		if err := w.Publish(ctx, &rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	run(t, rd)
	for i := range recs {
		waitRecords(t, rd, recs[i].Key(), recs[i:i+1])
	}

	// Right after a periodic sweep, the idle polls until the next one.
	_, _, s0 := quiet(rd)
	c0, p0, s0 := waitSweep(t, rd, s0)
	time.Sleep(1500 * time.Millisecond)
	c1, p1, s1 := quiet(rd)
	if s1 != s0 {
		t.Fatalf("a sweep ran %v after the previous one", 1500*time.Millisecond)
	}
	polls := int(p1 - p0)
	if polls < 4 {
		t.Fatalf("only %d polls in 1.5s", polls)
	}
	want := map[string]int{"DiscoverInstancesRevision": polls}
	if got := diff(c1, c0); !reflect.DeepEqual(got, want) {
		t.Errorf("%d idle polls of %d services cost %v, want %v", polls, services, got, want)
	}
	t.Logf("idle: %d polls cost %v", polls, diff(c1, c0))

	// Up to and including the next sweep.
	c2, p2, _ := waitSweep(t, rd, s1)
	polls = int(p2 - p1)
	want = map[string]int{"DiscoverInstancesRevision": polls, "ListNamespaces": 1, "ListServices": 1}
	if got := diff(c2, c1); !reflect.DeepEqual(got, want) {
		t.Errorf("%d polls with one sweep cost %v, want %v", polls, got, want)
	}
	t.Logf("sweep: %d polls cost %v", polls, diff(c2, c1))

	// A change by another cluster of ours: seen at the next poll, for one
	// beacon read and a check of the 4 services of its namespace.
	recs[5].Endpoints[0].Ready = false
	if err := w.Publish(ctx, &recs[5]); err != nil {
		t.Fatal(err)
	}
	c3, p3, s3 := quiet(rd)
	var c4 map[string]int
	var p4, s4 int64
	for {
		c4, p4, s4 = quiet(rd)
		if p4 > p3 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, _ := rd.Records(recs[5].Key()); !equalRecords(got, recs[5:6]) {
		t.Fatalf("the poll after a change by cluster cls1 did not see it: %+v", got)
	}
	if s4 == s3 && p4 == p3+1 {
		want = map[string]int{"DiscoverInstancesRevision": 1, "DiscoverInstances": 2}
		if got := diff(c4, c3); !reflect.DeepEqual(got, want) {
			t.Errorf("the poll that saw a change cost %v, want %v (the beacons and the changed service)", got, want)
		}
		t.Logf("change by another cluster: seen in 1 poll, which cost %v", diff(c4, c3))
		for {
			c5, p5, s5 := quiet(rd)
			if s5 != s4 {
				break // a sweep: start again next time
			}
			if p5 >= p4+3 {
				want = map[string]int{"DiscoverInstancesRevision": int(p5 - p4)}
				if got := diff(c5, c4); !reflect.DeepEqual(got, want) {
					t.Errorf("the %d polls after the one that saw the change cost %v, want %v", p5-p4, got, want)
				}
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Writes in the AWS controller's format bump no beacon. Into a service
	// that exists: neither the idle polls nor the sweep of a clusterset
	// run only by clusterset see it (the full resync would).
	_, _, s5 := waitSweep(t, rd, s4)
	rd.pollMu.Lock()
	registerAWSInstance(t, url, "ns-c", "svc-i", "10.9.9.9")
	written, p5 := time.Now(), rd.ps.polls
	rd.pollMu.Unlock()
	hasAWS := func(key registry.ServiceKey) bool {
		got, _ := rd.Records(key)
		for _, r := range got {
			if r.ClusterID == "aws-cls" {
				return true
			}
		}
		return false
	}
	for {
		_, p, s := quiet(rd)
		if s != s5 {
			t.Fatal("the sweep came before two idle polls")
		}
		if p >= p5+2 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if hasAWS(recs[8].Key()) {
		t.Fatal("an idle poll saw a write that bumped no beacon")
	}
	_, _, s6 := waitSweep(t, rd, s5)
	if hasAWS(recs[8].Key()) {
		t.Fatal("the sweep of a clusterset run only by clusterset checked a service it knew")
	}
	// Into a new service: the next sweep sees it. From then on the
	// clusterset is mixed, and the sweep after that checks every service.
	registerRaw(ctx, t, rawClient(url), "ns-c", "svc-new", awsInstance("10.9.9.8"))
	created := time.Now()
	_, _, s7 := waitSweep(t, rd, s6)
	if !hasAWS(registry.ServiceKey{Namespace: "ns-c", Name: "svc-new"}) {
		t.Fatal("the sweep after the AWS controller's new service did not see it")
	}
	t.Logf("foreign new service seen by the sweep %v after it", time.Since(created).Round(time.Millisecond))
	if !hasAWS(recs[8].Key()) {
		waitSweep(t, rd, s7)
		if !hasAWS(recs[8].Key()) {
			t.Fatal("the sweep of a mixed clusterset did not see the earlier write into an existing service")
		}
	}
	t.Logf("foreign write into an existing service seen %v after it", time.Since(written).Round(time.Millisecond))
}

// TestForeignSweepDisabled: with a negative ForeignSweepPeriod (the flag's
// 0) every service is checked only at the full resync, which still finds a
// write in the AWS controller's format.
func TestForeignSweepDisabled(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	_, rd, rec := exportToReader(t, url, func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = -1
		o.FullResyncPeriod = 2 * time.Second
	})
	c0, p0, s0 := quiet(rd)
	registerAWSInstance(t, url, "demo", "web", "10.9.9.9")
	c1, p1, s1 := waitSweep(t, rd, s0)
	if s1 != s0+1 {
		t.Fatalf("%d sweeps", s1-s0)
	}
	got, _ := rd.Records(rec.Key())
	if len(got) != 2 || got[0].ClusterID != "aws-cls" {
		t.Fatalf("the full resync did not find the foreign write: %+v", got)
	}
	polls := int(p1 - p0)
	d := diff(c1, c0)
	// The full resync reads the service without a revision check first.
	if d["DiscoverInstancesRevision"] != polls || d["DiscoverInstances"] != 1 || d["ListServices"] != 1 || d["ListNamespaces"] != 1 {
		t.Errorf("%d polls with one full resync of one service cost %v", polls, d)
	}
	t.Logf("%d polls with one full resync cost %v", polls, d)
}

// quietForeign returns r's call counts, polls and foreign checks, read
// together between two polls.
func quietForeign(r *Registry) (map[string]int, int64, int64) {
	r.pollMu.Lock()
	defer r.pollMu.Unlock()
	return r.calls.snapshot(), r.ps.polls, r.ps.foreign
}

// foreignChecks returns r's count of foreign checks, read between two polls.
func foreignChecks(r *Registry) int64 {
	r.pollMu.Lock()
	defer r.pollMu.Unlock()
	return r.ps.foreign
}

// quiet returns r's call counts, polls and sweeps between two polls (see
// readerCalls).
func quiet(r *Registry) (map[string]int, int64, int64) {
	r.pollMu.Lock()
	defer r.pollMu.Unlock()
	return readerCalls(r), r.ps.polls, r.ps.sweeps
}

// readerCalls returns r's call counts, without the reads of the beacons
// that showed no new beacon write (ps.beaconGaps): whether a reader reads
// the beacons while moto is half way through replacing one (a
// deregistration, then a registration, each moving the revision) is
// timing, not the cost of a change. The caller holds r.pollMu.
func readerCalls(r *Registry) map[string]int {
	c := r.calls.snapshot()
	c["DiscoverInstances"] -= int(r.ps.beaconGaps)
	return c
}

// waitSweep waits for the end of a sweep after sweep number after.
func waitSweep(t *testing.T, r *Registry, after int64) (map[string]int, int64, int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, p, s := quiet(r)
		if s > after {
			return c, p, s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sweep after sweep %d", after)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// awsInstance is an endpoint instance of cluster aws-cls in clusterset set1,
// port 80, in the AWS Cloud Map MCS controller's format: its InstanceId and
// attributes.
func awsInstance(ip string) map[string]map[string]string {
	return map[string]map[string]string{"tcp-" + strings.ReplaceAll(ip, ".", "_") + "-80": {
		"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": "80", "CLUSTERSET_ID": "set1", "CLUSTER_ID": "aws-cls",
		"ENDPOINT_PORT_NAME": "", "ENDPOINT_PROTOCOL": "TCP", "HOSTNAME": "",
		"K8S_CONTROLLER": "aws-cloud-map-mcs-controller-for-k8s d07e680 (d07e680)", "NODENAME": "",
		"READY": "true", "SERVICE_EXPORT_CREATION_TIMESTAMP": "1665108776000", "SERVICE_PORT": "80",
		"SERVICE_PORT_NAME": "", "SERVICE_PROTOCOL": "TCP", "SERVICE_TARGET_PORT": "80", "SERVICE_TYPE": "ClusterSetIP",
	}}
}

// registerAWSInstance writes awsInstance(ip) the way the AWS Cloud Map MCS
// controller does (no beacon) in an existing service.
func registerAWSInstance(t *testing.T, url, namespace, service, ip string) {
	t.Helper()
	registerExisting(t, url, namespace, service, awsInstance(ip))
}

// registerExisting registers insts (InstanceId -> attributes) in the
// existing service namespace/service, bypassing every Registry.
func registerExisting(t *testing.T, url, namespace, service string, insts map[string]map[string]string) {
	t.Helper()
	ctx := context.Background()
	c := rawClient(url)
	id := existingServiceID(t, url, namespace, service)
	for iid, attrs := range insts {
		if _, err := c.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: aws.String(id), InstanceId: aws.String(iid), Attributes: attrs}); err != nil {
			t.Fatal(err)
		}
	}
}

// existingServiceID returns the ID of the service namespace/service.
func existingServiceID(t *testing.T, url, namespace, service string) string {
	t.Helper()
	ctx := context.Background()
	c := rawClient(url)
	nsID := rawNamespaceID(ctx, t, c, namespace)
	svcs, err := c.ListServices(ctx, &sd.ListServicesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs.Services {
		if aws.ToString(s.Name) != service {
			continue
		}
		g, err := c.GetService(ctx, &sd.GetServiceInput{Id: s.Id})
		if err != nil || aws.ToString(g.Service.NamespaceId) != nsID {
			continue
		}
		return aws.ToString(s.Id)
	}
	t.Fatalf("no service %s/%s", namespace, service)
	return ""
}

func diff(a, b map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range a {
		if d := v - b[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// TestForeignPoll: once the view holds a record of another controller (a
// mixed clusterset), that controller's writes arrive within
// ForeignPollInterval, long before the sweep: in the namespaces that hold
// its records, in a new namespace, and as a new service in a namespace
// without its records. A clusterset without foreign records pays nothing
// for it, and a mixed one pays 1 ListNamespaces, 1 ListServices and one
// DiscoverInstancesRevision per service of the mixed namespaces per check.
func TestForeignPoll(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) { o.MotoWorkarounds = true })
	mk := func(o *Options) {
		o.PollInterval = 100 * time.Millisecond
		o.ForeignSweepPeriod = time.Hour
		o.FullResyncPeriod = time.Hour
		o.ForeignPollInterval = 400 * time.Millisecond
	}
	web := sampleRecord("set1", "cls1", "demo", "web", "10.0.0.1")
	api := sampleRecord("set1", "cls1", "demo", "api", "10.0.0.2")
	prod := sampleRecord("set1", "cls1", "prod", "db", "10.0.0.3")
	for _, rec := range []*registry.Record{&web, &api, &prod} {
		if err := w.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}

	// Without foreign records: no foreign check at all.
	pure := newTestRegistry(t, url, "set1", "cls3", mk)
	run(t, pure)
	waitRecords(t, pure, web.Key(), []registry.Record{web})
	c0, p0, _ := quiet(pure)
	time.Sleep(time.Second)
	c1, p1, _ := quiet(pure)
	if got, want := diff(c1, c0), map[string]int{"DiscoverInstancesRevision": int(p1 - p0)}; !reflect.DeepEqual(got, want) || foreignChecks(pure) != 0 {
		t.Errorf("%d idle polls without foreign records cost %v and %d foreign checks, want %v and none", p1-p0, got, foreignChecks(pure), want)
	}

	// The AWS controller exports web too; a reader started now finds it at
	// its first (full) sweep, and demo is mixed from then on.
	registerAWSInstance(t, url, "demo", "web", "10.9.9.1")
	rd := newTestRegistry(t, url, "set1", "cls2", mk)
	run(t, rd)
	hasAWS := func(key registry.ServiceKey, ip string) func() bool {
		return func() bool {
			got, _ := rd.Records(key)
			for _, r := range got {
				for _, e := range r.Endpoints {
					if r.ClusterID == "aws-cls" && e.Address == ip {
						return true
					}
				}
			}
			return false
		}
	}
	eventually(t, 30*time.Second, "the first sweep finds the AWS controller's record", hasAWS(web.Key(), "10.9.9.1"))
	_, _, s0 := quiet(rd)

	// An idle mixed clusterset: per foreign check, the two listings and the
	// revisions of demo's two services.
	c0, p0, f0 := quietForeign(rd)
	time.Sleep(1500 * time.Millisecond)
	c1, p1, f1 := quietForeign(rd)
	checks := int(f1 - f0)
	if checks < 3 {
		t.Fatalf("%d foreign checks in 1.5s with ForeignPollInterval 400ms", checks)
	}
	want := map[string]int{"DiscoverInstancesRevision": int(p1-p0) + 2*checks, "ListNamespaces": checks, "ListServices": checks}
	if got := diff(c1, c0); !reflect.DeepEqual(got, want) {
		t.Errorf("%d idle polls with %d foreign checks cost %v, want %v", p1-p0, checks, got, want)
	}
	t.Logf("mixed, idle: %d polls with %d foreign checks cost %v", p1-p0, checks, diff(c1, c0))

	c := rawClient(url)
	for _, step := range []struct {
		what  string
		write func()
		key   registry.ServiceKey
		ip    string
	}{
		{"a second endpoint in a mixed namespace", func() { registerAWSInstance(t, url, "demo", "web", "10.9.9.2") },
			web.Key(), "10.9.9.2"},
		{"an existing service of a mixed namespace", func() { registerAWSInstance(t, url, "demo", "api", "10.9.9.3") },
			api.Key(), "10.9.9.3"},
		{"a new service in a new namespace", func() { registerRaw(ctx, t, c, "newns", "fresh", awsInstance("10.9.9.4")) },
			registry.ServiceKey{Namespace: "newns", Name: "fresh"}, "10.9.9.4"},
		{"a new service in a namespace without foreign records", func() { registerRaw(ctx, t, c, "prod", "cache", awsInstance("10.9.9.5")) },
			registry.ServiceKey{Namespace: "prod", Name: "cache"}, "10.9.9.5"},
	} {
		start := time.Now()
		step.write()
		// One interval, a poll on each side, and slack for a loaded machine.
		eventually(t, 400*time.Millisecond+2*100*time.Millisecond+time.Second, step.what, hasAWS(step.key, step.ip))
		t.Logf("%s: seen after %v", step.what, time.Since(start).Round(time.Millisecond))
	}
	if _, _, s := quiet(rd); s != s0 {
		t.Fatalf("%d sweeps ran; the writes must have been found by the foreign checks", s-s0)
	}
}
