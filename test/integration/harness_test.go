package integration

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/clusterset/clusterset/internal/testcontrollers"
	"github.com/clusterset/clusterset/internal/testenv"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
	"github.com/clusterset/clusterset/pkg/controllers"
	"github.com/clusterset/clusterset/pkg/controllers/identity"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/namespaces"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

const (
	clusterSet = "clusterset1"
	// controllerSA is the identity the controllers run as in every member,
	// bound to config/rbac/role.yaml and nothing else.
	controllerNamespace = "clusterset-system"
	controllerSA        = "clusterset-controller"
	// leaderElectionNamespace holds the controllers' leader election Lease,
	// with config/rbac/leader_election_role.yaml bound there. Not
	// clusterset-system, where the CLI tests keep a Lease of their own.
	leaderElectionNamespace = "clusterset-leader-election"
)

// member is one cluster of the test clusterset and its running controller.
type member struct {
	name   string
	cp     *testenv.Cluster
	admin  client.Client // for the test's own reads and writes
	hubCfg *rest.Config  // this member's credentials on the hub, via hubProxy
	proxy  *tcpProxy     // between this member's controller and the hub

	// defaults are the controller's --cluster-id and --clusterset-id.
	defaults identity.Identity
	// backend builds the registry; nil means the hub through proxy.
	backend registrylink.Factory
	// excluded are the controller's --excluded-namespaces.
	excluded namespaces.Exclusions
	// clock is the member's clock, for its controllers and its heartbeats;
	// nil is the real one.
	clock clock.PassiveClock
	// root is the test that owns the clusterset: a controller restarted
	// inside a subtest must outlive that subtest.
	root *testing.T

	mu     sync.Mutex
	stop   func() error
	linkFn func() *registrylink.Link
}

// clusterset is several real control planes, the first of which is also the hub.
type clusterset struct {
	members []*member
	hub     *testenv.Cluster
}

// startClusterset starts n control planes (cls1 is also the hub), gives each
// member its hub namespace and RBAC, and runs clusterset-controller in each
// with only the shipped ClusterRole.
func startClusterset(t *testing.T, n int, opts registrylink.Options) *clusterset {
	t.Helper()
	return startClustersetAs(t, defaultIdentities(n), opts)
}

// defaultIdentities are the identities of n members: cluster IDs cls1 to
// clsN in clusterset clusterSet.
func defaultIdentities(n int) []identity.Identity {
	ids := make([]identity.Identity, n)
	for i := range ids {
		ids[i] = identity.Identity{ClusterID: fmt.Sprintf("cls%d", i+1), ClusterSetID: clusterSet}
	}
	return ids
}

// startClustersetAs is startClusterset with one member per identity, given
// to its controller as --cluster-id and --clusterset-id; the members are
// still named cls1 to clsN in the test.
func startClustersetAs(t *testing.T, ids []identity.Identity, opts registrylink.Options) *clusterset {
	t.Helper()
	cs := &clusterset{}
	for i, id := range ids {
		cp := testenv.Start(t)
		m := &member{name: fmt.Sprintf("cls%d", i+1), cp: cp, admin: cp.Client, root: t}
		m.defaults = id
		m.excluded = defaultExcluded(t)
		cs.members = append(cs.members, m)
	}
	cs.hub = cs.members[0].cp
	for _, m := range cs.members {
		join(t, cs.hub, m)
		m.start(t, opts)
	}
	return cs
}

