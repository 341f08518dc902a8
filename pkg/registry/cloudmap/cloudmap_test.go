package cloudmap

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// standardAttrs are the attributes of the AWS Cloud Map MCS controller's
// endpoint instances.
var standardAttrs = []string{
	"AWS_INSTANCE_IPV4", "AWS_INSTANCE_PORT", "CLUSTERSET_ID", "CLUSTER_ID",
	"ENDPOINT_PORT_NAME", "ENDPOINT_PROTOCOL", "HOSTNAME", "K8S_CONTROLLER",
	"NODENAME", "READY", "SERVICE_EXPORT_CREATION_TIMESTAMP", "SERVICE_PORT",
	"SERVICE_PORT_NAME", "SERVICE_PROTOCOL", "SERVICE_TARGET_PORT", "SERVICE_TYPE",
}

// TestPublishReadUpdate: a record with every field round-trips through moto
// to another cluster (E1, I6); a READY flip is one RegisterInstance and is
// seen by the reader, despite moto keeping a second copy of the instance.
func TestPublishReadUpdate(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1")
	rd := newTestRegistry(t, url, "set1", "cls2")
	run(t, rd)
	// The writer runs its view too, as every controller does: it repairs
	// the stale copy moto keeps of an instance registered twice and then
	// deregistered once.
	run(t, w)

	rec := sampleRecord("set1", "cls1", "demo", "nginx-hello", "10.0.0.1", "10.0.0.2")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})

	// Publishing the same record again writes nothing.
	before := w.calls.snapshot()
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	after := w.calls.snapshot()
	if after["RegisterInstance"] != before["RegisterInstance"] || after["DeregisterInstance"] != before["DeregisterInstance"] {
		t.Fatalf("idempotent publish wrote: before %v after %v", before, after)
	}

	// READY flip on one endpoint: two instances (two ports) and the change
	// beacon of the namespace, nothing else.
	rec.Endpoints[1].Ready = !rec.Endpoints[1].Ready
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	after2 := w.calls.snapshot()
	if got := after2["RegisterInstance"] - after["RegisterInstance"]; got != 3 {
		t.Fatalf("READY flip registered %d instances, want 3 (one per port, one beacon)", got)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})

	// Remove an endpoint: two deregistrations.
	rec.Endpoints = rec.Endpoints[:1]
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	if got := w.calls.snapshot()["DeregisterInstance"] - after2["DeregisterInstance"]; got != 2 {
		t.Fatalf("endpoint removal deregistered %d instances, want 2", got)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})
}

// TestZeroEndpoints: an export scaled to zero keeps its record (the marker
// instance), so importers keep the ServiceImport.
func TestZeroEndpoints(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1")
	rd := newTestRegistry(t, url, "set1", "cls2")
	run(t, rd)

	rec := sampleRecord("set1", "cls1", "demo", "empty")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, rec.Key(), []registry.Record{rec})
	keys, err := rd.Keys()
	if err != nil || len(keys) != 1 || keys[0] != rec.Key() {
		t.Fatalf("Keys() = %v, %v", keys, err)
	}
}

