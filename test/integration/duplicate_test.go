package integration

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
		serviceExport(ns, "api"),
		service(ns, "only1", tcpPort("http", 80)),
		endpointSlice(ns, "only1", "only1-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.20.0.4"),
		serviceExport(ns, "only1"))
	eventually(t, wait, "cls2 imports cls1's services", func() error {
		return errors.Join(sliceAddresses(cls2, ns, "api", "cls1", "10.20.0.1"), sliceAddresses(cls2, ns, "only1", "cls1", "10.20.0.4"))
	})

	// The twin's exports exist before its controller starts: nothing may be
	// written before it has checked who holds the ID.
	mustCreate(t, twin.admin, service(ns, "api", tcpPort("http", 80)),
		endpointSlice(ns, "api", "api-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.20.0.2"),
		serviceExport(ns, "api"),
		service(ns, "extra", tcpPort("http", 80)),
		endpointSlice(ns, "extra", "extra-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.20.0.3"),
		serviceExport(ns, "extra"))
	twin.start(t, opts)
	uid := func(m *member) string {
		var kubeSystem corev1.Namespace
		if err := m.admin.Get(ctx, client.ObjectKey{Name: metav1.NamespaceSystem}, &kubeSystem); err != nil {
			t.Fatal(err)
		}
		return string(kubeSystem.UID)
	}
	inUse := `cluster ID "cls1" is in use by another cluster (heartbeat holder ` + uid(cls1) + `; this cluster is ` + uid(twin) + `)`
	eventually(t, wait, "the twin's exports say the cluster ID is in use, naming both clusters", func() error {
		return errors.Join(exportConditionMessage(twin.admin, ns, "api", "Ready", metav1.ConditionFalse, "RegistryNotReady", inUse),
			exportConditionMessage(twin.admin, ns, "extra", "Ready", metav1.ConditionFalse, "RegistryNotReady", inUse))
	})
	consistently(t, 4*time.Second, "cls1's records stay cls1's, and the twin adds none", func() error {
		return errors.Join(sliceAddresses(cls2, ns, "api", "cls1", "10.20.0.1"), sliceAddresses(cls2, ns, "only1", "cls1", "10.20.0.4"),
			importGone(cls2.admin, ns, "extra")())
	})

	// cls1 goes: once its heartbeat has been silent for the grace period
	// (while cls2's shows the registry is live), the twin holds the ID and
	// the ID's records are its own.
	cls1.stopController()
	eventually(t, time.Minute, "the twin took the cluster ID over", func() error {
		return errors.Join(sliceAddresses(cls2, ns, "api", "cls1", "10.20.0.2"), sliceAddresses(cls2, ns, "extra", "cls1", "10.20.0.3"),
			exportCondition(twin.admin, ns, "api", "Ready", metav1.ConditionTrue, "Exported")())
	})
}
