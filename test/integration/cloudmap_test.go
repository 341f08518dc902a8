package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// The seed scenario with AWS Cloud Map (moto's server) as the registry:
// nginx-hello exported from cls1 is imported by cls1 and cls2, and deleting
// the export removes it from both. E1 I1 I2 I4 I5 E5.
func TestSeedScenarioCloudMap(t *testing.T) {
	endpoint := cloudmaptest.StartMoto(t)
	// A small quota, so that one test export can exceed it.
	members := startCloudMapMembers(t, endpoint, 5)
	cls1 := members[0]

	ns := "demo"
	for _, m := range members {
		mustCreate(t, m.admin, namespace(ns))
	}
	mustCreate(t, cls1.admin, service(ns, "nginx-hello", tcpPort("http", 80)),
		endpointSlice(ns, "nginx-hello", "nginx-hello-abcde", discoveryv1.AddressTypeIPv4, 8080, true, "10.10.86.76", "10.10.86.77", "10.10.86.78"),
		serviceExport(ns, "nginx-hello"))
	eventually(t, wait, "cls1 export Ready", exportCondition(cls1.admin, ns, "nginx-hello", "Ready", metav1.ConditionTrue, "Exported"))
	for _, m := range members {
		eventually(t, wait, m.name+" import through Cloud Map", func() error { return checkSeedImport(m, ns) })
	}
	// Past the Cloud Map quota (here 5 instances per service: 6 endpoints
	// and the service's marker need 7) the export says so; nothing crashes
	// and the other exports are unaffected.
	mustCreate(t, cls1.admin, service(ns, "big", tcpPort("http", 80)),
		endpointSlice(ns, "big", "big-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.30.0.1", "10.30.0.2", "10.30.0.3", "10.30.0.4", "10.30.0.5", "10.30.0.6"),
		serviceExport(ns, "big"))
	eventually(t, wait, "quota exceeded reported on the export", func() error {
		if err := exportCondition(cls1.admin, ns, "big", "Ready", metav1.ConditionFalse, "Failed")(); err != nil {
			return err
		}
		var se mcsv1beta1.ServiceExport
		if err := cls1.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "big"}, &se); err != nil {
			return err
		}
		if msg := meta.FindStatusCondition(se.Status.Conditions, "Ready").Message; !strings.Contains(msg, "quota") {
			return fmt.Errorf("Ready message %q does not mention the quota", msg)
		}
		return nil
	})
	if err := checkSeedImport(members[1], ns); err != nil {
		t.Fatalf("the seed import must be unaffected by another export's quota error: %v", err)
	}

	if err := cls1.admin.Delete(ctx, serviceExport(ns, "nginx-hello")); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		eventually(t, wait, m.name+" import removed", importGone(m.admin, ns, "nginx-hello"))
	}
	eventually(t, wait, "no Cloud Map record left", func() error {
		if err := noHubRecords(members[1], ns, "nginx-hello"); err != nil {
			return fmt.Errorf("cls2's view: %w", err)
		}
		return nil
	})
}

// E6 I4: under a port conflict, endpoints are imported only under ports
// their own cluster exposes (the Cloud Map registry).
func TestPortConflictCloudMap(t *testing.T) {
	members := startCloudMapMembers(t, cloudmaptest.StartMoto(t), 0)
	for _, m := range members {
		mustCreate(t, m.admin, namespace("portconflict"))
	}
	checkPortConflict(t, members[0], members[1], members, "portconflict")
}

// startCloudMapMembers starts cls1 and cls2 on their own control planes,
// each running clusterset-controller with the shipped RBAC and Cloud Map
// (moto at endpoint) as the registry. maxInstancesPerService is the Cloud
// Map quota the controllers assume; 0 is the default.
func startCloudMapMembers(t *testing.T, endpoint string, maxInstancesPerService int) []*member {
	return startCloudMapMembersWith(t, endpoint,
		registrylink.Options{HeartbeatInterval: time.Second, GracePeriod: 30 * time.Second},
		func(o *cloudmap.Options) { o.MaxInstancesPerService = maxInstancesPerService })
}

// startCloudMapMembersWith is startCloudMapMembers with the link's options
// and the Cloud Map options as options changes them.
func startCloudMapMembersWith(t *testing.T, endpoint string, link registrylink.Options, options func(*cloudmap.Options)) []*member {
	return startCloudMapMembersAs(t, endpoint, defaultIdentities(2), link, options)
}

// startCloudMapMembersAs is startCloudMapMembersWith with one member per
// identity (--cluster-id and --clusterset-id); the members are still named
// cls1 to clsN in the test.
func startCloudMapMembersAs(t *testing.T, endpoint string, ids []identity.Identity, link registrylink.Options, options func(*cloudmap.Options)) []*member {
	var members []*member
	for i, id := range ids {
		cp := testenv.Start(t)
		m := &member{name: fmt.Sprintf("cls%d", i+1), cp: cp, admin: cp.Client, root: t}
		m.defaults = id
		m.excluded = defaultExcluded(t)
		m.backend = func(_ context.Context, id identity.Identity) (registry.Registry, error) {
			o := cloudmap.Options{
				ClusterSetID: id.ClusterSetID, ClusterID: id.ClusterID, Endpoint: endpoint, Holder: id.UID,
				PollInterval: 500 * time.Millisecond, MotoWorkarounds: true,
			}
			options(&o)
			return cloudmap.New(cloudmaptest.Config(), o)
		}
		installControllerRBAC(t, m)
		m.start(t, link)
		members = append(members, m)
	}
	return members
}
