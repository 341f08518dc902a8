package cloudmap

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
)

// The hostile namespace of TestHostileNamespaceAtScale holds
// hostileInstances instances that no member of set1 wrote:
//
//   - web (the service cls1 exports): garbage beside cls1's and set2's
//     records, some of it claiming to be cls1;
//   - flood: floodStrangers instances of a stranger (no clusterset at all),
//     more than one DiscoverInstances returns; cls3's valid record lands
//     after them;
//   - forged: forgedInstances garbage instances that carry CLUSTERSET_ID
//     set1, so that even a read filtered on the clusterset comes back full;
//   - junk-0 … junk-<junkServices-1>: the rest, every kind of garbage in
//     turn, and valid records of another clusterset.
const (
	hostileNS        = "hostile"
	hostileInstances = 10000
	webGarbageRounds = 2
	floodStrangers   = 1500
	forgedInstances  = 1001
	junkServices     = 8
)

// hostileInstance is one instance someone else writes into hostileNS.
type hostileInstance struct {
	service, id string
	attrs       map[string]string
}

// garbageKind makes the attributes of the i-th instance of one kind.
type garbageKind func(i int) map[string]string

// pick returns one of values, by i.
func pick(i int, values ...string) string { return values[i%len(values)] }

// hostileAddr is a valid IPv4 address of its own for the i-th instance,
// outside the members' 10.1-10.3 ranges.
func hostileAddr(i int) string {
	return fmt.Sprintf("10.%d.%d.%d", 100+(i>>16)%100, (i>>8)&255, i&255)
}

// awsStyle is an endpoint instance in the AWS Cloud Map MCS controller's
// format: a valid endpoint of cluster in clusterSet unless changed.
func awsStyle(clusterSet, cluster, addr string) map[string]string {
	return map[string]string{
		attrIPv4: addr, attrPort: "80", attrClusterSetID: clusterSet, attrClusterID: cluster,
		attrEPPortName: "", attrEPProtocol: "TCP", attrHostname: "", attrController: "aws-cloud-map-mcs-controller-for-k8s",
		attrNodeName: "node-1", attrReady: "true", attrExportCreated: "1665108776000", attrSvcPort: "80",
		attrSvcPortName: "", attrSvcProtocol: "TCP", attrSvcTarget: "80", attrSvcType: "ClusterSetIP",
	}
}

// with returns a with changes applied; a change to "" deletes the attribute.
func with(a map[string]string, changes ...string) map[string]string {
	for i := 0; i+1 < len(changes); i += 2 {
		if changes[i+1] == "" {
			delete(a, changes[i])
		} else {
			a[changes[i]] = changes[i+1]
		}
	}
	return a
}

// set1Garbage are instances that claim clusterset set1 and that no rule
// lets through: each carries at least one flaw that makes the decoder skip
// it. The endpoint kinds carry CLUSTERSET_ID, the marker kinds
// OWNER_CLUSTERSET_ID.
var set1Garbage = []garbageKind{
	// No CLUSTER_ID.
	func(i int) map[string]string {
		return with(awsStyle("set1", "evil", hostileAddr(i)), attrClusterID, "")
	},
	// An address that is not an IP.
	func(i int) map[string]string {
		return with(awsStyle("set1", "evil", pick(i, "not-an-ip", "999.10.0.1", "10.0.0.1/24", "10.0.0.1:80", " 10.0.0.1", "10.0.0.1;reboot")))
	},
	// An IPv6 address that is not one, or that no EndpointSlice takes.
	func(i int) map[string]string {
		return with(awsStyle("set1", "evil", ""), attrIPv4, "", attrIPv6, pick(i, "fd00:::1", "::1", "fe80::1", "::", "gg::1", "fe80::1%eth0"))
	},
	// An IPv4 address no EndpointSlice takes.
	func(i int) map[string]string {
		return awsStyle("set1", "evil", pick(i, "127.0.0.1", "0.0.0.0", "169.254.0.1", "224.0.0.251"))
	},
	// An endpoint port out of range, 0 included.
	func(i int) map[string]string {
		return with(awsStyle("set1", "evil", hostileAddr(i)), attrPort, pick(i, "0", "65536", "-1", "http", "99999999999999999999", "80.5"))
	},
	// A service port out of range.
	func(i int) map[string]string {
		return with(awsStyle("set1", "evil", hostileAddr(i)), attrSvcPort, pick(i, "0", "70000", "x"))
	},
	// A protocol Kubernetes does not know.
	func(i int) map[string]string {
		return with(awsStyle("set1", "evil", hostileAddr(i)), attrEPProtocol, pick(i, "ICMP", "tcp", "HTTP"))
	},
	// Oversized values, past Cloud Map's 1,024 characters (moto takes
	// them), the address among them.
	func(i int) map[string]string {
		return with(awsStyle("set1", "evil", strings.Repeat("1", 2048)),
			attrHostname, strings.Repeat("h", 4096), attrExportedLabels, strings.Repeat("{", 3000))
	},
	// 40 attributes (Cloud Map allows 30), and a port name that is no
	// DNS label.
	func(i int) map[string]string {
		a := with(awsStyle("set1", "evil", hostileAddr(i)), attrEPPortName, "Not_A_Label")
		for k := 0; k < 40; k++ {
			a[fmt.Sprintf("X_%02d", k)] = strings.Repeat("x", k)
		}
		return a
	},
	// Claims to be cls1, the exporter, with an address that is not an IP.
	func(i int) map[string]string { return awsStyle("set1", "cls1", "cls1-"+hostileAddr(i)) },
	// A kind this version does not know, on an otherwise valid endpoint.
	func(i int) map[string]string {
		return with(awsStyle("set1", "evil", hostileAddr(i)), attrRecordKind, pick(i, "heartbeat", "change", "endpoint"))
	},
	// A marker whose SERVICE_PORTS is not a valid list of ports.
	func(i int) map[string]string {
		return map[string]string{attrOwnerClusterSetID: "set1", attrClusterID: "intruder", attrRecordKind: kindService, attrSvcType: "ClusterSetIP",
			attrServicePorts: pick(i, "[{", `[{"o":70000}]`, `[{"o":80,"p":"ICMP"}]`, `{"o":80}`, strings.Repeat("[", 3000))}
	},
	// A marker whose service-level attributes do not parse.
	func(i int) map[string]string {
		a := map[string]string{attrOwnerClusterSetID: "set1", attrClusterID: "intruder", attrRecordKind: kindService, attrServicePorts: "[]"}
		return with(a, pick(i, attrSvcType, attrExportCreated, attrSessionConfig), pick(i, "LoadBalancer", "yesterday", "{"))
	},
}

