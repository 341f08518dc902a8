package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/clusterset/clusterset/pkg/registry/hub"
)

// The controller's identity in the sandbox, as config/ deploys it.
const (
	controllerNamespace      = "clusterset-system"
	controllerServiceAccount = "clusterset-controller"
)

// motoCredentials are the fake AWS settings of every process that talks to
// the local moto server. Instance metadata is disabled so that the SDK never
// tries 169.254.169.254: nothing may leave 127.0.0.0/8.
func (s *Sandbox) awsEnv() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + s.MotoEndpoint,
		"AWS_ACCESS_KEY_ID=testing",
		"AWS_SECRET_ACCESS_KEY=testing",
		"AWS_SESSION_TOKEN=",
		"AWS_REGION=us-east-1",
		"AWS_DEFAULT_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
	}
}

// AWSEnv returns the environment (KEY=VALUE) for talking to the sandbox's
// Cloud Map (moto); nil with the hub registry.
func (s *Sandbox) AWSEnv() []string {
	if s.MotoEndpoint == "" {
		return nil
	}
	return s.awsEnv()
}

// startMoto starts the local Cloud Map: `moto_server -p PORT -H 127.0.0.1`.
func (s *Sandbox) startMoto(ctx context.Context, env *upEnv) error {
	port := env.motoPort
	s.MotoEndpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
	t0 := time.Now()
	proc, err := s.launch(env, "moto", nil, env.opts.MotoServer, "-p", strconv.Itoa(port), "-H", "127.0.0.1")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, proc, "moto_server", 60*time.Second, func(ctx context.Context) bool {
		code := httpStatus(ctx, s.MotoEndpoint+"/moto-api/")
		return code > 0 && code < 500
	}); err != nil {
		return err
	}
	// moto_server is often a pyenv or venv wrapper that execs Python: record
	// the command line the pid shows now.
	proc.refreshArgs()
	env.p.say("moto   Cloud Map endpoint %s ready (+%.1fs)", s.MotoEndpoint, time.Since(t0).Seconds())
	return s.save()
}

// controllerRBAC reads the objects of config/rbac (through its
// kustomization): the ServiceAccount, roles and bindings that a member
// cluster's controller runs with.
func controllerRBAC(repoDir string) ([]*unstructured.Unstructured, error) {
	dir := filepath.Join(repoDir, "config", "rbac")
	files, err := manifestFiles(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return readObjects(files...)
}

// startControllers runs one clusterset-controller per cluster, as
// config/ deploys it: in its cluster with the ServiceAccount and RBAC of
// config/rbac; in the hub (--registry hub) as a ServiceAccount of the hub
// that hub.EnsureMember (what `kubectl clusterset join` does) gives the
// member's rights. Until config/rbac exists the controllers run as admin.
func (s *Sandbox) startControllers(ctx context.Context, env *upEnv) error {
	t0 := time.Now()
	rbac, err := controllerRBAC(env.opts.RepoDir)
	if err != nil {
		return fmt.Errorf("config/rbac: %w", err)
	}
	asAdmin := len(rbac) == 0
	if asAdmin {
		env.p.say("WARNING: config/rbac has no manifests: the controllers run with admin rights")
	}
	adminCert, err := os.ReadFile(filepath.Join(s.Dir, "pki", "admin.crt"))
	if err != nil {
		return err
	}
	adminKey, err := os.ReadFile(filepath.Join(s.Dir, "pki", "admin.key"))
	if err != nil {
		return err
	}
	admin := credentials{certPEM: adminCert, keyPEM: adminKey}
	caPEM, err := os.ReadFile(filepath.Join(s.Dir, "pki", "ca.crt"))
	if err != nil {
		return err
	}

	clientsOf, err := s.adminClients()
	if err != nil {
		return err
	}
	memberIdentity := func(c *Cluster) (credentials, error) {
		if asAdmin {
			return admin, nil
		}
		cl := clientsOf[c.Name]
		if err := cl.ensureNamespace(ctx, controllerNamespace); err != nil {
			return credentials{}, err
		}
		if err := cl.apply(ctx, controllerNamespace, rbac...); err != nil {
			return credentials{}, err
		}
		if err := cl.ensureServiceAccount(ctx, controllerNamespace, controllerServiceAccount); err != nil {
			return credentials{}, err
		}
		token, err := cl.token(ctx, controllerNamespace, controllerServiceAccount)
		return credentials{token: token}, err
	}
	// The same join as `kubectl clusterset join`: the member's namespace,
	// RBAC and ServiceAccount in the hub, and a token of that account.
	hubIdentity := func(hubCluster, member *Cluster) (credentials, error) {
		t, err := hub.Join(ctx, clientsOf[hubCluster.Name].kube, s.ClusterSetID, member.Name, tokenLifetime)
		return credentials{token: t.Token}, err
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, c := range s.Clusters {
		creds, err := memberIdentity(c)
		if err != nil {
			return fmt.Errorf("%s: controller identity: %w", c.Name, err)
		}
		kubeconfig := filepath.Join(c.Dir, "clusterset-controller.kubeconfig")
		if err := writeKubeconfig(kubeconfig, kubeconfigEntry{name: c.Name, server: c.Server, caPEM: caPEM, creds: creds}); err != nil {
			return err
		}
		args := []string{
			s.ControllerBinary,
			"--kubeconfig", kubeconfig,
			"--context", c.Name,
			"--cluster-id", c.Name,
			"--clusterset-id", s.ClusterSetID,
			"--registry", s.Registry,
		}
		var extraEnv []string
		switch s.Registry {
		case RegistryHub:
			hubCluster := s.Cluster(s.HubCluster)
			hubCreds, err := hubIdentity(hubCluster, c)
			if err != nil {
				return fmt.Errorf("%s: controller identity in the hub: %w", c.Name, err)
			}
			hubKubeconfig := filepath.Join(c.Dir, "clusterset-controller-hub.kubeconfig")
			if err := writeKubeconfig(hubKubeconfig, kubeconfigEntry{name: hubCluster.Name, server: hubCluster.Server, caPEM: caPEM, creds: hubCreds}); err != nil {
				return err
			}
			args = append(args, "--hub-kubeconfig", hubKubeconfig, "--hub-context", hubCluster.Name)
		case RegistryCloudMap:
			extraEnv = s.awsEnv()
			// The sandbox's Cloud Map is moto, which keeps a second copy of a
			// re-registered instance instead of replacing it.
			args = append(args, "--cloudmap-moto-workarounds")
		}
		args = append(args,
			"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", c.Ports.ControllerMetrics),
			"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", c.Ports.ControllerHealth),
		)
		args = append(args, env.opts.ControllerArgs...)
		proc, err := s.launch(env, c.Name+"/clusterset-controller", extraEnv, args...)
		if err != nil {
			return err
		}
		g.Go(func() error {
			base := fmt.Sprintf("http://127.0.0.1:%d", c.Ports.ControllerHealth)
			if err := waitFor(gctx, proc, c.Name+" clusterset-controller", controllerTimeout, func(ctx context.Context) bool {
				// /readyz when the controller has readiness checks, else /healthz.
				switch httpStatus(ctx, base+"/readyz") {
				case http.StatusOK:
					return true
				case http.StatusNotFound:
					return httpOK(ctx, base+"/healthz")
				}
				return false
			}); err != nil {
				return err
			}
			proc.refreshArgs()
			env.p.say("%-5s clusterset-controller healthy (registry %s) (+%.1fs)", c.Name, s.Registry, time.Since(t0).Seconds())
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return s.save()
}
