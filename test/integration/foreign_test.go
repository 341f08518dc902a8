package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/controllers/imports"
	"github.com/clusterset/clusterset/pkg/names"
)

// checkForeignObjectsLeftAlone: objects clusterset did not create are never
// changed or deleted, even where its own would go. In importer a
// ServiceImport written by someone else (the AWS controller during a
// migration, docs/migrating.md) holds the import's name; in blocked a user's
// Service holds the derived Service's name. While they exist, importer keeps
// the foreign ServiceImport as it is, and blocked's import says Ready=False
// with the reason; withdrawing the export leaves both objects. Once they are
// deleted, clusterset creates its own and the import becomes ready.
func checkForeignObjectsLeftAlone(t *testing.T, exporter, importer, blocked *member, ns string) {
	t.Helper()
	const name = "taken"
	foreignImport := &mcsv1beta1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "aws-cloud-map-mcs-controller-for-k8s"}},
		Spec: mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, IPs: []string{"10.96.7.7"},
			Ports: []mcsv1beta1.ServicePort{{Name: "legacy", Protocol: corev1.ProtocolTCP, Port: 9999}}},
	}
	userService := service(ns, imports.DerivedServiceName(name), tcpPort("mine", 7777))
	userService.Labels = map[string]string{"owner": "a-user"}
	mustCreate(t, importer.admin, foreignImport)
	mustCreate(t, blocked.admin, userService)
	mustCreate(t, exporter.admin, service(ns, name, tcpPort("http", 80)),
		endpointSlice(ns, name, name+"-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.10.9.1"),
		serviceExport(ns, name))

	foreignUnchanged := func() error {
		si, err := getImport(importer.admin, ns, name)
		if err != nil {
			return err
		}
		if si.Labels[names.LabelManagedBy] != "" || len(si.Spec.Ports) != 1 || si.Spec.Ports[0].Port != 9999 ||
			len(si.Spec.IPs) != 1 || si.Spec.IPs[0] != "10.96.7.7" {
			return fmt.Errorf("the foreign ServiceImport was changed: labels %v, spec %+v", si.Labels, si.Spec)
		}
		return nil
	}
	userServiceUnchanged := func() error {
		var svc corev1.Service
		if err := blocked.admin.Get(ctx, client.ObjectKeyFromObject(userService), &svc); err != nil {
			return err
		}
		if svc.Labels[names.LabelManagedBy] != "" || svc.Labels["owner"] != "a-user" || len(svc.OwnerReferences) != 0 ||
			len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 7777 {
			return fmt.Errorf("the user's Service was changed: labels %v, owners %v, ports %+v", svc.Labels, svc.OwnerReferences, svc.Spec.Ports)
		}
		return nil
	}
	blockedNotReady := func() error {
		si, err := getImport(blocked.admin, ns, name)
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(si.Status.Conditions, string(mcsv1beta1.ServiceImportConditionReady))
		if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "not managed by clusterset") {
			return fmt.Errorf("Ready condition %+v, want False saying the Service is not managed by clusterset", c)
		}
		return nil
	}
	eventually(t, wait, blocked.name+" import says why it is not ready", blockedNotReady)
	consistently(t, 3*time.Second, "foreign objects left alone", func() error {
		if err := foreignUnchanged(); err != nil {
			return err
		}
		return userServiceUnchanged()
	})

	// Withdrawn: the import in blocked goes, the foreign objects stay.
	if err := exporter.admin.Delete(ctx, serviceExport(ns, name)); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, blocked.name+" ServiceImport removed", func() error {
		if _, err := getImport(blocked.admin, ns, name); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (err=%v)", err)
		}
		return nil
	})
	consistently(t, 2*time.Second, "foreign objects left alone after the withdrawal", func() error {
		if err := foreignUnchanged(); err != nil {
			return err
		}
		return userServiceUnchanged()
	})

	// Exported again; once the foreign objects are deleted, clusterset's
	// own take their place.
	mustCreate(t, exporter.admin, serviceExport(ns, name))
	eventually(t, wait, blocked.name+" import says why it is not ready again", blockedNotReady)
	if err := importer.admin.Delete(ctx, foreignImport); err != nil {
		t.Fatal(err)
	}
	if err := blocked.admin.Delete(ctx, userService); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*member{importer, blocked} {
		eventually(t, wait, m.name+" imports it as its own", func() error {
			si, err := getImport(m.admin, ns, name)
			if err != nil {
				return err
			}
			if si.Labels[names.LabelManagedBy] == "" || len(si.Spec.IPs) != 1 || !meta.IsStatusConditionTrue(si.Status.Conditions, string(mcsv1beta1.ServiceImportConditionReady)) {
				return fmt.Errorf("labels %v, IPs %v, conditions %+v", si.Labels, si.Spec.IPs, si.Status.Conditions)
			}
			return sliceAddresses(m, ns, name, exporter.name, "10.10.9.1")
		})
	}
	if err := exporter.admin.Delete(ctx, serviceExport(ns, name)); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*member{importer, blocked} {
		eventually(t, wait, m.name+" import removed", importGone(m.admin, ns, name))
	}
}
