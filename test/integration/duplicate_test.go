package integration

import (
	"errors"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
)

// TestDuplicateClusterID: a second cluster configured with cls1's cluster
// ID (told apart by its kube-system namespace's UID, which its heartbeat
// carries) writes nothing while cls1 renews its heartbeat, and its exports
// say why; cls1's records stay as they are. When cls1 has been silent for
// the grace period, the newcomer takes the ID over.
func TestDuplicateClusterID(t *testing.T) {
	opts := registrylink.Options{HeartbeatInterval: time.Second, GracePeriod: 5 * time.Second}
	cs := startClusterset(t, 2, opts)
	cls1, cls2 := cs.members[0], cs.members[1]
	cp := testenv.Start(t)
	twin := &member{name: "twin", cp: cp, admin: cp.Client, root: t, excluded: defaultExcluded(t),
		defaults: identity.Identity{ClusterID: "cls1", ClusterSetID: clusterSet}}
	join(t, cs.hub, twin)

	ns := "dup"
	for _, m := range []*member{cls1, cls2, twin} {
		mustCreate(t, m.admin, namespace(ns))
	}
	mustCreate(t, cls1.admin, service(ns, "api", tcpPort("http", 80)),
		endpointSlice(ns, "api", "api-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.20.0.1"),
		serviceExport(ns, "api"))
	eventually(t, wait, "cls2 imports cls1's api", func() error { return sliceAddresses(cls2, ns, "api", "cls1", "10.20.0.1") })

	twin.start(t, opts)
	mustCreate(t, twin.admin, service(ns, "api", tcpPort("http", 80)),
		endpointSlice(ns, "api", "api-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.20.0.2"),
		serviceExport(ns, "api"),
		service(ns, "extra", tcpPort("http", 80)),
		endpointSlice(ns, "extra", "extra-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.20.0.3"),
		serviceExport(ns, "extra"))
	eventually(t, wait, "the twin's export says the cluster ID is in use", func() error {
		return errors.Join(exportConditionMessage(twin.admin, ns, "api", "Ready", metav1.ConditionFalse, "RegistryNotReady", `cluster ID "cls1" is in use by another member`),
			exportConditionMessage(twin.admin, ns, "extra", "Ready", metav1.ConditionFalse, "RegistryNotReady", `cluster ID "cls1" is in use by another member`))
	})
	consistently(t, 4*time.Second, "cls1's records stay cls1's, and the twin adds none", func() error {
		return errors.Join(sliceAddresses(cls2, ns, "api", "cls1", "10.20.0.1"), importGone(cls2.admin, ns, "extra")())
	})

	// cls1 goes: once its heartbeat has been silent for the grace period,
	// the twin holds the ID and writes its records.
	cls1.stopController()
	eventually(t, time.Minute, "the twin took the cluster ID over", func() error {
		return errors.Join(sliceAddresses(cls2, ns, "api", "cls1", "10.20.0.2"), sliceAddresses(cls2, ns, "extra", "cls1", "10.20.0.3"),
			exportCondition(twin.admin, ns, "api", "Ready", metav1.ConditionTrue, "Exported")())
	})
}
