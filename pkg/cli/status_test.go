package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/testenv"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
)

// status shows the identity, each export with the condition that needs
// attention, and each import with its IPs, clusters and endpoint counts.
func TestStatus(t *testing.T) {
	ctx := context.Background()
	c := testenv.Start(t).Client
	create := func(o client.Object) {
		t.Helper()
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}})
	create(&aboutv1alpha1.ClusterProperty{ObjectMeta: metav1.ObjectMeta{Name: aboutv1alpha1.ClusterIDName}, Spec: aboutv1alpha1.ClusterPropertySpec{Value: "cls2"}})
	export := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "late"}}
	create(export)
	export.Status.Conditions = []metav1.Condition{
		{Type: "Valid", Status: metav1.ConditionFalse, Reason: "NoService", Message: "Service demo/late does not exist", LastTransitionTime: metav1.Now()},
		{Type: "Ready", Status: metav1.ConditionFalse, Reason: "Pending", Message: "not exported", LastTransitionTime: metav1.Now()},
	}
	if err := c.Status().Update(ctx, export); err != nil {
		t.Fatal(err)
	}
	// One the controller has not reported on, and one that is exported.
	create(&mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "new"}})
	ok := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web"}}
	create(ok)
	ok.Status.Conditions = []metav1.Condition{
		{Type: "Valid", Status: metav1.ConditionTrue, Reason: "Valid", Message: "Service is valid for export", LastTransitionTime: metav1.Now()},
		{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Exported", Message: "exported with 2 endpoints", LastTransitionTime: metav1.Now()},
	}
	if err := c.Status().Update(ctx, ok); err != nil {
		t.Fatal(err)
	}
	imp := &mcsv1beta1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "nginx-hello"},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, IPs: []string{"10.96.0.20"},
			Ports: []mcsv1beta1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
	}
	create(imp)
	imp.Status.Clusters = []mcsv1beta1.ClusterStatus{{Cluster: "cls1"}}
	if err := c.Status().Update(ctx, imp); err != nil {
		t.Fatal(err)
	}
	create(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "demo", Name: "s1", Labels: map[string]string{mcsv1beta1.LabelServiceName: "nginx-hello"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.11.0.1"}},
			{Addresses: []string{"10.11.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
		},
	})

	var out bytes.Buffer
	if err := printStatus(ctx, &out, c, ""); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"cluster ID:     cls2",
		"clusterset ID:  <unset: ClusterProperty clusterset.k8s.io not readable",
		"SERVICE EXPORTS (3)",
		"NoService: Service demo/late does not exist",
		"new   -      -      -         NoStatus: the controller has not reported on this export",
		"web   True   True   -         exported with 2 endpoints",
		"SERVICE IMPORTS (1)",
		"10.96.0.20",
		"80/TCP",
		"cls1",
		"1/2",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status output lacks %q:\n%s", want, got)
		}
	}
}
