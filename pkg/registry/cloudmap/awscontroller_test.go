package cloudmap

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	sdtypes "github.com/aws/aws-sdk-go-v2/service/servicediscovery/types"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// Interoperability with the AWS Cloud Map MCS controller, in both directions.
//
// The AWS controller cannot be built here (its module is not served by the
// module proxy this project may use), so these tests carry what it writes as
// fixtures (testdata/awscontroller/writes.json, one case per record shape its
// GetCloudMapAttributes produces) and what it reads as awsControllerRead: its
// calls (ListNamespaces, ListServices filtered on NAMESPACE_ID,
// DiscoverInstances filtered on CLUSTERSET_ID with HealthStatus ALL) and its
// parsing rules (model.NewEndpointFromInstance: which attributes must be
// present and how they parse). Both were taken from its source (v0.3.1 and the commits after it, up to 57f4231).

// awsEndpoint is one instance as the AWS controller understands it.
type awsEndpoint struct {
	ID, IP, AddressType                          string // AddressType from the attribute the address is in
	ClusterID, ClusterSetID, ServiceType         string
	Port, ServicePort                            int32
	PortName, Protocol                           string
	ServicePortName, ServiceProtocol, TargetPort string
	Ready                                        bool
	ExportCreated                                int64
	Hostname, NodeName                           string
}

// awsParse applies the AWS controller's parsing rules to one instance's
// attributes. It fails where the AWS controller logs "skipping instance to
// endpoint conversion".
func awsParse(id string, a map[string]string) (awsEndpoint, error) {
	e := awsEndpoint{ID: id}
	str := func(k string, dst *string) error {
		v, ok := a[k]
		if !ok {
			return fmt.Errorf("cannot find the attribute %s", k)
		}
		*dst = v
		return nil
	}
	port := func(k string, dst *int32) error {
		var s string
		if err := str(k, &s); err != nil {
			return err
		}
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return fmt.Errorf("failed to parse the %s as int: %w", k, err)
		}
		*dst = int32(n)
		return nil
	}
	if v, ok := a["AWS_INSTANCE_IPV6"]; ok {
		e.IP, e.AddressType = v, "IPv6"
	}
	if v, ok := a["AWS_INSTANCE_IPV4"]; ok { // IPv4 wins when both are there, as in the AWS controller
		e.IP, e.AddressType = v, "IPv4"
	}
	var ready, created string
	for _, err := range []error{
		str("ENDPOINT_PORT_NAME", &e.PortName), port("AWS_INSTANCE_PORT", &e.Port), str("ENDPOINT_PROTOCOL", &e.Protocol),
		str("SERVICE_TARGET_PORT", &e.TargetPort), str("SERVICE_PORT_NAME", &e.ServicePortName),
		port("SERVICE_PORT", &e.ServicePort), str("SERVICE_PROTOCOL", &e.ServiceProtocol),
		str("SERVICE_TYPE", &e.ServiceType), str("CLUSTER_ID", &e.ClusterID), str("CLUSTERSET_ID", &e.ClusterSetID),
		str("READY", &ready), str("SERVICE_EXPORT_CREATION_TIMESTAMP", &created),
	} {
		if err != nil {
			return e, err
		}
	}
	var err error
	if e.Ready, err = strconv.ParseBool(ready); err != nil {
		return e, fmt.Errorf("failed to parse the READY as bool: %w", err)
	}
	if e.ExportCreated, err = strconv.ParseInt(created, 10, 64); err != nil {
		return e, fmt.Errorf("failed to parse the SERVICE_EXPORT_CREATION_TIMESTAMP as int: %w", err)
	}
	e.Hostname, e.NodeName = a["HOSTNAME"], a["NODENAME"]
	return e, nil
}

// awsService is one Cloud Map service as the AWS controller reads it.
type awsService struct {
	Endpoints []awsEndpoint // sorted by ID
	Errors    []string      // instances it would log and skip
}

