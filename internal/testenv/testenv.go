// Package testenv starts real kube-apiservers (with etcd) for tests through
// controller-runtime's envtest, from the binaries that hack/build-binaries.sh
// puts in .cache/envtest, and installs clusterset's CRDs in them.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"testing"

	"github.com/clusterset/clusterset/internal/prereq"
	"github.com/clusterset/clusterset/internal/scheme"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Scheme knows the built-in types, both MCS API versions and ClusterProperty.
var Scheme = scheme.Scheme

// AssetsDir returns the directory with kube-apiserver and etcd. It honours
// KUBEBUILDER_ASSETS and falls back to the repository's cache. When the
// binaries are missing the test is skipped, unless CI is set: then it fails
// and says how to build them.
func AssetsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), ".cache", "envtest")
	}
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
		prereq.Missing(t, "kube-apiserver and etcd are not built: run `make test` or `hack/build-binaries.sh envtest` (looked in "+dir+")")
	}
	return dir
}

// Cluster is one started control plane.
type Cluster struct {
	Env    *envtest.Environment
	Config *rest.Config
	Client client.Client
}

// Start starts a kube-apiserver and etcd with the CRDs of config/crd installed,
// and stops them when the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return start(t, []string{filepath.Join(RepoRoot(), "config", "crd")})
}

// StartWithoutCRDs starts a kube-apiserver and etcd that serve none of
// clusterset's APIs: a cluster clusterset was never installed in.
func StartWithoutCRDs(t testing.TB) *Cluster {
	t.Helper()
	return start(t, nil)
}

func start(t testing.TB, crdDirs []string) *Cluster {
	t.Helper()
	env := &envtest.Environment{
		BinaryAssetsDirectory: AssetsDir(t),
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
	}
	// envtest's default range, a /24, has room for about 250 Services;
	// the burst benchmark exports 1,000.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.0.0.0/16")
	// As on clusters that enforce it (OpenShift, for one): an owner
	// reference with blockOwnerDeletion needs update on the owner's
	// finalizers, which config/rbac grants for ServiceImports.
	env.ControlPlane.GetAPIServer().Configure().Set("enable-admission-plugins", "OwnerReferencesPermissionEnforcement")
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping envtest control plane: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		t.Fatalf("client for envtest control plane: %v", err)
	}
	return &Cluster{Env: env, Config: cfg, Client: c}
}

// Shared is one control plane for all tests of a package, started by the
// first test that asks for it and stopped by the package's TestMain:
//
//	var env testenv.Shared
//	func TestMain(m *testing.M) { code := m.Run(); env.Stop(); os.Exit(code) }
//	func TestX(t *testing.T) { c := env.Get(t) … }
//
// Tests that share it keep out of each other's way, with a namespace each.
type Shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Get returns the shared control plane, starting it on first use. Missing
// binaries skip the test (fail it under CI), as AssetsDir does.
func (s *Shared) Get(t testing.TB) *Cluster {
	t.Helper()
	dir := AssetsDir(t)
	s.once.Do(func() {
		env := &envtest.Environment{
			BinaryAssetsDirectory: dir,
			CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd")},
			ErrorIfCRDPathMissing: true,
		}
		cfg, err := env.Start()
		if err != nil {
			s.err = fmt.Errorf("starting envtest control plane: %w", err)
			return
		}
		c, err := client.New(cfg, client.Options{Scheme: Scheme})
		if err != nil {
			s.err = errors.Join(err, env.Stop())
			return
		}
		s.c = &Cluster{Env: env, Config: cfg, Client: c}
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.c
}

// Stop stops the control plane if a test started it.
func (s *Shared) Stop() {
	if s.c != nil {
		if err := s.c.Env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping envtest control plane: %v\n", err)
		}
	}
}
