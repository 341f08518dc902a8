package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	hubcrd "github.com/clusterset/clusterset/config/hub/crd"
	"github.com/clusterset/clusterset/pkg/registry"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
)

// Names of the RBAC objects in the hub. config/hub ships the same objects as
// manifests.
const (
	// ReaderClusterRole lets members read every member's ClusterSetRecords
	// (records and heartbeats), and nothing else.
	ReaderClusterRole = "clusterset-hub-reader"
	// WriterRole, in a member's namespace, lets it write its
	// ClusterSetRecords there and nowhere else.
	WriterRole = "clusterset-member-writer"
)

// ReaderRole returns the ClusterRole that every member is bound to: read
// ClusterSetRecords in all namespaces. They hold nothing but clusterset data,
// so the hub may be a cluster that runs other workloads.
func ReaderRole() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: ReaderClusterRole, Labels: map[string]string{LabelManagedBy: managedBy}},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{hubv1alpha1.GroupVersion.Group}, Resources: []string{hubv1alpha1.Resource}, Verbs: []string{"get", "list", "watch"}},
		},
	}
}

// MemberObjects returns what one member of a clusterset needs in the hub, in
// the order to create them: its namespace, the Role that lets it write
// ClusterSetRecords (its records and heartbeat) there, the RoleBinding of subjects to that Role, and
// the ClusterRoleBinding of subjects to ReaderRole. subjects are the member's
// credentials in the hub, for example a ServiceAccount.
func MemberObjects(clusterSetID, clusterID string, subjects ...rbacv1.Subject) []metav1.Object {
	ns := NamespaceName(clusterSetID, clusterID)
	labels := map[string]string{
		LabelClusterSet: clusterSetLabel(clusterSetID),
		LabelKind:       KindMember,
		LabelManagedBy:  managedBy,
	}
	annotations := map[string]string{AnnotationClusterSetID: clusterSetID, AnnotationClusterID: clusterID}
	meta := func(name, namespace string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels, Annotations: annotations}
	}
	return []metav1.Object{
		&corev1.Namespace{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: meta(ns, ""),
		},
		&rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
			ObjectMeta: meta(WriterRole, ns),
			Rules: []rbacv1.PolicyRule{
				// Reads are ReaderRole's; these are exactly the backend's
				// writes (TestShippedRBACIsWhatTheCodeCalls).
				{APIGroups: []string{hubv1alpha1.GroupVersion.Group}, Resources: []string{hubv1alpha1.Resource}, Verbs: []string{"create", "update", "delete"}},
			},
		},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: meta(WriterRole, ns),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: WriterRole},
			Subjects:   subjects,
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: meta(ReaderClusterRole+"-"+ns, ""),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ReaderClusterRole},
			Subjects:   subjects,
		},
	}
}

// EnsureMember installs or updates, with admin credentials on the hub, the
// CRDs of InstallCRDs, ReaderRole and MemberObjects of clusterID, and returns
// the member's namespace. It is what `kubectl clusterset join` does, and what
// tests use. IDs that registry.ValidateClusterSetID or
// registry.ValidateClusterID reject are an error, before anything is written.
func EnsureMember(ctx context.Context, hub kubernetes.Interface, clusterSetID, clusterID string, subjects ...rbacv1.Subject) (string, error) {
	if err := registry.ValidateClusterSetID(clusterSetID); err != nil {
		return "", fmt.Errorf("hub member: %w", err)
	}
	if err := registry.ValidateClusterID(clusterID); err != nil {
		return "", fmt.Errorf("hub member: %w", err)
	}
	if err := InstallCRDs(ctx, hub); err != nil {
		return "", fmt.Errorf("hub member %s of %s: %w", clusterID, clusterSetID, err)
	}
	objs := append([]metav1.Object{ReaderRole()}, MemberObjects(clusterSetID, clusterID, subjects...)...)
	for _, obj := range objs {
		if err := apply(ctx, hub, obj); err != nil {
			return "", fmt.Errorf("hub member %s of %s: %T %s: %w", clusterID, clusterSetID, obj, obj.GetName(), err)
		}
	}
	ns := NamespaceName(clusterSetID, clusterID)
	log.FromContext(ctx).V(1).Info("Hub member ready", "clusterSet", clusterSetID, "cluster", clusterID, "hubNamespace", ns)
	return ns, nil
}

