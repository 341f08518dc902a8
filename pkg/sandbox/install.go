package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

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
// writes the member's hub credentials, then the manifests of config/default,
// with a kustomize overlay that only sets the image the sandbox built and the
// registry settings, are applied. It waits until each Deployment's replicas
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

	g, gctx := errgroup.WithContext(ctx)
	for _, c := range s.Clusters {
		g.Go(func() error {
			manifests, err := s.controllerManifests(env, c)
			if err != nil {
				return fmt.Errorf("%s: config/default: %w", c.Name, err)
			}
			objs, err := readObjects(manifests)
			if err != nil {
				return err
			}
			cl := clientsOf[c.Name]
			if err := cl.apply(gctx, controllerNamespace, objs...); err != nil {
				return fmt.Errorf("%s: applying %s: %w", c.Name, manifests, err)
			}
			if err := waitControllerPods(gctx, cl); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			env.p.say("%-5s clusterset-controller pods ready and leader elected (image %s, registry %s) (+%.1fs)",
				c.Name, ImageController, s.Registry, time.Since(t0).Seconds())
			return nil
		})
	}
	return g.Wait()
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

// controllerManifests writes the overlay of config/default for cluster c into
// c.Dir/install, builds it with kustomize and returns the file holding the
// result.
func (s *Sandbox) controllerManifests(env *upEnv, c *Cluster) (string, error) {
	dir := filepath.Join(c.Dir, "install")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base, err := filepath.Rel(dir, filepath.Join(env.opts.RepoDir, "config", "default"))
	if err != nil {
		return "", err
	}
	ops, err := s.controllerPatch(env, c)
	if err != nil {
		return "", err
	}
	// The tag follows the last ':' after the last '/' (a registry may
	// have a port).
	i := strings.LastIndex(ImageController, ":")
	if i < strings.LastIndex(ImageController, "/") {
		return "", fmt.Errorf("image %s has no tag", ImageController)
	}
	name, tag := ImageController[:i], ImageController[i+1:]
	kustomization := map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1",
		"kind":       "Kustomization",
		"resources":  []string{base},
		// The image the sandbox built and preloaded into the nodes.
		"images": []map[string]string{{"name": "clusterset-controller", "newName": name, "newTag": tag}},
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
// Deployment of config/manager for this sandbox's registry: none for the hub
// beyond Options.ControllerArgs; for Cloud Map the registry flags, the
// sandbox's moto as endpoint (through the node address) and no hub secret.
func (s *Sandbox) controllerPatch(env *upEnv, c *Cluster) ([]map[string]any, error) {
	const container = "/spec/template/spec/containers/0"
	var ops []map[string]any
	switch s.Registry {
	case RegistryHub:
		for _, a := range env.opts.ControllerArgs {
			ops = append(ops, map[string]any{"op": "add", "path": container + "/args/-", "value": a})
		}
	case RegistryCloudMap:
		args := []string{
			"--leader-elect",
			"--registry=cloudmap",
			// The sandbox's Cloud Map is moto, which keeps a second copy of
			// a re-registered instance instead of replacing it.
			"--cloudmap-moto-workarounds",
			"--metrics-bind-address=:8080",
			"--health-probe-bind-address=:8081",
		}
		args = append(args, env.opts.ControllerArgs...)
		var envVars []corev1.EnvVar
		for _, kv := range s.awsEnv() {
			k, v, _ := strings.Cut(kv, "=")
			if k == "AWS_ENDPOINT_URL" {
				v = fmt.Sprintf("http://%s:%d", realNodeAddress(c.Index), env.motoPort)
			}
			envVars = append(envVars, corev1.EnvVar{Name: k, Value: v})
		}
		ops = append(ops,
			map[string]any{"op": "replace", "path": container + "/args", "value": args},
			map[string]any{"op": "add", "path": container + "/env", "value": envVars},
			map[string]any{"op": "remove", "path": container + "/volumeMounts"},
			map[string]any{"op": "remove", "path": "/spec/template/spec/volumes"},
		)
	default:
		return nil, fmt.Errorf("unknown registry %q", s.Registry)
	}
	return ops, nil
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
