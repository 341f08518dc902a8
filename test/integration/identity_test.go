package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/testenv"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
)

// C1: a controller started without --cluster-id in a cluster without the
// ClusterProperty keeps running, stops exports with a clear condition and an
// event, and exports once the property is fixed. An invalid ID is refused the
// same way.
func TestIdentityC1(t *testing.T) {
	cp := testenv.Start(t)
	m := &member{name: "solo", cp: cp, admin: cp.Client, root: t}
	m.defaults = identity.Identity{ClusterSetID: clusterSet} // no --cluster-id
	join(t, cp, m)
	m.start(t, registrylink.Options{HeartbeatInterval: time.Second})

	ns := "identity"
	mustCreate(t, m.admin, namespace(ns), service(ns, "api", tcpPort("http", 80)),
		endpointSlice(ns, "api", "api-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.20.0.1"),
		serviceExport(ns, "api"))
	eventually(t, wait, "C1 export stopped with a reason", func() error {
		if err := exportCondition(m.admin, ns, "api", "Ready", metav1.ConditionFalse, "RegistryNotReady")(); err != nil {
			return err
		}
		var se mcsv1beta1.ServiceExport
		if err := m.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "api"}, &se); err != nil {
			return err
		}
		if msg := meta.FindStatusCondition(se.Status.Conditions, "Ready").Message; !strings.Contains(msg, aboutv1alpha1.ClusterIDName) {
			return fmt.Errorf("C1 message %q does not name the ClusterProperty", msg)
		}
		return nil
	})

	// An invalid ID (not a DNS label) is reported with an event, not used.
	if err := createClusterProperty(ctx, m.admin, aboutv1alpha1.ClusterIDName, "Not_A_Label"); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "C1 InvalidClusterIdentity event", func() error {
		var evs eventsv1.EventList
		if err := m.admin.List(ctx, &evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "InvalidClusterIdentity" && strings.Contains(e.Note, "Not_A_Label") {
				return nil
			}
		}
		var seen []string
		for _, e := range evs.Items {
			seen = append(seen, e.Reason+": "+e.Note)
		}
		return fmt.Errorf("no InvalidClusterIdentity event naming the bad ID among %q", seen)
	})
	if err := exportCondition(m.admin, ns, "api", "Ready", metav1.ConditionFalse, "RegistryNotReady")(); err != nil {
		t.Fatalf("C1: export must stay stopped with an invalid ID: %v", err)
	}

	// Fixing the property lets the export through, without a restart.
	var prop aboutv1alpha1.ClusterProperty
	if err := m.admin.Get(ctx, client.ObjectKey{Name: aboutv1alpha1.ClusterIDName}, &prop); err != nil {
		t.Fatal(err)
	}
	prop.Spec.Value = "solo"
	if err := m.admin.Update(ctx, &prop); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "C1 exported once the ID is valid", exportCondition(m.admin, ns, "api", "Ready", metav1.ConditionTrue, "Exported"))
	// The clusterset ID property was created from the flag.
	if err := m.admin.Get(ctx, client.ObjectKey{Name: aboutv1alpha1.ClusterSetIDName}, &prop); err != nil || prop.Spec.Value != clusterSet {
		t.Fatalf("C1: clusterset.k8s.io = %q (%v), want %q created from --clusterset-id", prop.Spec.Value, err, clusterSet)
	}
}