// awsControllerRead makes the AWS controller's calls for one Kubernetes
// namespace of clusterSetID and returns every service it would import, by
// name.
func awsControllerRead(ctx context.Context, t *testing.T, c *sd.Client, clusterSetID, namespace string) map[string]awsService {
	t.Helper()
	nsID := ""
	pages := sd.NewListNamespacesPaginator(c, &sd.ListNamespacesInput{})
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ns := range out.Namespaces {
			if aws.ToString(ns.Name) == namespace && (ns.Type == sdtypes.NamespaceTypeHttp || ns.Type == sdtypes.NamespaceTypeDnsPrivate) {
				nsID = aws.ToString(ns.Id)
			}
		}
	}
	if nsID == "" {
		return nil
	}
	out := map[string]awsService{}
	svcPages := sd.NewListServicesPaginator(c, &sd.ListServicesInput{Filters: []sdtypes.ServiceFilter{{
		Name: sdtypes.ServiceFilterNameNamespaceId, Values: []string{nsID},
	}}})
	for svcPages.HasMorePages() {
		page, err := svcPages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.Services {
			d, err := c.DiscoverInstances(ctx, &sd.DiscoverInstancesInput{
				NamespaceName: aws.String(namespace), ServiceName: s.Name,
				HealthStatus: sdtypes.HealthStatusFilterAll, MaxResults: aws.Int32(1000),
				QueryParameters: map[string]string{"CLUSTERSET_ID": clusterSetID},
			})
			if err != nil {
				t.Fatalf("DiscoverInstances %s/%s: %v", namespace, aws.ToString(s.Name), err)
			}
			var svc awsService
			for _, in := range d.Instances {
				e, err := awsParse(aws.ToString(in.InstanceId), in.Attributes)
				if err != nil {
					svc.Errors = append(svc.Errors, aws.ToString(in.InstanceId)+": "+err.Error())
					continue
				}
				svc.Endpoints = append(svc.Endpoints, e)
			}
			slices.SortFunc(svc.Endpoints, func(a, b awsEndpoint) int { return strings.Compare(a.ID, b.ID) })
			out[aws.ToString(s.Name)] = svc
		}
	}
	return out
}

// awsFixture is one record shape the AWS controller writes.
type awsFixture struct {
	Name        string
	Description string
	Instances   map[string]map[string]string // InstanceId -> attributes
}

func loadAWSFixtures(t *testing.T) []awsFixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "awscontroller", "writes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fs []awsFixture
	if err := json.Unmarshal(b, &fs); err != nil {
		t.Fatal(err)
	}
	if len(fs) == 0 {
		t.Fatal("no fixtures")
	}
	return fs
}

// rawNamespaceID returns the ID of the namespace named name, or "".
func rawNamespaceID(ctx context.Context, t testing.TB, c *sd.Client, name string) string {
	t.Helper()
	list, err := c.ListNamespaces(ctx, &sd.ListNamespacesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range list.Namespaces {
		if aws.ToString(n.Name) == name {
			return aws.ToString(n.Id)
		}
	}
	return ""
}

// registerRaw creates namespace ns and service svc the way the AWS controller
// does (HTTP namespace, service without DNS) and registers instances in it.
func registerRaw(ctx context.Context, t *testing.T, c *sd.Client, ns, svc string, insts map[string]map[string]string) {
	t.Helper()
	nsID := rawNamespaceID(ctx, t, c, ns)
	if nsID == "" {
		created, err := c.CreateHttpNamespace(ctx, &sd.CreateHttpNamespaceInput{Name: aws.String(ns)})
		if err != nil {
			t.Fatal(err)
		}
		op, err := c.GetOperation(ctx, &sd.GetOperationInput{OperationId: created.OperationId})
		if err != nil {
			t.Fatal(err)
		}
		nsID = op.Operation.Targets["NAMESPACE"]
	}
	s, err := c.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String(svc), NamespaceId: aws.String(nsID)})
	if err != nil {
		t.Fatal(err)
	}
	for id, attrs := range insts {
		if _, err := c.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: s.Service.Id, InstanceId: aws.String(id), Attributes: attrs}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAWSControllerInterop checks every fixture in both directions:
//   - AWS controller -> clusterset: the fixture's instances, registered as the
//     AWS controller registers them, are imported as the record in
//     testdata/awscontroller/NAME.record.json (UPDATE_FIXTURES=1 rewrites
//     those files; review the diff);
//   - clusterset -> AWS controller: that record, published by clusterset as
//     the same cluster, reads back through the AWS controller's calls and
//     parsing rules exactly as the fixture's own instances do, with nothing
//     it would log as unparsable.
func TestAWSControllerInterop(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	c := rawClient(url)
	fixtures := loadAWSFixtures(t)
	for _, f := range fixtures {
		registerRaw(ctx, t, c, "fromaws", f.Name, f.Instances)
	}
	reader := newTestRegistry(t, url, "clusterset1", "reader")
	run(t, reader)
	fromAWS := awsControllerRead(ctx, t, c, "clusterset1", "fromaws")

	for _, f := range fixtures {
		t.Run(f.Name, func(t *testing.T) {
			golden := filepath.Join("testdata", "awscontroller", f.Name+".record.json")
			key := registry.ServiceKey{Namespace: "fromaws", Name: f.Name}
			var got []registry.Record
			eventually(t, 30*time.Second, "record of "+key.String(), func() bool {
				got, _ = reader.Records(key)
				return len(got) == 1
			})
			if os.Getenv("UPDATE_FIXTURES") == "1" {
				b, err := json.MarshalIndent(got[0], "", " ")
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, append(b, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (UPDATE_FIXTURES=1 writes it)", err)
			}
			var want registry.Record
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			if !equalRecords(got, []registry.Record{want}) {
				t.Fatalf("AWS controller's %s imported as\n%+v\nwant (%s)\n%+v", f.Name, got[0], golden, want)
			}

			// The other direction: publish the same record as the same
			// cluster, in another namespace.
			w := newTestRegistry(t, url, want.ClusterSetID, want.ClusterID)
			mine := want
			mine.Namespace = "fromclusterset"
			if err := w.Publish(ctx, &mine); err != nil {
				t.Fatal(err)
			}
			theirs := fromAWS[f.Name]
			if len(theirs.Errors) > 0 || len(theirs.Endpoints) != len(f.Instances) {
				t.Fatalf("fixture does not parse by the AWS controller's rules: %+v", theirs)
			}
			ours := awsControllerRead(ctx, t, c, "clusterset1", "fromclusterset")[f.Name]
			if len(ours.Errors) > 0 {
				t.Errorf("the AWS controller would log errors for clusterset's instances: %v", ours.Errors)
			}
			if !slices.Equal(ours.Endpoints, theirs.Endpoints) {
				t.Errorf("the AWS controller reads clusterset's record as\n%+v\nand its own as\n%+v", ours.Endpoints, theirs.Endpoints)
			}
		})
	}
}

// TestAWSControllerSeesNoClustersetInternals: whatever clusterset writes (a
// service exported with zero endpoints, a headless service without ports,
// heartbeats, change beacons, a second namespace), the AWS controller's
// reads find only endpoint instances it parses, and only the services of the
// namespace it asks for. Before markers and port-less endpoints carried
// OWNER_CLUSTERSET_ID instead of CLUSTERSET_ID, it logged an error with a
// stack trace for each of them on every sync.
func TestAWSControllerSeesNoClustersetInternals(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	c := rawClient(url)
	w := newTestRegistry(t, url, "clusterset1", "cls2")
	if err := w.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	web := sampleRecord("clusterset1", "cls2", "demo", "web", "10.20.0.1", "10.20.0.2")
	empty := sampleRecord("clusterset1", "cls2", "demo", "empty")
	portless := registry.Record{ClusterSetID: "clusterset1", ClusterID: "cls2", Namespace: "demo", Name: "portless",
		Spec:      registry.ServiceSpec{Type: registry.Headless},
		Endpoints: []registry.Endpoint{{Address: "10.20.0.9", AddressType: discoveryv1.AddressTypeIPv4, Ready: true, Serving: true}}}
	other := sampleRecord("clusterset1", "cls2", "other", "elsewhere", "10.20.1.1")
	for _, rec := range []*registry.Record{&web, &empty, &portless, &other} {
		if err := w.Publish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}

	got := awsControllerRead(ctx, t, c, "clusterset1", "demo")
	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"empty", "portless", "web"}) {
		t.Fatalf("the AWS controller lists %v in namespace demo, want [empty portless web]", names)
	}
	for n, s := range got {
		if len(s.Errors) > 0 {
			t.Errorf("service %s: the AWS controller would log: %v", n, s.Errors)
		}
	}
	if n := len(got["web"].Endpoints); n != 4 { // 2 endpoints x 2 ports
		t.Errorf("web: the AWS controller reads %d endpoint instances, want 4: %+v", n, got["web"].Endpoints)
	}
	if n := len(got["empty"].Endpoints) + len(got["portless"].Endpoints); n != 0 {
		t.Errorf("empty and portless: the AWS controller reads %d endpoint instances, want 0", n)
	}
	if sys := awsControllerRead(ctx, t, c, "clusterset1", w.opts.SystemNamespace); len(sys) != 2 {
		// clusterset.system is no Kubernetes namespace name, so the AWS
		// controller never asks for it; this only checks that the filter
		// works there too (heartbeat and changes, nothing else).
		t.Errorf("%s holds %d services, want 2 (heartbeat, changes)", w.opts.SystemNamespace, len(sys))
	}

	// clusterset itself still reads all of it.
	rd := newTestRegistry(t, url, "clusterset1", "reader")
	run(t, rd)
	for _, rec := range []registry.Record{web, empty, portless, other} {
		waitRecords(t, rd, rec.Key(), []registry.Record{rec})
	}
}

