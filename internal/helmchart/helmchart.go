// Package helmchart renders, installs, upgrades and uninstalls the chart in
// charts/clusterset through the Helm SDK (helm.sh/helm/v4), the way the helm
// command does, for the sandbox and the tests. It holds no chart logic: the
// chart is the product, this is only a driver.
package helmchart

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// The release the docs install: `helm install clusterset charts/clusterset
// -n clusterset-system --create-namespace`.
const (
	ReleaseName = "clusterset"
	Namespace   = "clusterset-system"
)

// Load reads charts/clusterset of the repository at repoDir.
func Load(repoDir string) (*chartv2.Chart, error) {
	return loader.Load(filepath.Join(repoDir, "charts", "clusterset"))
}

// Render returns what `helm template clusterset charts/clusterset
// --namespace NAMESPACE --include-crds --kube-version KUBEVERSION` prints for
// the given values, as objects in that order (CRDs first). kubeVersion is
// a Kubernetes version such as "v1.33.0". Invalid values fail with the error
// of values.schema.json or of the templates.
func Render(ch *chartv2.Chart, namespace, kubeVersion string, values map[string]any) ([]*unstructured.Unstructured, error) {
	r, err := dryRun(ch, namespace, kubeVersion, values)
	if err != nil {
		return nil, err
	}
	return decode(r.Manifest)
}

// Notes renders the chart's NOTES.txt as `helm install` prints it.
func Notes(ch *chartv2.Chart, namespace, kubeVersion string, values map[string]any) (string, error) {
	r, err := dryRun(ch, namespace, kubeVersion, values)
	if err != nil {
		return "", err
	}
	return r.Info.Notes, nil
}

func dryRun(ch *chartv2.Chart, namespace, kubeVersion string, values map[string]any) (*releasev1.Release, error) {
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler))
	in := action.NewInstall(cfg)
	in.DryRunStrategy = action.DryRunClient
	in.ReleaseName = ReleaseName
	in.Namespace = namespace
	in.Replace = true
	in.IncludeCRDs = true
	in.KubeVersion = kv
	rel, err := in.Run(ch, values)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*releasev1.Release)
	if !ok {
		return nil, fmt.Errorf("helm returned a release of type %T", rel)
	}
	return r, nil
}

// decode splits a multi-document YAML stream into objects, skipping empty
// documents.
func decode(manifest string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewBufferString(manifest), 4096)
	for {
		var doc json.RawMessage
		if err := d.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 || string(doc) == "null" {
			continue
		}
		// Through the unstructured JSON scheme, numbers become int64 as
		// in objects read from an API server.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(doc); err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
}

// Client runs Helm actions on one cluster, release ReleaseName in Namespace,
// with release records in Secrets (helm's default driver).
type Client struct {
	cfg *action.Configuration
}

// NewClient returns a Client for the cluster that getter reaches (for
// example genericclioptions.ConfigFlags with a kubeconfig and context).
func NewClient(getter genericclioptions.RESTClientGetter) (*Client, error) {
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler))
	if err := cfg.Init(getter, Namespace, "secret"); err != nil {
		return nil, err
	}
	return &Client{cfg: cfg}, nil
}

// Install is `helm install clusterset CHART -n clusterset-system
// --create-namespace --timeout TIMEOUT` without --wait: callers wait for what
// they need (the Deployment's rollout and its leader).
func (c *Client) Install(ctx context.Context, ch *chartv2.Chart, values map[string]any, timeout time.Duration) error {
	in := action.NewInstall(c.cfg)
	in.ReleaseName = ReleaseName
	in.Namespace = Namespace
	in.CreateNamespace = true
	in.WaitStrategy = kube.HookOnlyStrategy
	in.Timeout = timeout
	_, err := in.RunWithContext(ctx, ch, values)
	return err
}

// Upgrade is `helm upgrade clusterset CHART -n clusterset-system` with
// exactly these values (--reset-values), without --wait.
func (c *Client) Upgrade(ctx context.Context, ch *chartv2.Chart, values map[string]any, timeout time.Duration) error {
	up := action.NewUpgrade(c.cfg)
	up.Namespace = Namespace
	up.ResetValues = true
	up.WaitStrategy = kube.HookOnlyStrategy
	up.Timeout = timeout
	_, err := up.RunWithContext(ctx, ReleaseName, ch, values)
	return err
}

// Uninstall is `helm uninstall clusterset -n clusterset-system --wait`: it
// returns once the release's objects are gone. CRDs stay (helm never deletes
// what a chart's crds/ installed).
func (c *Client) Uninstall(timeout time.Duration) error {
	un := action.NewUninstall(c.cfg)
	un.WaitStrategy = kube.StatusWatcherStrategy
	un.Timeout = timeout
	_, err := un.Run(ReleaseName)
	return err
}

// ReleaseKinds are the list kinds of every object the chart can create,
// and of helm's release records (Secrets), for checks that a release left
// nothing behind.
var ReleaseKinds = []schema.GroupVersionKind{
	{Group: "apps", Version: "v1", Kind: "DeploymentList"},
	{Version: "v1", Kind: "ServiceAccountList"},
	{Version: "v1", Kind: "ServiceList"},
	{Version: "v1", Kind: "SecretList"},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudgetList"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleList"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBindingList"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleList"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBindingList"},
}

// OfRelease reports whether an object with these labels belongs to release
// ReleaseName: one of the chart's objects, or one of helm's release records.
func OfRelease(labels map[string]string) bool {
	return labels["app.kubernetes.io/instance"] == ReleaseName || (labels["owner"] == "helm" && labels["name"] == ReleaseName)
}