// TestOurInstancesCarryStandardAttributes: every endpoint instance we write
// has every attribute the AWS controller reads, and its InstanceId format;
// the marker has no address and no CLUSTERSET_ID, so the AWS controller's
// filtered reads never return it (TestAWSControllerSeesNoClustersetInternals).
func TestOurInstancesCarryStandardAttributes(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1")
	rec := sampleRecord("set1", "cls1", "demo", "nginx-hello", "10.10.86.76")
	if err := w.Publish(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	ns, _, _ := w.namespace(ctx, "demo", false)
	svc, _, _ := w.service(ctx, ns, "nginx-hello", false)
	insts, err := w.api.listInstances(ctx, svc.ID)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]map[string]string{}
	for _, in := range insts {
		ids[in.ID] = in.Attrs
	}
	for _, id := range []string{"tcp-10_10_86_76-8080", "udp-10_10_86_76-53"} {
		a, ok := ids[id]
		if !ok {
			t.Fatalf("no instance %s among %v", id, keysOf(ids))
		}
		for _, k := range standardAttrs {
			if _, ok := a[k]; !ok {
				t.Errorf("instance %s lacks %s", id, k)
			}
		}
		if len(a) > maxAttributes {
			t.Errorf("instance %s has %d attributes", id, len(a))
		}
	}
	a := ids["tcp-10_10_86_76-8080"]
	want := map[string]string{
		"AWS_INSTANCE_IPV4": "10.10.86.76", "AWS_INSTANCE_PORT": "8080", "CLUSTERSET_ID": "set1", "CLUSTER_ID": "cls1",
		"ENDPOINT_PORT_NAME": "http", "ENDPOINT_PROTOCOL": "TCP", "READY": "true", "SERVICE_PORT": "80",
		"SERVICE_PORT_NAME": "http", "SERVICE_PROTOCOL": "TCP", "SERVICE_TARGET_PORT": "8080", "SERVICE_TYPE": "ClusterSetIP",
		"SERVICE_EXPORT_CREATION_TIMESTAMP": "1665108776123", "NODENAME": "node-1", "HOSTNAME": "pod-0",
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s = %q, want %q", k, a[k], v)
		}
	}
	m, ok := ids[markerID("set1", "cls1")]
	if !ok {
		t.Fatalf("no marker instance among %v", keysOf(ids))
	}
	if _, has := m[attrIPv4]; has || m[attrReady] != "false" {
		t.Errorf("marker must have no address and READY=false: %v", m)
	}
	if _, has := m[attrClusterSetID]; has || m[attrOwnerClusterSetID] != "set1" {
		t.Errorf("marker must carry OWNER_CLUSTERSET_ID instead of CLUSTERSET_ID: %v", m)
	}
}

