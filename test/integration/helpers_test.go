package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/clusterset/clusterset/pkg/controllers/imports"
)

var ctx = context.Background()

func mustCreate(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// service is a ClusterIP Service with one port per name:port pair.
func service(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: ports},
	}
}

func tcpPort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(port)}
}

// endpointSlice is what Kubernetes' EndpointSlice controller would write for
// the Service (envtest runs no controller-manager) whose one port is named
// http: that controller names slice ports after the Service's ports.
func endpointSlice(ns, svc, name string, family discoveryv1.AddressType, port int32, ready bool, ips ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
		}},
		AddressType: family,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(port)}},
	}
	for i, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready), Terminating: ptr.To(false)},
			NodeName:   ptr.To("node-1"),
			Zone:       ptr.To("zone-a"),
			Hostname:   ptr.To(fmt.Sprintf("pod-%d", i)),
		})
	}
	return s
}

func serviceExport(ns, name string) *mcsv1beta1.ServiceExport {
	return &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// condition checks one condition of a ServiceExport.
func exportCondition(c client.Client, ns, name, typ string, status metav1.ConditionStatus, reason string) func() error {
	return func() error {
		var se mcsv1beta1.ServiceExport
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &se); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(se.Status.Conditions, typ)
		if cond == nil {
			return fmt.Errorf("no %s condition yet: %+v", typ, se.Status.Conditions)
		}
		if cond.Status != status || (reason != "" && cond.Reason != reason) {
			return fmt.Errorf("%s = %s/%s (%s), want %s/%s", typ, cond.Status, cond.Reason, cond.Message, status, reason)
		}
		return nil
	}
}

func getImport(c client.Client, ns, name string) (*mcsv1beta1.ServiceImport, error) {
	var si mcsv1beta1.ServiceImport
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &si)
	return &si, err
}

// importedSlices returns the import's EndpointSlices keyed by source cluster.
func importedSlices(c client.Client, ns, name string) (map[string][]discoveryv1.EndpointSlice, error) {
	var list discoveryv1.EndpointSliceList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{mcsv1beta1.LabelServiceName: name}); err != nil {
		return nil, err
	}
	out := map[string][]discoveryv1.EndpointSlice{}
	for _, s := range list.Items {
		out[s.Labels[mcsv1beta1.LabelSourceCluster]] = append(out[s.Labels[mcsv1beta1.LabelSourceCluster]], s)
	}
	return out, nil
}

// addressesOf lists the addresses of slices, sorted, with "!" after not-ready ones.
func addressesOf(slices []discoveryv1.EndpointSlice) string {
	var out []string
	for _, s := range slices {
		for _, e := range s.Endpoints {
			a := strings.Join(e.Addresses, ",")
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				a += "!"
			}
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// importGone checks that no import object of the service is left.
func importGone(c client.Client, ns, name string) func() error {
	return func() error {
		if _, err := getImport(c, ns, name); !apierrors.IsNotFound(err) {
			return fmt.Errorf("ServiceImport still there (err=%v)", err)
		}
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: imports.DerivedServiceName(name)}, &svc); !apierrors.IsNotFound(err) {
			return fmt.Errorf("derived Service still there (err=%v)", err)
		}
		slices, err := importedSlices(c, ns, name)
		if err != nil {
			return err
		}
		if len(slices) > 0 {
			return fmt.Errorf("imported EndpointSlices still there: %v", slices)
		}
		return nil
	}
}

// eventSeen returns a check that an event of reason about kind/name exists in
// ns, and that its note contains noteHas.
func eventSeen(c client.Client, ns, kind, name, reason, noteHas string) func() error {
	return func() error {
		var events eventsv1.EventList
		if err := c.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range events.Items {
			if e.Regarding.Kind == kind && e.Regarding.Name == name {
				if e.Reason == reason && strings.Contains(e.Note, noteHas) {
					return nil
				}
				seen = append(seen, e.Reason+": "+e.Note)
			}
		}
		return fmt.Errorf("no %s event containing %q on %s %s/%s; its events: %q", reason, noteHas, kind, ns, name, seen)
	}
}

// lagSamples returns how many propagation lag samples of the source cluster
// the controllers of this process observed (they share one registry), and
// their sum in seconds.
func lagSamples(t *testing.T, cluster string) (count uint64, sum float64) {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "clusterset_propagation_lag_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source_cluster" && l.GetValue() == cluster {
					count += m.GetHistogram().GetSampleCount()
					sum += m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	return count, sum
}

// exportConditionMessage is exportCondition that also wants the message to
// contain msgHas.
func exportConditionMessage(c client.Client, ns, name, typ string, status metav1.ConditionStatus, reason, msgHas string) error {
	if err := exportCondition(c, ns, name, typ, status, reason)(); err != nil {
		return err
	}
	var se mcsv1beta1.ServiceExport
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &se); err != nil {
		return err
	}
	if msg := meta.FindStatusCondition(se.Status.Conditions, typ).Message; !strings.Contains(msg, msgHas) {
		return fmt.Errorf("%s message %q does not contain %q", typ, msg, msgHas)
	}
	return nil
}
