package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/clusterset/clusterset/internal/helmchart"
	"github.com/clusterset/clusterset/pkg/membership"
)

// The controller Deployment of config/manager, as installed in a cluster.
const (
	controllerDeployment = "clusterset-controller"
	controllerLease      = "clusterset-controller" // LeaderElectionID of cmd/clusterset-controller
	controllerContainer  = "controller"
)

// installControllers installs clusterset-controller in every cluster the way
// a user does on a real cluster: `kubectl clusterset join` (hub registry)
// writes the member's hub credentials, then the manifests of
// config/overlays/REGISTRY, with a kustomize overlay on it that only sets the
// image the sandbox built and points Cloud Map at moto, are applied. It waits until each Deployment's replicas
// are available and one of them holds the leader Lease.
//
// The overlay and the manifests it produced stay in
// clusters/NAME/install/ for inspection.
func (s *Sandbox) installControllers(ctx context.Context, env *upEnv) error {
	t0 := time.Now()
	clientsOf, err := s.adminClients()
	if err != nil {
		return err
	}
	if s.Registry == RegistryHub {
		hubCluster := s.Cluster(s.HubCluster)
		hubCfg, err := s.RESTConfig(hubCluster.Name)
		if err != nil {
			return err
		}
		for _, c := range s.Clusters {
			memberCfg, err := s.RESTConfig(c.Name)
			if err != nil {
				return err
			}
			// The hub as the member's pods reach it: its node address.
			err = membership.Join(ctx, io.Discard, hubCfg, memberCfg, membership.Options{
				ClusterID: c.Name, ClusterSetID: s.ClusterSetID, HubServer: hubCluster.NodeServer, TokenTTL: tokenLifetime,
			})
			if err != nil {
				return fmt.Errorf("%s: kubectl clusterset join: %w", c.Name, err)
			}
		}
		env.p.say("hub    every member joined (kubectl clusterset join; hub reached at %s)", hubCluster.NodeServer)
	}

	var ch *chartv2.Chart
	if env.opts.Install == InstallHelm {
		if ch, err = helmchart.Load(env.opts.RepoDir); err != nil {
			return fmt.Errorf("charts/clusterset: %w", err)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range s.Clusters {
		g.Go(func() error {
			cl := clientsOf[c.Name]
			var how string
			if ch != nil {
				how = "helm install clusterset charts/clusterset"
				if err := s.helmInstall(gctx, env, c, ch); err != nil {
					return fmt.Errorf("%s: %s: %w", c.Name, how, err)
				}
			} else {
				how = "kubectl apply -k config/overlays/" + s.Registry
				manifests, err := s.controllerManifests(env, c)
				if err != nil {
					return fmt.Errorf("%s: config/overlays/%s: %w", c.Name, s.Registry, err)
				}
				objs, err := readObjects(manifests)
				if err != nil {
					return err
				}
				if err := cl.apply(gctx, controllerNamespace, objs...); err != nil {
					return fmt.Errorf("%s: applying %s: %w", c.Name, manifests, err)
				}
			}
			if err := waitControllerPods(gctx, cl); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			env.p.say("%-5s clusterset-controller pods ready and leader elected (%s, image %s, registry %s) (+%.1fs)",
				c.Name, how, ImageController, s.Registry, time.Since(t0).Seconds())
			return nil
		})
	}
	return g.Wait()
}

// HelmClient returns a Helm client for one of the sandbox's clusters, as
// `helm --kubeconfig KUBECONFIG --kube-context CLUSTER -n clusterset-system`.
func (s *Sandbox) HelmClient(cluster string) (*helmchart.Client, error) {
	flags := genericclioptions.NewConfigFlags(true)
	kubeconfig, context, ns := s.Kubeconfig, cluster, helmchart.Namespace
	flags.KubeConfig, flags.Context, flags.Namespace = &kubeconfig, &context, &ns
	return helmchart.NewClient(flags)
}

// HelmValues returns the chart values the sandbox installs cluster c with:
// the image it built, the registry, and for Cloud Map moto (through the node
// address) with the moto workarounds. CoreDNS's RBAC is left out: the
// sandbox sets up CoreDNS, with config/coredns, before the controllers.
func (s *Sandbox) HelmValues(c *Cluster, controllerArgs []string) (map[string]any, error) {
	name, tag, err := splitImage(ImageController)
	if err != nil {
		return nil, err
	}
	values := map[string]any{
		"clusterID":    c.Name,
		"clusterSetID": s.ClusterSetID,
		"image":        map[string]any{"repository": name, "tag": tag, "pullPolicy": "Never"},
		"registry":     map[string]any{"type": s.Registry},
		"coredns":      map[string]any{"rbac": map[string]any{"create": false}},
	}
	if s.Registry == RegistryCloudMap {
		values["registry"] = map[string]any{"type": s.Registry, "cloudMap": map[string]any{"region": "us-east-1"}}
		var env []any
		for _, e := range s.podAWSEnv(c) {
			if e.Name != "AWS_REGION" { // from registry.cloudMap.region
				env = append(env, map[string]any{"name": e.Name, "value": e.Value})
			}
		}
		values["extraEnv"] = env
	}
	if args := s.controllerArgs(controllerArgs); len(args) > 0 {
		anyArgs := make([]any, len(args))
		for i, a := range args {
			anyArgs[i] = a
		}
		values["extraArgs"] = anyArgs
	}
	return values, nil
}

// controllerArgs are the arguments the sandbox adds to the controller's:
// for Cloud Map the moto workarounds (moto keeps a second copy of a
// re-registered instance instead of replacing it), then extra.
func (s *Sandbox) controllerArgs(extra []string) []string {
	if s.Registry == RegistryCloudMap {
		return append([]string{"--cloudmap-moto-workarounds"}, extra...)
	}
	return slices.Clone(extra)
}

// podAWSEnv is the environment a controller pod of cluster c talks to the
// sandbox's Cloud Map with: awsEnv, with moto reached through c's node
// address (the netproxy listens there on moto's port).
func (s *Sandbox) podAWSEnv(c *Cluster) []corev1.EnvVar {
	var out []corev1.EnvVar
	for _, kv := range s.awsEnv() {
		k, v, _ := strings.Cut(kv, "=")
		if k == "AWS_ENDPOINT_URL" {
			_, port, _ := strings.Cut(strings.TrimPrefix(s.MotoEndpoint, "http://"), ":")
			v = fmt.Sprintf("http://%s:%s", realNodeAddress(c.Index), port)
		}
		out = append(out, corev1.EnvVar{Name: k, Value: v})
	}
	return out
}

// splitImage splits an image reference into name and tag: the tag follows
// the last ':' after the last '/' (a registry may have a port).
func splitImage(ref string) (name, tag string, err error) {
	i := strings.LastIndex(ref, ":")
	if i < strings.LastIndex(ref, "/") {
		return "", "", fmt.Errorf("image %s has no tag", ref)
	}
	return ref[:i], ref[i+1:], nil
}

// helmInstall installs charts/clusterset in cluster c with HelmValues.
func (s *Sandbox) helmInstall(ctx context.Context, env *upEnv, c *Cluster, ch *chartv2.Chart) error {
	hc, err := s.HelmClient(c.Name)
	if err != nil {
		return err
	}
	values, err := s.HelmValues(c, env.opts.ControllerArgs)
	if err != nil {
		return err
	}
	return hc.Install(ctx, ch, values, controllerTimeout)
}

// adminClients returns admin clients of every cluster by name.
func (s *Sandbox) adminClients() (map[string]*clients, error) {
	out := map[string]*clients{}
	for _, c := range s.Clusters {
		cfg, err := s.RESTConfig(c.Name)
		if err != nil {
			return nil, err
		}
		if out[c.Name], err = newClients(cfg); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// controllerManifests writes an overlay of config/overlays/REGISTRY for cluster c into
// c.Dir/install, builds it with kustomize and returns the file holding the
// result.
func (s *Sandbox) controllerManifests(env *upEnv, c *Cluster) (string, error) {
	dir := filepath.Join(c.Dir, "install")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base, err := filepath.Rel(dir, filepath.Join(env.opts.RepoDir, "config", "overlays", string(s.Registry)))
	if err != nil {
		return "", err
	}
	ops, err := s.controllerPatch(env, c)
	if err != nil {
		return "", err
	}
	name, tag, err := splitImage(ImageController)
	if err != nil {
		return "", err
	}
	kustomization := map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1",
		"kind":       "Kustomization",
		"resources":  []string{base},
		// The image the sandbox built and preloaded into the nodes.
		"images": []map[string]string{{"name": "clusterset-controller", "newName": name, "newTag": tag}},
	}
	if s.Registry == RegistryCloudMap {
		// What a user writes into the overlay's cloudmap.env.
		kustomization["configMapGenerator"] = []map[string]any{{
			"name": "clusterset-controller-cloudmap", "namespace": controllerNamespace, "behavior": "merge",
			"literals": []string{"AWS_REGION=us-east-1", "CLUSTER_ID=" + c.Name, "CLUSTERSET_ID=" + s.ClusterSetID},
		}}
	}
	if len(ops) > 0 {
		patch, err := json.Marshal(ops)
		if err != nil {
			return "", err
		}
		kustomization["patches"] = []map[string]any{{
			"target": map[string]string{"kind": "Deployment", "name": controllerDeployment},
			"patch":  string(patch),
		}}
	}
	data, err := json.MarshalIndent(kustomization, "", "  ")
	if err != nil {
		return "", err
	}
	// JSON is YAML: kustomize reads it as written.
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), data, 0o644); err != nil {
		return "", err
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return "", err
	}
	out, err := res.AsYaml()
	if err != nil {
		return "", err
	}
	file := filepath.Join(dir, "manifests.yaml")
	return file, os.WriteFile(file, out, 0o644)
}

// controllerPatch returns the JSON patch (RFC 6902) operations on the
// Deployment of config/overlays/REGISTRY for this sandbox: Options.ControllerArgs,
// and for Cloud Map the moto workarounds and moto as endpoint (through the
// node address) with its test credentials.
func (s *Sandbox) controllerPatch(env *upEnv, c *Cluster) ([]map[string]any, error) {
	const container = "/spec/template/spec/containers/0"
	if s.Registry != RegistryHub && s.Registry != RegistryCloudMap {
		return nil, fmt.Errorf("unknown registry %q", s.Registry)
	}
	var ops []map[string]any
	for _, a := range s.controllerArgs(env.opts.ControllerArgs) {
		ops = append(ops, map[string]any{"op": "add", "path": container + "/args/-", "value": a})
	}
	if s.Registry == RegistryCloudMap {
		// Explicit env wins over the overlay's envFrom (AWS_REGION).
		ops = append(ops, map[string]any{"op": "add", "path": container + "/env", "value": s.podAWSEnv(c)})
	}
	return ops, nil
}

// WaitControllers waits until the controller Deployment of an in-cluster
// install (ControllersInCluster) has rolled out all its replicas and one of
// them holds the leader Lease, as after a `helm upgrade`. The error says what
// was missing and why the pods are not ready.
func (s *Sandbox) WaitControllers(ctx context.Context, cluster string) error {
	cfg, err := s.RESTConfig(cluster)
	if err != nil {
		return err
	}
	cl, err := newClients(cfg)
	if err != nil {
		return err
	}
	return waitControllerPods(ctx, cl)
}

// waitControllerPods waits until the controller Deployment has all its
// replicas available and one of them holds the leader Lease.
func waitControllerPods(ctx context.Context, cl *clients) error {
	var state string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, controllerTimeout, true, func(ctx context.Context) (bool, error) {
		d, err := cl.kube.AppsV1().Deployments(controllerNamespace).Get(ctx, controllerDeployment, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() == nil {
				state = err.Error()
			}
			return false, nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if d.Status.ObservedGeneration < d.Generation || d.Status.Replicas != want ||
			d.Status.AvailableReplicas < want || d.Status.UpdatedReplicas < want {
			state = fmt.Sprintf("%d/%d replicas available", d.Status.AvailableReplicas, want)
			return false, nil
		}
		lease, err := cl.kube.CoordinationV1().Leases(controllerNamespace).Get(ctx, controllerLease, metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			state = "no leader elected yet"
			return false, nil
		}
		return true, nil
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err() // up was stopped, or another cluster failed
	}
	if wait.Interrupted(err) {
		// The poll's context has ended: ask for the pods' state with a new one.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return fmt.Errorf("clusterset-controller not ready after %s: %s%s (kubectl -n %s describe pods; kubectl -n %s logs deploy/%s)",
			controllerTimeout, state, podProblems(ctx, cl), controllerNamespace, controllerNamespace, controllerDeployment)
	}
	return err
}

// podProblems describes the controller pods that are not ready, for an error
// message: phase, and the waiting or last termination reason of the
// container.
func podProblems(ctx context.Context, cl *clients) string {
	pods, err := cl.kube.CoreV1().Pods(controllerNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=clusterset-controller"})
	if err != nil {
		return ""
	}
	var out []string
	for _, p := range pods.Items {
		line := fmt.Sprintf("%s %s", p.Name, p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			switch {
			case cs.State.Waiting != nil:
				line += fmt.Sprintf(", %s: %s", cs.State.Waiting.Reason, cs.State.Waiting.Message)
			case cs.LastTerminationState.Terminated != nil:
				line += fmt.Sprintf(", last exit %d (%s)", cs.LastTerminationState.Terminated.ExitCode, cs.LastTerminationState.Terminated.Reason)
			}
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return "; no pods"
	}
	return "; pods: " + strings.Join(out, "; ")
}

// ControllerLogs returns the log files of every clusterset-controller of the
// sandbox: the processes' logs, or with real nodes the controller pods' logs
// that the kubelets keep (current and previous containers).
func (s *Sandbox) ControllerLogs() []string {
	files, _ := filepath.Glob(filepath.Join(s.Dir, "logs", "*clusterset-controller*.log"))
	if s.Nodes == NodesReal {
		for _, c := range s.Clusters {
			pods, _ := filepath.Glob(filepath.Join(s.nodeDirs(c).podLogs, controllerNamespace+"_"+controllerDeployment+"-*", controllerContainer, "*.log"))
			files = append(files, pods...)
		}
	}
	return files
}