func keysOf(m map[string]map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestReadAWSControllerFormat: instances in the AWS Cloud Map MCS
// controller's exact format (only its attributes, its InstanceIds, a
// namespace and service it created) are imported with sensible defaults;
// other clustersets, malformed instances and unknown attributes are ignored.
func TestReadAWSControllerFormat(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	c := rawClient(url)
	nsOut, err := c.CreateHttpNamespace(ctx, &sd.CreateHttpNamespaceInput{Name: aws.String("demo")})
	if err != nil {
		t.Fatal(err)
	}
	op, err := c.GetOperation(ctx, &sd.GetOperationInput{OperationId: nsOut.OperationId})
	if err != nil {
		t.Fatal(err)
	}
	nsID := op.Operation.Targets["NAMESPACE"]
	svc, err := c.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String("nginx-hello"), NamespaceId: aws.String(nsID)})
	if err != nil {
		t.Fatal(err)
	}
	awsInst := func(ip, ready, node string) map[string]string {
		return map[string]string{
			"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": "80", "CLUSTERSET_ID": "clusterset1", "CLUSTER_ID": "cls1",
			"ENDPOINT_PORT_NAME": "", "ENDPOINT_PROTOCOL": "TCP", "HOSTNAME": "",
			"K8S_CONTROLLER": "aws-cloud-map-mcs-controller-for-k8s d07e680 (d07e680)", "NODENAME": node,
			"READY": ready, "SERVICE_EXPORT_CREATION_TIMESTAMP": "1665108776000", "SERVICE_PORT": "80",
			"SERVICE_PORT_NAME": "", "SERVICE_PROTOCOL": "TCP", "SERVICE_TARGET_PORT": "80", "SERVICE_TYPE": "ClusterSetIP",
		}
	}
	fixtures := map[string]map[string]string{
		"tcp-10_10_86_76-80":  awsInst("10.10.86.76", "true", "ip-10-10-77-143.ap-southeast-2.compute.internal"),
		"tcp-10_10_78_125-80": awsInst("10.10.78.125", "false", "ip-10-10-77-143.ap-southeast-2.compute.internal"),
		"tcp-10_10_1_1-80":    awsInst("10.10.1.1", "true", ""),
		"broken":              {"CLUSTERSET_ID": "clusterset1", "CLUSTER_ID": "cls9", "AWS_INSTANCE_PORT": "x"},
	}
	fixtures["tcp-10_10_1_1-80"]["CLUSTERSET_ID"] = "other-set"
	fixtures["tcp-10_10_86_76-80"]["SOME_FUTURE_ATTRIBUTE"] = "ignored"
	for id, attrs := range fixtures {
		if _, err := c.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: svc.Service.Id, InstanceId: aws.String(id), Attributes: attrs}); err != nil {
			t.Fatal(err)
		}
	}

	rd := newTestRegistry(t, url, "clusterset1", "cls2")
	run(t, rd)
	want := []registry.Record{{
		ClusterSetID: "clusterset1", ClusterID: "cls1", Namespace: "demo", Name: "nginx-hello",
		Spec: registry.ServiceSpec{
			Type:            registry.ClusterSetIP,
			Ports:           []registry.Port{{Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: "80"}},
			SessionAffinity: corev1.ServiceAffinityNone,
			IPFamilies:      []corev1.IPFamily{corev1.IPv4Protocol},
			ExportCreated:   time.UnixMilli(1665108776000).UTC(),
		},
		Endpoints: []registry.Endpoint{
			{Address: "10.10.78.125", AddressType: discoveryv1.AddressTypeIPv4, Ports: []registry.EndpointPort{{Protocol: corev1.ProtocolTCP, Port: 80}},
				Ready: false, Serving: false, NodeName: "ip-10-10-77-143.ap-southeast-2.compute.internal"},
			{Address: "10.10.86.76", AddressType: discoveryv1.AddressTypeIPv4, Ports: []registry.EndpointPort{{Protocol: corev1.ProtocolTCP, Port: 80}},
				Ready: true, Serving: true, NodeName: "ip-10-10-77-143.ap-southeast-2.compute.internal"},
		},
	}}
	waitRecords(t, rd, registry.ServiceKey{Namespace: "demo", Name: "nginx-hello"}, want)

	// Publishing beside it and withdrawing must leave the AWS controller's
	// instances and its service alone.
	w := newTestRegistry(t, url, "clusterset1", "cls2")
	mine := sampleRecord("clusterset1", "cls2", "demo", "nginx-hello", "10.20.0.1")
	if err := w.Publish(ctx, &mine); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, mine.Key(), append(want, mine))
	if err := w.Withdraw(ctx, mine.Key()); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, mine.Key(), want)
	if _, err := c.GetService(ctx, &sd.GetServiceInput{Id: svc.Service.Id}); err != nil {
		t.Fatalf("service of the AWS controller deleted: %v", err)
	}
}