// TestMotoAppliesListFilters: the sandbox's Cloud Map applies the filters
// that real Cloud Map applies and the AWS controller relies on. moto 5.2.1
// does so only with hack/moto/*.patch applied (hack/install-moto.sh).
func TestMotoAppliesListFilters(t *testing.T) {
	url := cloudmaptest.StartMoto(t)
	ctx := context.Background()
	c := rawClient(url)
	registerRaw(ctx, t, c, "ns-a", "svc-a", nil)
	registerRaw(ctx, t, c, "ns-b", "svc-b", nil)
	nss, err := c.ListNamespaces(ctx, &sd.ListNamespacesInput{Filters: []sdtypes.NamespaceFilter{{
		Name: sdtypes.NamespaceFilterNameName, Values: []string{"ns-a"}, Condition: sdtypes.FilterConditionEq,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(nss.Namespaces) != 1 || aws.ToString(nss.Namespaces[0].Name) != "ns-a" {
		t.Fatalf("ListNamespaces NAME=ns-a returned %d namespaces: moto without hack/moto's patch? Run hack/install-moto.sh", len(nss.Namespaces))
	}
	svcs, err := c.ListServices(ctx, &sd.ListServicesInput{Filters: []sdtypes.ServiceFilter{{
		Name: sdtypes.ServiceFilterNameNamespaceId, Values: []string{aws.ToString(nss.Namespaces[0].Id)},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range svcs.Services {
		names = append(names, aws.ToString(s.Name))
	}
	if !slices.Equal(names, []string{"svc-a"}) {
		t.Fatalf("ListServices NAMESPACE_ID=ns-a returned %v: moto without hack/moto's patch? Run hack/install-moto.sh", names)
	}
	// A filter the patch does not implement is refused, never ignored.
	if _, err := c.ListNamespaces(ctx, &sd.ListNamespacesInput{Filters: []sdtypes.NamespaceFilter{{
		Name: sdtypes.NamespaceFilterNameHttpName, Values: []string{"ns-a"},
	}}}); !isCode(err, "InvalidInput") {
		t.Fatalf("ListNamespaces HTTP_NAME: err = %v, want InvalidInput", err)
	}
	if _, err := c.ListServices(ctx, &sd.ListServicesInput{Filters: []sdtypes.ServiceFilter{{
		Name: sdtypes.ServiceFilterNameNamespaceId, Values: []string{"a", "b"},
	}}}); !isCode(err, "InvalidInput") {
		t.Fatalf("ListServices NAMESPACE_ID EQ with two values: err = %v, want InvalidInput", err)
	}
}
