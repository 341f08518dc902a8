package hub_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/registry/hub"
	hubv1alpha1 "github.com/clusterset/clusterset/pkg/registry/hub/api/v1alpha1"
	"github.com/clusterset/clusterset/pkg/registry/registrytest"
)

func TestMain(m *testing.M) {
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	os.Exit(m.Run())
}

// testHub is one real kube-apiserver acting as the hub, with admin access.
type testHub struct {
	t     *testing.T
	cfg   *rest.Config
	admin kubernetes.Interface
	// adminClient also reads and writes ClusterSetRecords.
	adminClient client.Client
}

// hubScheme knows the built-in types and the hub API.
var hubScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := hubv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

func startHub(t *testing.T) *testHub {
	t.Helper()
	c := testenv.Start(t)
	admin, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &testHub{t: t, cfg: c.Config, admin: admin, adminClient: newClient(t, c.Config)}
}

// newClient returns a controller-runtime client of the hub with cfg's
// credentials.
func newClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: hubScheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// member joins clusterID to clusterSetID the way a member would: a
// ServiceAccount in its hub namespace, bound by EnsureMember, and a token for
// it. It returns a rest.Config with only that member's credentials, whose
// requests go through o when o is not nil.
func (h *testHub) member(t *testing.T, clusterSetID, clusterID string, o *outage) *rest.Config {
	t.Helper()
	ctx := context.Background()
	ns := hub.NamespaceName(clusterSetID, clusterID)
	sa := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "member", Namespace: ns}
	if _, err := hub.EnsureMember(ctx, h.admin, clusterSetID, clusterID, sa); err != nil {
		t.Fatal(err)
	}
	_, err := h.admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.Name, Namespace: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tok, err := h.admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", clusterID, err)
	}
	cfg := rest.AnonymousClientConfig(h.cfg)
	cfg.BearerToken = tok.Status.Token
	cfg.QPS, cfg.Burst = 500, 1000
	if o != nil {
		cfg.Wrap(o.wrap)
	}
	return cfg
}

func (h *testHub) registry(t *testing.T, clusterSetID, clusterID string, o *outage) *hub.Registry {
	t.Helper()
	r, err := hub.New(hub.Options{ClusterSetID: clusterSetID, ClusterID: clusterID, Config: h.member(t, clusterSetID, clusterID, o),
		Holder: registrytest.HolderOf(clusterID)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var errHubDown = errors.New("test: hub unreachable")

// outage cuts every connection to the hub of the clients it wraps: new
// requests fail and open ones (watches) are cancelled.
type outage struct {
	mu      sync.Mutex
	down    bool
	next    int
	cancels map[int]context.CancelFunc
	gate    chan struct{} // non-nil while watches are held
}

func (o *outage) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		o.mu.Lock()
		if o.down {
			o.mu.Unlock()
			return nil, errHubDown
		}
		ctx, cancel := context.WithCancel(req.Context())
		if o.cancels == nil {
			o.cancels = map[int]context.CancelFunc{}
		}
		id := o.next
		o.next++
		o.cancels[id] = cancel
		o.mu.Unlock()
		done := func() {
			o.mu.Lock()
			delete(o.cancels, id)
			o.mu.Unlock()
			cancel()
		}
		resp, err := rt.RoundTrip(req.WithContext(ctx))
		if err != nil {
			done()
			return nil, err
		}
		resp.Body = &trackedBody{ReadCloser: resp.Body, done: done}
		if req.URL.Query().Get("watch") == "true" {
			resp.Body = &heldBody{ReadCloser: resp.Body, o: o}
		}
		return resp, nil
	})
}

// holdWatches stops the wrapped clients' watch streams from delivering
// events until release is called, so that an informer's cache lags behind
// the hub for as long as a test needs. Connections stay open. release may be
// called more than once.
func (o *outage) holdWatches() (release func()) {
	gate := make(chan struct{})
	o.mu.Lock()
	o.gate = gate
	o.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			o.mu.Lock()
			if o.gate == gate {
				o.gate = nil
			}
			o.mu.Unlock()
			close(gate)
		})
	}
}

// heldBody is a watch stream that holds back what it reads while its
// outage holds watches.
type heldBody struct {
	io.ReadCloser
	o *outage
}

func (b *heldBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	// The check comes after the read, which may have been waiting for data
	// since before the hold began.
	b.o.mu.Lock()
	gate := b.o.gate
	b.o.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return n, err
}

func (o *outage) set(down bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.down = down
	if down {
		for id, cancel := range o.cancels {
			cancel()
			delete(o.cancels, id)
		}
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type trackedBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// eventually polls cond every 50ms until it returns nil or 30s have passed.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