// TestIPv6AndCollisions: IPv6 endpoints use AWS_INSTANCE_IPV6 and the AWS
// controller's id form; an InstanceId already held by another cluster in the
// same service is not overwritten (ours gets a cluster suffix); two service
// ports on one endpoint port get distinct InstanceIds.
func TestIPv6AndCollisions(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	a := newTestRegistry(t, url, "set1", "cls-a")
	b := newTestRegistry(t, url, "set1", "cls-b")
	run(t, b)

	ra := sampleRecord("set1", "cls-a", "demo", "web", "10.0.0.1")
	ra.Endpoints = append(ra.Endpoints, registry.Endpoint{Address: "fd00::1", AddressType: discoveryv1.AddressTypeIPv6,
		Ports: []registry.EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}}, Ready: true, Serving: true})
	ra.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	if err := a.Publish(ctx, &ra); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, b, ra.Key(), []registry.Record{ra})

	// Cluster b has an endpoint with the same IP and port (overlapping pod
	// CIDRs); it waits for its view to know a's instances.
	rb := sampleRecord("set1", "cls-b", "demo", "web", "10.0.0.1")
	rb.Spec.Ports = append(rb.Spec.Ports, registry.Port{Name: "alt", Protocol: corev1.ProtocolTCP, Port: 81, TargetPort: "8080"})
	rb.Endpoints[0].Ports = append(rb.Endpoints[0].Ports, registry.EndpointPort{Name: "alt", Protocol: corev1.ProtocolTCP, Port: 8080})
	if err := b.Publish(ctx, &rb); err != nil {
		t.Fatal(err)
	}
	rbWant := rb
	rbWant.Endpoints = []registry.Endpoint{rb.Endpoints[0]}
	rbWant.Endpoints[0].Ports = []registry.EndpointPort{
		{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
		{Name: "alt", Protocol: corev1.ProtocolTCP, Port: 8080},
		{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080},
	}
	waitRecords(t, b, ra.Key(), []registry.Record{ra, rbWant})

	ns, _, _ := a.namespace(ctx, "demo", false)
	svc, _, _ := a.service(ctx, ns, "web", false)
	insts, err := a.api.listInstances(ctx, svc.ID)
	if err != nil {
		t.Fatal(err)
	}
	insts, _ = dedupe(insts)
	ids := map[string]string{}
	for _, in := range insts {
		ids[in.ID] = in.Attrs[attrClusterID]
	}
	if ids["tcp-10_0_0_1-8080"] != "cls-a" || ids["tcp-fd00__1-8080"] != "cls-a" {
		t.Fatalf("cluster a's instances were overwritten or misnamed: %v", ids)
	}
	suffixed := 0
	for id, c := range ids {
		if c == "cls-b" && strings.HasPrefix(id, "tcp-10_0_0_1-8080"+clusterSuffix("cls-b")) {
			suffixed++
		}
	}
	if suffixed != 2 {
		t.Fatalf("want cluster b's two TCP instances on 10.0.0.1:8080 suffixed, got %v", ids)
	}
}

// TestCleanup: Withdraw deregisters only this cluster's instances; the
// service we created is deleted when the last cluster withdraws; a service
// created by someone else is kept; an existing private DNS namespace is used
// as it is and no namespace is ever deleted (E4, E5, R3).
func TestCleanup(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	c := rawClient(url)
	a := newTestRegistry(t, url, "set1", "cls-a")
	b := newTestRegistry(t, url, "set1", "cls-b")
	rd := newTestRegistry(t, url, "set1", "reader")
	run(t, rd)

	// A private DNS namespace "prod" created by someone else.
	if _, err := c.CreatePrivateDnsNamespace(ctx, &sd.CreatePrivateDnsNamespaceInput{Name: aws.String("prod"), Vpc: aws.String("vpc-12345")}); err != nil {
		t.Fatal(err)
	}
	ra := sampleRecord("set1", "cls-a", "prod", "api", "10.0.0.1")
	rb := sampleRecord("set1", "cls-b", "prod", "api", "10.1.0.1")
	for _, p := range []struct {
		r   *Registry
		rec *registry.Record
	}{{a, &ra}, {b, &rb}} {
		if err := p.r.Publish(ctx, p.rec); err != nil {
			t.Fatal(err)
		}
	}
	waitRecords(t, rd, ra.Key(), []registry.Record{ra, rb})
	nss, err := a.api.listNamespaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, n := range nss {
		if n.Name == "prod" {
			count++
			if n.Type != sdtypes.NamespaceTypeDnsPrivate {
				t.Fatalf("namespace prod has type %s, want the existing DNS_PRIVATE", n.Type)
			}
		}
	}
	if count != 1 {
		t.Fatalf("%d namespaces named prod", count)
	}

	if err := a.Withdraw(ctx, ra.Key()); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, ra.Key(), []registry.Record{rb})
	if err := a.Withdraw(ctx, ra.Key()); err != nil {
		t.Fatalf("withdrawing twice: %v", err)
	}
	if err := b.Withdraw(ctx, rb.Key()); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, rd, ra.Key(), nil)
	ns, _, _ := a.namespace(ctx, "prod", false)
	if _, ok, err := a.findService(ctx, ns, "api"); err != nil || ok {
		t.Fatalf("empty service we created still exists (found=%v, err=%v)", ok, err)
	}
	if _, err := c.GetNamespace(ctx, &sd.GetNamespaceInput{Id: aws.String(ns.ID)}); err != nil {
		t.Fatalf("namespace deleted: %v", err)
	}

	// A service someone else created stays even when empty.
	other, err := c.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String("theirs"), NamespaceId: aws.String(ns.ID)})
	if err != nil {
		t.Fatal(err)
	}
	rt := sampleRecord("set1", "cls-a", "prod", "theirs", "10.0.0.9")
	if err := a.Publish(ctx, &rt); err != nil {
		t.Fatal(err)
	}
	if err := a.Withdraw(ctx, rt.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetService(ctx, &sd.GetServiceInput{Id: other.Service.Id}); err != nil {
		t.Fatalf("someone else's service was deleted: %v", err)
	}
	insts, err := a.api.listInstances(ctx, aws.ToString(other.Service.Id))
	if err != nil || len(insts) != 0 {
		t.Fatalf("instances left after withdraw: %v %v", insts, err)
	}
}