// CRDs returns the YAML of the CustomResourceDefinitions that the hub serves
// (config/hub/crd, embedded).
func CRDs() [][]byte { return [][]byte{hubcrd.ClusterSetRecordCRD} }

const crdPath = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"

// InstallCRDs creates or updates, with admin credentials on the hub, the
// CRDs of CRDs() by server-side apply, and waits until the hub serves them.
func InstallCRDs(ctx context.Context, hub kubernetes.Interface) error {
	rc := hub.Discovery().RESTClient()
	if rc == nil {
		return errors.New("installing CRDs: the hub client has no REST client")
	}
	for _, raw := range CRDs() {
		body, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return fmt.Errorf("installing CRDs: %w", err)
		}
		var crd struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(body, &crd); err != nil || crd.Metadata.Name == "" {
			return fmt.Errorf("installing CRDs: an embedded CRD has no name (%v)", err)
		}
		name := crd.Metadata.Name
		err = rc.Patch(types.ApplyPatchType).AbsPath(crdPath+name).
			Param("fieldManager", managedBy).Param("force", "true").
			Body(body).Do(ctx).Error()
		if err != nil {
			return fmt.Errorf("installing CRD %s: %w", name, err)
		}
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			return crdEstablished(ctx, hub, name)
		})
		if err != nil {
			return fmt.Errorf("waiting for CRD %s to be established: %w", name, err)
		}
	}
	return nil
}

func crdEstablished(ctx context.Context, hub kubernetes.Interface, name string) (bool, error) {
	raw, err := hub.Discovery().RESTClient().Get().AbsPath(crdPath + name).Do(ctx).Raw()
	if err != nil {
		return false, err
	}
	var crd struct {
		Status struct {
			Conditions []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal(raw, &crd); err != nil {
		return false, err
	}
	for _, c := range crd.Status.Conditions {
		if c.Type == "Established" && c.Status == "True" {
			return true, nil
		}
	}
	return false, nil
}

// apply creates obj, or replaces the parts of it that EnsureMember owns.
func apply(ctx context.Context, hub kubernetes.Interface, obj metav1.Object) error {
	opts := metav1.CreateOptions{}
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = hub.CoreV1().Namespaces().Create(ctx, o, opts)
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
	case *rbacv1.ClusterRole:
		c := hub.RbacV1().ClusterRoles()
		if _, err = c.Create(ctx, o, opts); apierrors.IsAlreadyExists(err) {
			var cur *rbacv1.ClusterRole
			if cur, err = c.Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
				cur.Rules = o.Rules
				_, err = c.Update(ctx, cur, metav1.UpdateOptions{})
			}
		}
	case *rbacv1.Role:
		c := hub.RbacV1().Roles(o.Namespace)
		if _, err = c.Create(ctx, o, opts); apierrors.IsAlreadyExists(err) {
			var cur *rbacv1.Role
			if cur, err = c.Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
				cur.Rules = o.Rules
				_, err = c.Update(ctx, cur, metav1.UpdateOptions{})
			}
		}
	case *rbacv1.RoleBinding:
		c := hub.RbacV1().RoleBindings(o.Namespace)
		if _, err = c.Create(ctx, o, opts); apierrors.IsAlreadyExists(err) {
			var cur *rbacv1.RoleBinding
			if cur, err = c.Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
				cur.Subjects = o.Subjects
				_, err = c.Update(ctx, cur, metav1.UpdateOptions{})
			}
		}
	case *rbacv1.ClusterRoleBinding:
		c := hub.RbacV1().ClusterRoleBindings()
		if _, err = c.Create(ctx, o, opts); apierrors.IsAlreadyExists(err) {
			var cur *rbacv1.ClusterRoleBinding
			if cur, err = c.Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
				cur.Subjects = o.Subjects
				_, err = c.Update(ctx, cur, metav1.UpdateOptions{})
			}
		}
	default:
		return fmt.Errorf("unexpected object %T", obj)
	}
	return err
}
