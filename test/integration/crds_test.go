// Package integration holds tests that need a real control plane but no
// particular controller: the shipped CRDs as clients meet them.
package integration

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/internal/testenv"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
)

// The ServiceExport and ServiceImport CRDs store v1beta1 and also serve
// v1alpha1, which CoreDNS's multicluster plugin and older clients read.
func TestCRDsServeBothMCSVersions(t *testing.T) {
	ctx := context.Background()
	cls := testenv.Start(t)
	c := cls.Client

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	export := &mcsv1beta1.ServiceExport{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "nginx-hello"},
		Spec:       mcsv1beta1.ServiceExportSpec{ExportedLabels: map[string]string{"team": "web"}},
	}
	if err := c.Create(ctx, export); err != nil {
		t.Fatalf("creating v1beta1 ServiceExport: %v", err)
	}

	var old mcsv1alpha1.ServiceExport
	if err := c.Get(ctx, client.ObjectKeyFromObject(export), &old); err != nil {
		t.Fatalf("reading the ServiceExport through v1alpha1: %v", err)
	}
	if old.UID != export.UID || old.Name != "nginx-hello" {
		t.Fatalf("v1alpha1 read returned %s/%s uid %s, want the v1beta1 object uid %s", old.Namespace, old.Name, old.UID, export.UID)
	}

	imp := &mcsv1beta1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "nginx-hello"},
		Spec: mcsv1beta1.ServiceImportSpec{
			Type:  mcsv1beta1.ClusterSetIP,
			IPs:   []string{"10.96.0.10"},
			Ports: []mcsv1beta1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	if err := c.Create(ctx, imp); err != nil {
		t.Fatalf("creating v1beta1 ServiceImport: %v", err)
	}
	var oldImp mcsv1alpha1.ServiceImport
	if err := c.Get(ctx, client.ObjectKeyFromObject(imp), &oldImp); err != nil {
		t.Fatalf("reading the ServiceImport through v1alpha1: %v", err)
	}
	if oldImp.Spec.Type != mcsv1alpha1.ClusterSetIP || len(oldImp.Spec.IPs) != 1 || oldImp.Spec.IPs[0] != "10.96.0.10" ||
		len(oldImp.Spec.Ports) != 1 || oldImp.Spec.Ports[0].Port != 80 {
		t.Fatalf("v1alpha1 ServiceImport spec = %+v, want the v1beta1 spec", oldImp.Spec)
	}

	prop := &aboutv1alpha1.ClusterProperty{
		ObjectMeta: metav1.ObjectMeta{Name: aboutv1alpha1.ClusterIDName},
		Spec:       aboutv1alpha1.ClusterPropertySpec{Value: "cls1"},
	}
	if err := c.Create(ctx, prop); err != nil {
		t.Fatalf("creating ClusterProperty: %v", err)
	}
	empty := &aboutv1alpha1.ClusterProperty{ObjectMeta: metav1.ObjectMeta{Name: "empty.example.com"}}
	if err := c.Create(ctx, empty); err == nil {
		t.Fatal("a ClusterProperty with an empty value was accepted; the CRD must require spec.value")
	}
}