// TestQuotaAndAttributeErrors: records past the instance quota or with an
// attribute value past 1,024 characters give typed errors and write nothing.
func TestQuotaAndAttributeErrors(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	w := newTestRegistry(t, url, "set1", "cls1", func(o *Options) {
		o.MaxInstancesPerService = 5
		o.MaxInstancesPerNamespace = 7
	})
	big := sampleRecord("set1", "cls1", "demo", "big", "10.0.0.1", "10.0.0.2", "10.0.0.3") // 6 + marker
	err := w.Publish(ctx, &big)
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Scope != "service" || qe.Limit != 5 {
		t.Fatalf("Publish past the service quota: %v", err)
	}
	t.Logf("quota error: %v", err)

	ok := sampleRecord("set1", "cls1", "demo", "small", "10.0.0.1") // 3 instances
	if err := w.Publish(ctx, &ok); err != nil {
		t.Fatal(err)
	}
	ok2 := sampleRecord("set1", "cls1", "demo", "small2", "10.0.0.1", "10.0.0.2") // 5 instances
	if err := w.Publish(ctx, &ok2); !errors.As(err, &qe) || qe.Scope != "namespace" {
		t.Fatalf("Publish past the namespace quota: %v", err)
	}

	long := sampleRecord("set1", "cls1", "other", "long", "10.0.0.1")
	long.Spec.ExportedAnnotations = map[string]string{"huge": strings.Repeat("x", 1100)}
	err = w.Publish(ctx, &long)
	var ae *AttributeError
	if !errors.As(err, &ae) || ae.Attribute != attrExportedAnnots {
		t.Fatalf("Publish with a 1,100 character annotation: %v", err)
	}
	t.Logf("attribute error: %v", err)
	if _, found, err := w.namespace(ctx, "other", false); err != nil || found {
		t.Fatalf("an invalid record created its namespace (found=%v err=%v)", found, err)
	}
}

// TestLiveness: each cluster's heartbeat is read back by every cluster of
// the clusterset, and only of that clusterset (R1).
func TestLiveness(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	a := newTestRegistry(t, url, "set1", "cls-a")
	b := newTestRegistry(t, url, "set1", "cls-b")
	x := newTestRegistry(t, url, "set2", "cls-a")
	if l, err := a.Liveness(ctx); err != nil || len(l) != 0 {
		t.Fatalf("Liveness before any heartbeat = %v, %v", l, err)
	}
	start := time.Now().Add(-time.Millisecond)
	for _, r := range []*Registry{a, b, x} {
		if err := r.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if err := a.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := b.Liveness(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l["cls-a"].RenewTime.Before(l["cls-b"].RenewTime) || l["cls-b"].RenewTime.Before(start) {
		t.Fatalf("Liveness = %v", l)
	}
	// Heartbeats never show up as records.
	run(t, b)
	eventually(t, 10*time.Second, "sync", b.HasSynced)
	if keys, _ := b.Keys(); len(keys) != 0 {
		t.Fatalf("heartbeats read as records: %v", keys)
	}
}