// elsewhere are instances of strangers and of another clusterset.
var elsewhere = []garbageKind{
	// A stranger sharing the namespace (ECS Service Connect, say).
	func(i int) map[string]string {
		return map[string]string{attrIPv4: hostileAddr(i), attrPort: "8080", "ECS_CLUSTER_NAME": "payments", "AVAILABILITY_ZONE": "us-east-1a"}
	},
	// Valid records of another clusterset, in both controllers' formats.
	func(i int) map[string]string { return awsStyle("set2", "cls7", hostileAddr(i)) },
	func(i int) map[string]string {
		return map[string]string{attrOwnerClusterSetID: "set2", attrClusterID: "cls8", attrRecordKind: kindService, attrController: controllerName,
			attrSvcType: "ClusterSetIP", attrServicePorts: `[{"o":80,"p":"TCP"}]`}
	},
	// Nothing of any meaning.
	func(i int) map[string]string { return map[string]string{"JUNK": pick(i, "\x00\x01", "\xff\xfe", "")} },
}

// hostileFixtures returns the hostileInstances instances of hostileNS, by
// service, as described above.
func hostileFixtures() []hostileInstance {
	var out []hostileInstance
	add := func(service string, n int, kinds []garbageKind) {
		for k := 0; k < n; k++ {
			i := len(out)
			out = append(out, hostileInstance{service: service, id: fmt.Sprintf("h-%05d", i), attrs: kinds[k%len(kinds)](i)})
		}
	}
	every := append(append([]garbageKind(nil), set1Garbage...), elsewhere...)
	add("web", webGarbageRounds*len(every), every)
	add("flood", floodStrangers, elsewhere[:1])
	add("forged", forgedInstances, set1Garbage[:11]) // the kinds that carry CLUSTERSET_ID
	rest := hostileInstances - len(out)
	for s := 0; s < junkServices; s++ {
		n := rest / junkServices
		if s == junkServices-1 {
			n = rest - n*(junkServices-1)
		}
		add(fmt.Sprintf("junk-%d", s), n, every)
	}
	return out
}

// registerHostile creates the services of fixtures that hostileNS lacks and
// registers every instance through moto's API, workers at a time (moto
// serves them one after the other; the workers keep it busy). Instances
// of one service keep their order within each worker's share only.
func registerHostile(ctx context.Context, t *testing.T, c *sd.Client, fixtures []hostileInstance, workers int) {
	t.Helper()
	nsID := rawNamespaceID(ctx, t, c, hostileNS)
	ids := map[string]string{}
	list, err := c.ListServices(ctx, &sd.ListServicesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Services {
		ids[aws.ToString(s.Name)] = aws.ToString(s.Id) // web: the one cls1 created
	}
	for _, f := range fixtures {
		if ids[f.service] != "" {
			continue
		}
		out, err := c.CreateService(ctx, &sd.CreateServiceInput{Name: aws.String(f.service), NamespaceId: aws.String(nsID)})
		if err != nil {
			t.Fatal(err)
		}
		ids[f.service] = aws.ToString(out.Service.Id)
	}
	jobs := make(chan hostileInstance)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range jobs {
				_, err := c.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: aws.String(ids[f.service]), InstanceId: aws.String(f.id), Attributes: f.attrs})
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("registering %s/%s: %w", f.service, f.id, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, f := range fixtures {
		jobs <- f
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}