// defaultExcluded is what --excluded-namespaces is by default.
func defaultExcluded(t *testing.T) namespaces.Exclusions {
	t.Helper()
	e, err := namespaces.NewExclusions(namespaces.DefaultExcluded)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// createNamespace creates namespace ns in every member.
func (cs *clusterset) createNamespace(t *testing.T, ns string) {
	t.Helper()
	for _, m := range cs.members {
		mustCreate(t, m.admin, namespace(ns))
	}
}

// join gives m its namespace and RBAC in the hub, credentials of its own
// there (through a proxy the test can cut), and the shipped controller RBAC
// in its own cluster.
func join(t *testing.T, hubCP *testenv.Cluster, m *member) {
	t.Helper()
	hubAdmin := kubernetes.NewForConfigOrDie(hubCP.Config)
	// The member joins as its cluster ID (--cluster-id), else its name, in
	// its clusterset (--clusterset-id), else clusterSet.
	id := cmp.Or(m.defaults.ClusterID, m.name)
	set := cmp.Or(m.defaults.ClusterSetID, clusterSet)
	user := "clusterset:member:" + id
	if _, err := hub.EnsureMember(context.Background(), hubAdmin, set, id, rbacv1.Subject{Kind: rbacv1.UserKind, Name: user, APIGroup: rbacv1.GroupName}); err != nil {
		t.Fatal(err)
	}
	m.proxy = newTCPProxy(t, hubCP.Config.Host)
	cfg := rest.CopyConfig(hubCP.Config)
	cfg.Host = "https://" + m.proxy.addr
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	m.hubCfg = hubCalls.of(hub.NamespaceName(set, id)).Wrap(cfg)
	installControllerRBAC(t, m)
}

func init() {
	ctrl.SetLogger(zap.New(zap.WriteTo(testLogWriter()), zap.UseDevMode(false)))
}

// installControllerRBAC applies config/rbac/role.yaml and
// leader_election_role.yaml (in leaderElectionNamespace) in the member and
// binds them to the controller's ServiceAccount.
func installControllerRBAC(t *testing.T, m *member) {
	t.Helper()
	ctx := context.Background()
	role := shippedRBAC[rbacv1.ClusterRole](t, "role.yaml")
	leader := shippedRBAC[rbacv1.Role](t, "leader_election_role.yaml")
	leader.Namespace = leaderElectionNamespace
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: controllerNamespace, Name: controllerSA}}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   subjects,
	}
	leaderBinding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: leader.Name, Namespace: leaderElectionNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: leader.Name},
		Subjects:   subjects,
	}
	for _, obj := range []client.Object{role, binding, namespace(leaderElectionNamespace), leader, leaderBinding} {
		if err := m.admin.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// shippedRBAC reads config/rbac/file.
func shippedRBAC[T any](t *testing.T, file string) *T {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", file))
	if err != nil {
		t.Fatal(err)
	}
	var obj T
	if err := yaml.UnmarshalStrict(raw, &obj); err != nil {
		t.Fatalf("config/rbac/%s: %v", file, err)
	}
	return &obj
}

// controllerConfig is the member's admin config impersonating the
// controller's ServiceAccount, so that the controller has exactly the shipped
// ClusterRole.
func (m *member) controllerConfig() *rest.Config {
	cfg := rest.CopyConfig(m.cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + controllerNamespace + ":" + controllerSA,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + controllerNamespace, "system:authenticated"},
	}
	return controllerCalls.Wrap(cfg)
}

// start runs the member's controller until stopController or the test's end.
func (m *member) start(t *testing.T, opts registrylink.Options) {
	t.Helper()
	hubCfg, clk := m.hubCfg, m.clock
	backend := m.backend
	if backend == nil {
		backend = func(_ context.Context, id identity.Identity) (registry.Registry, error) {
			return hub.New(hub.Options{ClusterSetID: id.ClusterSetID, ClusterID: id.ClusterID, Config: hubCfg, Clock: clk, Holder: id.UID})
		}
	}
	link, stop, err := testcontrollers.Run(m.controllerConfig(), m.name, controllers.Options{
		Defaults: m.defaults,
		Registry: backend,
		Link:     opts,
		Excluded: m.excluded,
		Clock:    clk,
	}, func(o *ctrl.Options) {
		// As cmd/clusterset-controller runs it.
		o.LeaderElection = true
		o.LeaderElectionID = controllerSA
		o.LeaderElectionNamespace = leaderElectionNamespace
		o.LeaderElectionReleaseOnCancel = true
	})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.stop, m.linkFn = stop, func() *registrylink.Link { return link }
	m.mu.Unlock()
	m.root.Cleanup(m.stopController)
}

// stopController stops the member's controller and waits for it.
func (m *member) stopController() {
	m.mu.Lock()
	stop := m.stop
	m.stop = nil
	m.mu.Unlock()
	if stop != nil {
		if err := stop(); err != nil {
			m.root.Error(err)
		}
	}
}

// createClusterProperty is used by tests that start a controller without
// identity flags.
func createClusterProperty(ctx context.Context, c client.Client, name, value string) error {
	return c.Create(ctx, &aboutv1alpha1.ClusterProperty{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: aboutv1alpha1.ClusterPropertySpec{Value: value}})
}

// tcpProxy forwards 127.0.0.1 connections to the hub and can be cut, to play a
// hub that a member cannot reach (R2).
type tcpProxy struct {
	addr   string
	target string
	ln     net.Listener
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
}

func newTCPProxy(t *testing.T, hubURL string) *tcpProxy {
	t.Helper()
	u, err := url.Parse(hubURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: ln.Addr().String(), target: u.Host, ln: ln, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.SetDown(true) })
	return p
}

func (p *tcpProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		if !down {
			p.conns[in] = struct{}{}
		}
		p.mu.Unlock()
		if down {
			in.Close()
			continue
		}
		go p.pipe(in)
	}
}

func (p *tcpProxy) pipe(in net.Conn) {
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	p.mu.Lock()
	p.conns[out] = struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(out, in); out.Close() }()
	_, _ = io.Copy(in, out)
	in.Close()
}

// SetDown cuts (true) or restores (false) the member's path to the hub.
func (p *tcpProxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = cond(); last == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, last)
}

// consistently checks that cond holds for the whole duration.
func consistently(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := cond(); err != nil {
			t.Fatalf("%s stopped holding: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func testLogWriter() io.Writer {
	if os.Getenv("CLUSTERSET_TEST_LOGS") != "" {
		return os.Stderr
	}
	return io.Discard
}
